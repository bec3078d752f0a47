"""``udpm explore``: serve the latent-space explorer page (:mod:`udpm.explore.app`)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from udpm.errors import UDPMError

EXTRA_HINT = "udpm explore needs the 'explore' extra: pip install 'udpm[explore]'"


def register(sub) -> None:
    text = "the latent space in a web page: sliders per level, swap, interpolate, live"
    p = sub.add_parser(
        "explore",
        help=text,
        description=text + ". Starts a local web server and prints its address; open it in a "
        "browser. The page shows samples by seed; click one to explore it: each level has "
        "sliders along its principal directions of variation (the perturbation PCA of "
        "'udpm perturb --pca'), a re-draw button and a swap button; a second image can be "
        "interpolated in (variance-preserving, as 'udpm interpolate'). The PNG and the latent "
        "(.latent.safetensors, as 'udpm sample --save-latents') can be downloaded, and a "
        "latent file uploaded to continue from it. Ctrl-C stops the server.",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="UDPM model file or run directory (default: the pretrained model shipped with udpm)",
    )
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 serves the "
        "whole network, without authentication)",
    )
    p.add_argument(
        "--sliders", type=int, default=4, help="principal directions per level (default 4)"
    )
    p.add_argument(
        "--max-upload-kb", type=int, default=1024, help="largest latent upload (default 1024 KiB)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: one small image gains little from more, and more "
        "threads on a busy machine make every slider step wait for the others)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.set_defaults(func=run)


def check_port_free(host: str, port: int) -> None:
    """Fail with one line now rather than with uvicorn's log after loading the model."""
    if not 1 <= port <= 65535:
        raise UDPMError(f"--port must be in 1..65535, got {port}")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UDPMError(f"--host {host} is not an address of this machine ({exc.strerror})")
    with socket.socket(info[0], socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(info[4])
        except OSError as exc:
            raise UDPMError(f"cannot listen on {host}:{port} ({exc.strerror}); try another --port")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args) -> int:
    try:
        import uvicorn

        from udpm.explore.app import create_app
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("uvicorn", "starlette", "anyio", "h11"):
            raise UDPMError(EXTRA_HINT)
        raise
    import udpm

    if args.sliders < 1:
        raise UDPMError(f"--sliders must be at least 1, got {args.sliders}")
    if args.threads < 1:
        raise UDPMError(f"--threads must be at least 1, got {args.threads}")
    check_port_free(args.host, args.port)
    import torch

    torch.set_num_threads(args.threads)
    model = udpm.load(args.checkpoint, device=args.device)
    hosts = [args.host, "localhost", "127.0.0.1", "[::1]"] if is_loopback(args.host) else None
    app = create_app(
        model,
        k=args.sliders,
        max_upload_bytes=args.max_upload_kb * 1024,
        allowed_hosts=hosts,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"udpm explore: serving on http://{shown}:{args.port}/ (Ctrl-C stops)", flush=True)
    if not is_loopback(args.host):
        print(
            "udpm explore: warning: reachable from the network, with no password", file=sys.stderr
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    print("udpm explore: stopped", flush=True)
    return 0
