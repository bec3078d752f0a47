"""The web app of ``udpm explore``: Starlette routes over :class:`~udpm.explore.api.ExploreAPI`.

Safe by default: uploads are size-limited and parsed as safetensors only, no path from the
page is ever opened, the ``Host`` header can be pinned (against DNS rebinding), and every
bad request gets a 4xx with a one-line JSON message (``{"error": ...}``), never a traceback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from udpm.errors import UDPMError
from udpm.explore.api import STATIC, ExploreAPI
from udpm.explore.pages import Pages, UnknownSession
from udpm.explore.session import DirectionCache
from udpm.latent import require_udpm

GET = ["GET", "HEAD"]
POST = ["POST"]


def create_app(
    model,
    k: int = 4,
    max_upload_bytes: int = 1 << 20,
    allowed_hosts: list[str] | None = None,
    max_sessions: int = 8,
) -> Starlette:
    """The explore app for a UDPM pipeline (serve it with ``uvicorn.run(app, ...)``).

    Args:
        model: a UDPM :class:`~udpm.pipeline.Pipeline` (``udpm.load(...)``).
        k: sliders per level (principal directions; at most the map's size).
        max_upload_bytes: uploads larger than this get 413.
        allowed_hosts: accepted ``Host`` headers (DNS-rebinding guard); ``None``: any.
        max_sessions: pages served at once; opening another closes the oldest.
    """
    require_udpm(model)
    pages = Pages(model, DirectionCache(model, k), max_sessions)
    api = ExploreAPI(model, pages, k, max_upload_bytes)
    routes = [
        Route("/", api.index, methods=GET),
        Route("/api/info", api.info, methods=GET),
        Route("/api/session", api.session, methods=POST),
        Route("/api/grid", api.grid, methods=GET),
        Route("/api/select", api.select, methods=POST),
        Route("/api/directions", api.directions, methods=POST),
        Route("/api/render", api.render, methods=POST),
        Route("/api/redraw", api.redraw, methods=POST),
        Route("/api/swap", api.swap, methods=POST),
        Route("/api/partner", api.partner, methods=POST),
        Route("/api/keep", api.keep, methods=POST),
        Route("/api/upload", api.upload, methods=POST),
        Route("/api/image.png", api.image_png, methods=GET),
        Route("/api/latent", api.latent, methods=GET),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            UnknownSession: lambda request, exc: error(404, str(exc)),
            UDPMError: lambda request, exc: error(400, str(exc)),
            HTTPException: lambda request, exc: error(exc.status_code, exc.detail),
            Exception: lambda request, exc: error(500, f"internal error ({type(exc).__name__})"),
        },
        lifespan=lambda app: closing(pages),
    )
    app.state.pages = pages
    return app


@asynccontextmanager
async def closing(pages: Pages):
    """Lifespan: stop every page's worker thread when the server stops."""
    try:
        yield
    finally:
        pages.close()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": str(message).splitlines()[0] if message else ""}, status)
