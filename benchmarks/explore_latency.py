"""Latency of ``udpm explore``: from a slider event to the new image, over real HTTP.

Serves the shipped model with uvicorn in this process and drives it like the page does:

* ``sequential``: one render request at a time (request sent -> image decoded), the cost
  of one slider step when nothing else is waiting;
* ``drag``: slider events every 1000/60 ms (a 60 Hz pointer) for a few seconds, coalesced
  as in ``static/app.js`` (one request in flight; when it returns, one more with the newest
  value if the slider moved). The latency of an event is the time until an image that
  includes it is decoded; this is what a user sees while dragging;
* ``burst``: 32 renders sent at once without waiting, to count how many the server
  coalesces (answers ``superseded`` without rendering).

    python benchmarks/explore_latency.py [--threads 1] [--seconds 5] [--out OUT]

Writes OUT.json and OUT.md (default ``benchmarks/explore_latency``). It also times a
click on a sample: the image, then each level's sliders (the principal directions).
Target: p95 under 100 ms for the shipped model on this CPU.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

import udpm
from udpm.explore.app import create_app

TARGET_P95_MS = 100.0


def serve(app) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def decode_image(data: dict) -> None:
    """What the browser does with a reply: decode the PNG."""
    Image.open(io.BytesIO(base64.b64decode(data["image"].split(",", 1)[1]))).load()


def render(client, sid, level, t, k) -> dict:
    values = [t] + [0.0] * (k - 1)
    response = client.post("/api/render", json={"session": sid, "sliders": {str(level): values}})
    response.raise_for_status()
    return response.json()


def sequential(client, sid, k, n=200) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        decode_image(render(client, sid, 1 + i % 3, 3.0 * np.sin(i / 7), k))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def drag(client, sid, k, seconds: float, hz: float = 60.0) -> tuple[list[float], int]:
    """Events at ``hz``; a sender thread coalesces them like the page. Returns the
    per-event latencies and the number of requests sent."""
    lock, wake = threading.Lock(), threading.Event()
    pending: list[tuple[float, float]] = []  # (event time, value) not yet sent
    latencies, sent, done = [], [0], threading.Event()

    def sender():
        while not (done.is_set() and not pending):
            wake.wait(0.05)
            with lock:
                batch, pending[:] = list(pending), []
                wake.clear()
            if not batch:
                continue
            decode_image(render(client, sid, 3, batch[-1][1], k))
            now = time.perf_counter()
            latencies.extend((now - t_event) * 1000 for t_event, _ in batch)
            sent[0] += 1

    thread = threading.Thread(target=sender)
    thread.start()
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        with lock:
            pending.append((time.perf_counter(), 2.5 * np.sin(i / 20)))
        wake.set()
        i += 1
        time.sleep(max(0.0, start + i / hz - time.perf_counter()))
    done.set()
    wake.set()
    thread.join()
    return latencies, sent[0]


def burst(base_url, sid, k, n=32) -> int:
    with httpx.Client(base_url=base_url, timeout=60) as c, ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(lambda i: render(c, sid, 3, -2.0 + 4.0 * i / n, k), range(n)))
    return sum(bool(r.get("superseded")) for r in replies)


def time_click(client, sid, levels: int) -> dict:
    """Seconds from clicking a sample to its image, and to each level's sliders."""
    t0 = time.perf_counter()
    client.post("/api/select", json={"session": sid, "seed": 1}).raise_for_status()
    image_s, ready = time.perf_counter() - t0, []
    for level in range(levels, 0, -1):
        body = {"session": sid, "level": level}
        client.post("/api/directions", json=body).raise_for_status()
        ready.append(round(time.perf_counter() - t0, 2))
    return {"image_s": round(image_s, 3), "sliders_ready_s": ready}


def render_only(model, n=100) -> list[float]:
    from udpm.explore import render as render_frame
    from udpm.latent import Latent

    latent, out = Latent.from_seed(model, 1), []
    for _ in range(n):
        t0 = time.perf_counter()
        render_frame(model, latent)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def stats(ms: list[float]) -> dict:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": len(ms),
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the drag")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/explore_latency"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = udpm.load()
    k = 4
    load_before = os.getloadavg()[0]
    server, base_url = serve(create_app(model, k=k))
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            sid = client.post("/api/session").json()["session"]
            click = time_click(client, sid, model.process.levels)
            sequential(client, sid, k, n=20)  # warm-up
            seq = sequential(client, sid, k)
            drag_ms, requests = drag(client, sid, k, args.seconds)
        superseded = burst(base_url, sid, k)
    finally:
        server.should_exit = True
    result = {
        "model": "shipped emoji32 UDPM (udpm.load())",
        "torch_threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "click": click,
        "render_only": stats(render_only(model)),
        "sequential": stats(seq),
        "drag_60hz": {**stats(drag_ms), "events": len(drag_ms), "requests": requests},
        "burst": {"sent": 32, "superseded": superseded},
        "target_p95_ms": TARGET_P95_MS,
        # other work on the machine slows every number above; this says how much there was
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=2))


def markdown(r: dict) -> str:
    rows = [
        ("one render at a time", r["sequential"]),
        ("60 Hz drag, coalesced (event to image)", r["drag_60hz"]),
    ]
    lines = [
        "# `udpm explore` latency",
        "",
        f"Shipped model, {r['torch_threads']} torch thread(s), "
        f"`python benchmarks/explore_latency.py`. Target: p95 under {r['target_p95_ms']:.0f} ms. "
        f"Decoding alone (`udpm.explore.render`, in process): p50 {r['render_only']['p50_ms']} ms, "
        f"p95 {r['render_only']['p95_ms']} ms; the rest is HTTP, JSON and PNG encoding.",
        "",
        "| what | n | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        for name, s in rows
    ]
    d, b = r["drag_60hz"], r["burst"]
    lines += [
        "",
        f"The drag sent {d['requests']} requests for {d['events']} events; of {b['sent']} renders "
        f"sent at once, the server answered {b['superseded']} as superseded without rendering. "
        f"Clicking a sample showed its image in {r['click']['image_s']} s; the sliders of "
        f"levels 3, 2, 1 were ready after "
        f"{', '.join(map(str, r['click']['sliders_ready_s']))} s. Load average (1 min) before "
        f"and after: {r['load_average_1min'][0]}, {r['load_average_1min'][1]} "
        f"on {r['cpu_count']} CPUs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
