"""The HTTP endpoints of ``udpm explore``: parse a request, run it on the page's worker,
answer JSON. No sampling happens here; :class:`~udpm.explore.session.Explorer` does it."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from udpm.errors import UDPMError
from udpm.explore.frames import Frame, data_url, grid, png_bytes
from udpm.explore.pages import Pages
from udpm.explore.session import SLIDER_LIMIT, Explorer, check_seed
from udpm.explore.worker import SUPERSEDED

STATIC = Path(__file__).parent / "static"
MAX_GRID = 64
# The page may load only what this server sends: no CDN, and inline images as data: URLs.
CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'"


class ExploreAPI:
    """One method per endpoint (``async def NAME(request)``), over the open :class:`Pages`."""

    def __init__(self, model, pages: Pages, k: int, max_upload_bytes: int):
        self.model, self.pages, self.k, self.max_upload_bytes = model, pages, k, max_upload_bytes

    async def run(self, sid, method: str, *args, coalesce: bool = False, full: bool = True):
        """``Explorer.method(*args)`` on the page's worker; a frame as JSON."""
        explorer, worker = self.pages.get(sid)
        future = worker.submit(lambda: getattr(explorer, method)(*args), coalesce=coalesce)
        frame = await asyncio.wrap_future(future)
        if frame is SUPERSEDED:
            return JSONResponse({"superseded": True})
        return JSONResponse(frame_json(frame, explorer, full))

    # -- the page and what it needs first ----------------------------------------------
    async def index(self, request):
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        return FileResponse(STATIC / "index.html", headers=headers)

    async def info(self, request):
        model = self.model
        return JSONResponse(
            {
                "levels": model.process.levels,
                "classes": model.num_classes,
                "class_names": model.meta.get("class_names"),
                "image_shape": list(model.image_shape),
                "slider_limit": SLIDER_LIMIT,
                "sliders_per_level": self.k,
                "max_upload_bytes": self.max_upload_bytes,
                "max_grid": MAX_GRID,
                "step": model.meta.get("step"),
            }
        )

    async def session(self, request):
        return JSONResponse({"session": self.pages.open()})

    async def grid(self, request):
        q = request.query_params
        start, n = check_seed(int_param(q, "start", 0)), int_param(q, "n", 16)
        if not 1 <= n <= MAX_GRID:
            raise UDPMError(f"n must be in 1..{MAX_GRID}, got {n}")
        check_seed(start + n - 1)
        label = optional_class({"class": int_param(q, "class", None)}, self.model)
        images = await run_in_threadpool(grid, self.model, start, n, label)
        thumbs = [{"seed": start + i, "src": data_url(x)} for i, x in enumerate(images)]
        return JSONResponse({"start": start, "images": thumbs})

    # -- edits, run on the page's worker -----------------------------------------------
    async def select(self, request):
        body = await json_body(request)
        label = optional_class(body, self.model)
        return await self.run(body.get("session"), "select", body.get("seed"), label)

    async def render(self, request):
        body = await json_body(request)
        args = (body.get("sliders"), body.get("mix"))
        return await self.run(body.get("session"), "render", *args, coalesce=True, full=False)

    async def redraw(self, request):
        body = await json_body(request)
        return await self.run(body.get("session"), "redraw", body.get("level"))

    async def swap(self, request):
        body = await json_body(request)
        args = (body.get("level"), body.get("seed"), optional_class(body, self.model))
        return await self.run(body.get("session"), "swap", *args)

    async def partner(self, request):
        body = await json_body(request)
        args = (body.get("seed"), optional_class(body, self.model))
        return await self.run(body.get("session"), "set_partner", *args)

    async def keep(self, request):
        body = await json_body(request)
        return await self.run(body.get("session"), "keep")

    async def directions(self, request):
        """One level's sliders for the page's base. They take seconds for the fine levels,
        so they are computed off the worker, and renders go on meanwhile."""
        body = await json_body(request)
        explorer, worker = self.pages.get(body.get("session"))
        level = explorer.check_level(body.get("level"))
        version, base = await asyncio.wrap_future(worker.submit(explorer.snapshot))
        found = await run_in_threadpool(self.pages.cache.get, base, level)
        current = await asyncio.wrap_future(worker.submit(lambda: explorer.install(version, found)))
        return JSONResponse({**directions_json(found), "version": version, "current": current})

    # -- files -------------------------------------------------------------------------
    async def upload(self, request):
        sid = request.query_params.get("session")
        self.pages.get(sid)
        data = await read_limited(request, self.max_upload_bytes)
        return await self.run(sid, "upload", data)

    async def image_png(self, request):
        frame = self.shown(request)
        headers = {"Content-Disposition": f'attachment; filename="{file_stem(frame)}.png"'}
        return Response(png_bytes(frame.image), media_type="image/png", headers=headers)

    async def latent(self, request):
        frame = self.shown(request)
        data = await run_in_threadpool(latent_bytes, frame)
        name = f"{file_stem(frame)}.latent.safetensors"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/octet-stream", headers=headers)

    def shown(self, request) -> Frame:
        explorer, _ = self.pages.get(request.query_params.get("session"))
        if explorer.frame is None:
            raise UDPMError("no image chosen yet: select a seed or upload a latent first")
        return explorer.frame


def directions_json(d) -> dict:
    return {"level": d.level, "gains": [round(float(g), 4) for g in d.gains]}


def frame_json(frame: Frame, explorer: Explorer, full: bool) -> dict:
    """The image and previews; with ``full``, also the base's sliders and provenance."""
    L = len(frame.previews)
    out = {
        "image": data_url(frame.image),
        "previews": [{"level": L - i, "src": data_url(p)} for i, p in enumerate(frame.previews)],
        "sliders": {str(l): v for l, v in explorer.values.items()},
        "mix": explorer.mix,
    }
    if full:
        base = explorer.base
        out |= {
            "version": explorer.version,
            "levels": [directions_json(d) for d in explorer.directions.values()],
            "seed": base.seed,
            "class": base.class_label,
            "partner": None if explorer.partner is None else explorer.partner.seed,
        }
    return out


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UDPMError("the request body is not valid JSON")
    if not isinstance(body, dict):
        raise UDPMError("the request body must be a JSON object")
    return body


def optional_class(body: dict, model) -> int | None:
    label = body.get("class")
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, int):
        raise UDPMError(f"class must be an integer, got {label!r}")
    model.class_labels(1, label, 0)  # raises the pipeline's own message when out of range
    return label


def int_param(query, name: str, default):
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UDPMError(f"{name} must be an integer, got {raw!r}")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload too large: {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload too large: over {limit} bytes")
        chunks.append(chunk)
    if not size:
        raise UDPMError("empty upload: send the bytes of a .latent.safetensors file")
    return b"".join(chunks)


def file_stem(frame: Frame) -> str:
    seed = frame.latent.seed
    return f"udpm-seed{seed}" if seed is not None else "udpm-explore"


def latent_bytes(frame: Frame) -> bytes:
    """The shown latent in the ``udpm sample --save-latents`` format, as file bytes."""
    fd, path = tempfile.mkstemp(suffix=".latent.safetensors")
    os.close(fd)
    try:
        frame.latent.save(path)
        return Path(path).read_bytes()
    finally:
        os.unlink(path)
