"""The web layer of ``udpm explore``: a Starlette app over :class:`~udpm.explore.session.Explorer`.

It parses requests, hands each page's work to that page's :class:`~udpm.explore.worker.Worker`
and turns results into JSON; no sampling happens here. Safe by default: uploads are
size-limited and parsed as safetensors only, no path from the page is ever opened, and any
bad request gets a 4xx with a one-line JSON message (``{"error": ...}``), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from udpm.errors import UDPMError
from udpm.explore.frames import Frame, data_url, grid, png_bytes
from udpm.explore.session import SLIDER_LIMIT, DirectionCache, Explorer, check_seed
from udpm.explore.worker import SUPERSEDED, Worker
from udpm.latent import require_udpm

STATIC = Path(__file__).parent / "static"
MAX_GRID = 64
# The page may load only what this server sends: no CDN, and inline images as data: URLs.
CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'"


class Sessions:
    """The open pages: an :class:`Explorer` and a :class:`Worker` each, the oldest closed
    beyond ``limit`` so that a forgotten tab cannot hold resources for ever."""

    def __init__(self, model, cache: DirectionCache, limit: int = 8):
        self.model, self.cache, self.limit = model, cache, limit
        self._open: OrderedDict[str, tuple[Explorer, Worker]] = OrderedDict()
        self._lock = threading.Lock()

    def open(self) -> str:
        sid = secrets.token_urlsafe(12)
        with self._lock:
            self._open[sid] = (Explorer(self.model, self.cache), Worker(f"udpm-explore-{sid}"))
            stale = []
            while len(self._open) > self.limit:
                stale.append(self._open.popitem(last=False)[1][1])
        for worker in stale:
            worker.close(timeout=0)
        return sid

    def get(self, sid) -> tuple[Explorer, Worker]:
        with self._lock:
            if not isinstance(sid, str) or sid not in self._open:
                raise HTTPException(404, "unknown or expired session: reload the page")
            self._open.move_to_end(sid)
            return self._open[sid]

    def close(self) -> None:
        with self._lock:
            workers = [w for _, w in self._open.values()]
            self._open.clear()
        for worker in workers:
            worker.close()


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


def create_app(
    model,
    k: int = 4,
    max_upload_bytes: int = 1 << 20,
    allowed_hosts: list[str] | None = None,
    max_sessions: int = 8,
) -> Starlette:
    """The explore app for a UDPM pipeline.

    Args:
        model: a UDPM :class:`~udpm.pipeline.Pipeline` (``udpm.load(...)``).
        k: sliders per level (principal directions; at most the map's size).
        max_upload_bytes: uploads larger than this get 413.
        allowed_hosts: accepted ``Host`` headers (DNS-rebinding guard); ``None``: any.
        max_sessions: pages served at once; opening another closes the oldest.
    """
    require_udpm(model)
    sessions = Sessions(model, DirectionCache(model, k), max_sessions)

    async def run(sid, method: str, *args, coalesce: bool = False, full: bool = True):
        explorer, worker = sessions.get(sid)
        future = worker.submit(lambda: getattr(explorer, method)(*args), coalesce=coalesce)
        frame = await asyncio.wrap_future(future)
        if frame is SUPERSEDED:
            return JSONResponse({"superseded": True})
        return JSONResponse(frame_json(frame, explorer, full))

    async def index(request):
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        return FileResponse(STATIC / "index.html", headers=headers)

    async def info(request):
        return JSONResponse(
            {
                "levels": model.process.levels,
                "classes": model.num_classes,
                "class_names": model.meta.get("class_names"),
                "image_shape": list(model.image_shape),
                "slider_limit": SLIDER_LIMIT,
                "sliders_per_level": k,
                "max_upload_bytes": max_upload_bytes,
                "max_grid": MAX_GRID,
                "step": model.meta.get("step"),
            }
        )

    async def new_session(request):
        return JSONResponse({"session": sessions.open()})

    async def grid_images(request):
        q = request.query_params
        start, n = check_seed(int_param(q, "start", 0)), int_param(q, "n", 16)
        if not 1 <= n <= MAX_GRID:
            raise UDPMError(f"n must be in 1..{MAX_GRID}, got {n}")
        check_seed(start + n - 1)
        label = optional_class({"class": int_param(q, "class", None)}, model)
        images = await run_in_threadpool(grid, model, start, n, label)
        return JSONResponse(
            {
                "start": start,
                "images": [{"seed": start + i, "src": data_url(x)} for i, x in enumerate(images)],
            }
        )

    async def select(request):
        body = await json_body(request)
        return await run(
            body.get("session"), "select", body.get("seed"), optional_class(body, model)
        )

    async def render(request):
        body = await json_body(request)
        args = (body.get("sliders"), body.get("mix"))
        return await run(body.get("session"), "render", *args, coalesce=True, full=False)

    async def redraw(request):
        body = await json_body(request)
        return await run(body.get("session"), "redraw", body.get("level"))

    async def swap(request):
        body = await json_body(request)
        args = (body.get("level"), body.get("seed"), optional_class(body, model))
        return await run(body.get("session"), "swap", *args)

    async def partner(request):
        body = await json_body(request)
        args = (body.get("seed"), optional_class(body, model))
        return await run(body.get("session"), "set_partner", *args)

    async def directions(request):
        """Compute one level's sliders for the session's base (seconds for fine levels),
        in a thread of their own so that renders go on meanwhile."""
        body = await json_body(request)
        explorer, worker = sessions.get(body.get("session"))
        level = explorer.check_level(body.get("level"))
        version, base = await asyncio.wrap_future(worker.submit(explorer.snapshot))
        found = await run_in_threadpool(sessions.cache.get, base, level)
        installed = worker.submit(lambda: explorer.install(version, found))
        current = await asyncio.wrap_future(installed)
        return JSONResponse({**directions_json(found), "version": version, "current": current})

    async def keep(request):
        body = await json_body(request)
        return await run(body.get("session"), "keep")

    async def upload(request):
        sid = request.query_params.get("session")
        sessions.get(sid)
        data = await read_limited(request, max_upload_bytes)
        return await run(sid, "upload", data)

    async def download_png(request):
        frame = shown(request)
        headers = {"Content-Disposition": f'attachment; filename="{file_stem(frame)}.png"'}
        return Response(png_bytes(frame.image), media_type="image/png", headers=headers)

    async def download_latent(request):
        frame = shown(request)
        data = await run_in_threadpool(latent_bytes, frame)
        name = f"{file_stem(frame)}.latent.safetensors"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/octet-stream", headers=headers)

    def shown(request) -> Frame:
        explorer, _ = sessions.get(request.query_params.get("session"))
        if explorer.frame is None:
            raise UDPMError("no image chosen yet: select a seed or upload a latent first")
        return explorer.frame

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/session", new_session, methods=["POST"]),
        Route("/api/grid", grid_images),
        Route("/api/select", select, methods=["POST"]),
        Route("/api/render", render, methods=["POST"]),
        Route("/api/redraw", redraw, methods=["POST"]),
        Route("/api/swap", swap, methods=["POST"]),
        Route("/api/partner", partner, methods=["POST"]),
        Route("/api/keep", keep, methods=["POST"]),
        Route("/api/directions", directions, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/image.png", download_png),
        Route("/api/latent", download_latent),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            UDPMError: lambda request, exc: error(400, str(exc)),
            HTTPException: lambda request, exc: error(exc.status_code, exc.detail),
            Exception: lambda request, exc: error(500, f"internal error ({type(exc).__name__})"),
        },
        lifespan=lambda app: closing(sessions),
    )
    app.state.sessions = sessions
    return app


@asynccontextmanager
async def closing(sessions: Sessions):
    """Lifespan: stop every page's worker thread when the server stops."""
    try:
        yield
    finally:
        sessions.close()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": str(message).splitlines()[0] if message else ""}, status)


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
