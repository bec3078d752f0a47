"""``udpm explore``: directions, coalescing, every endpoint, bad input, and the command."""

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import udpm
from udpm.cli import main
from udpm.commands.explore import EXTRA_HINT
from udpm.errors import UDPMError
from udpm.explore.directions import level_directions, move, with_map
from udpm.explore.frames import render
from udpm.explore.session import interpolation_delta
from udpm.explore.worker import SUPERSEDED, Worker
from udpm.latent import Latent, decode
from udpm.pipeline import Pipeline
from udpm.processes import UpsamplingProcess
from udpm.train.config import Config

pytest.importorskip("starlette", reason="the explore extra is not installed")
pytest.importorskip("httpx", reason="the Starlette test client needs httpx")
from starlette.testclient import TestClient  # noqa: E402

from udpm.explore.app import create_app  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pipe(network_type, num_classes=0, seed=0):
    """An untrained 32 px, 3-level pipeline around conftest's ShuffleNet (fast to decode)."""
    torch.manual_seed(seed)
    config = Config(resolution=32, method="udpm", class_conditional=bool(num_classes))
    meta = {"num_classes": num_classes}
    return Pipeline(network_type(), UpsamplingProcess(), config, meta)


@pytest.fixture(scope="module")
def pipe():
    from tests.conftest import ShuffleNet

    return tiny_pipe(ShuffleNet)


@pytest.fixture(scope="module")
def other_pipe():
    from tests.conftest import ShuffleNet

    return tiny_pipe(ShuffleNet, seed=1)


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, k=3, max_upload_bytes=64 * 1024)) as c:
        yield c


def commit(client, path, **body) -> dict:
    """An edit that makes a new base, then every level's sliders, as the page asks for them."""
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    for level in (3, 2, 1):
        ready = client.post("/api/directions", json={"session": body["session"], "level": level})
        assert ready.status_code == 200 and ready.json()["current"], ready.text
    return response.json()


@pytest.fixture
def sid(client):
    sid = client.post("/api/session").json()["session"]
    commit(client, "/api/select", session=sid, seed=5)
    return sid


def pixels(src: str) -> np.ndarray:
    """A data URL (or PNG bytes) as an int array (H, W, C)."""
    data = base64.b64decode(src.split(",", 1)[1]) if isinstance(src, str) else src
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def png_of(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def latent_of(client, sid, pipe) -> Latent:
    response = client.get(f"/api/latent?session={sid}")
    assert response.status_code == 200
    return upload_bytes_to_latent(response.content, pipe)


def upload_bytes_to_latent(data: bytes, pipe) -> Latent:
    from udpm.explore.session import parse_latent

    return parse_latent(pipe, data)


def post(client, path, **body):
    return client.post(path, json=body)


# ---------------------------------------------------------------- library: directions
def test_directions_are_orthonormal_and_moving_is_exact(pipe):
    lat = Latent.from_seed(pipe, 0)
    d = level_directions(pipe, lat, 2, k=3)
    flat = d.directions.flatten(1).double()
    assert torch.allclose(flat @ flat.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert torch.all(d.gains[:-1] >= d.gains[1:])
    moved = move(lat, [d], {2: [0.5, -1.0, 0.0]})
    shift = (moved.noises[1] - lat.noises[1]).flatten().double()
    assert torch.allclose(flat @ shift, torch.tensor([0.5, -1.0, 0.0]).double(), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(moved.noises[::2], lat.noises[::2]))
    assert move(lat, [d], {2: [0.0, 0.0, 0.0]}) is lat


def test_top_direction_moves_the_image_more_than_random_ones():
    """The first principal direction of the shipped model's coarse levels changes the image
    more than random unit directions do (what makes it a *principal* direction)."""
    model = udpm.load()
    lat = Latent.from_seed(model, 0)
    gen = torch.Generator().manual_seed(0)
    for level in (3, 2):
        d = level_directions(model, lat, level, k=1)
        e = lat.noises[level - 1]
        randoms = [torch.randn(e.shape, generator=gen) for _ in range(6)]
        steps = [d.directions[0]] + [r / r.norm() for r in randoms]
        images = decode(model, [lat] + [with_map(lat, level, e + 0.5 * u) for u in steps])
        change = (images[1:] - images[0]).flatten(1).norm(dim=1)
        assert change[0] > change[1:].median(), (level, change)


def test_level_directions_rejects_bad_arguments(pipe):
    lat = Latent.from_seed(pipe, 0)
    with pytest.raises(UDPMError, match="level must be in 1..3"):
        level_directions(pipe, lat, 4)
    with pytest.raises(UDPMError, match="number of directions"):
        level_directions(pipe, lat, 3, k=49)


def test_render_matches_sample_and_its_previews(pipe):
    frame = render(pipe, Latent.from_seed(pipe, 7))
    images, levels = pipe.sample(1, seed=7, return_levels=True)
    assert torch.equal(frame.image, images[0])
    assert frame.previews.shape == (3, 3, 32, 32)
    assert torch.equal(frame.previews[-1], images[0])


def test_interpolation_delta_ends_are_exact():
    assert interpolation_delta(0.0) == 1.0 and interpolation_delta(1.0) == 0.0
    assert interpolation_delta(0.5) == pytest.approx(2**-0.5)


# ---------------------------------------------------------------- library: the worker
def test_worker_coalesces_waiting_renders_but_never_drops_edits():
    ran, started, gate = [], threading.Event(), threading.Event()

    def slow():
        started.set()
        gate.wait(5)
        ran.append("slow")

    worker = Worker()
    try:
        first = worker.submit(slow, coalesce=True)
        assert started.wait(5)  # it runs; everything below waits behind it
        stale = [worker.submit(lambda i=i: ran.append(i) or i, coalesce=True) for i in range(5)]
        edit = worker.submit(lambda: ran.append("edit") or "edit")
        last = worker.submit(lambda: ran.append("last") or "last", coalesce=True)
        gate.set()
        assert last.result(5) == "last" and edit.result(5) == "edit"
        first.result(5)
        assert [f.result(5) for f in stale[:-1]] == [SUPERSEDED] * 4
        assert stale[-1].result(5) == 4
        assert ran == ["slow", 4, "edit", "last"]
    finally:
        worker.close()


def test_worker_hands_errors_to_the_caller():
    worker = Worker()
    try:
        with pytest.raises(ZeroDivisionError):
            worker.submit(lambda: 1 / 0).result(5)
        assert worker.submit(lambda: 2).result(5) == 2
    finally:
        worker.close()


# ---------------------------------------------------------------- server: pages and grid
def test_page_and_assets_are_served_with_no_outside_url(client):
    page = client.get("/")
    assert page.status_code == 200 and "udpm explore" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text
    assert "http" not in page.text.replace("http-equiv", "")


def test_info_describes_the_model(client):
    info = client.get("/api/info").json()
    assert info["levels"] == 3 and info["image_shape"] == [3, 32, 32]
    assert info["sliders_per_level"] == 3 and info["slider_limit"] > 0


def test_grid_images_are_the_seeds_samples(client, pipe):
    data = client.get("/api/grid?start=10&n=4").json()
    assert [im["seed"] for im in data["images"]] == [10, 11, 12, 13]
    expected = pipe.sample(4, seed=10)
    for im, x in zip(data["images"], expected):
        assert np.array_equal(pixels(im["src"]), png_of(x))


@pytest.mark.parametrize(
    "query, message",
    [
        ("start=-1", "seed must be"),
        ("n=0", "n must be in"),
        ("n=abc", "n must be an integer"),
        ("class=1", "unconditional"),
    ],
)
def test_grid_rejects_bad_queries(client, query, message):
    response = client.get(f"/api/grid?{query}")
    assert response.status_code == 400 and message in response.json()["error"]


# ---------------------------------------------------------------- server: exploring
def test_select_shows_the_seed_then_its_sliders_level_by_level(client, sid, pipe):
    data = post(client, "/api/select", session=sid, seed=9).json()
    assert np.array_equal(pixels(data["image"]), png_of(pipe.sample(1, seed=9)[0]))
    assert [p["level"] for p in data["previews"]] == [3, 2, 1]
    assert data["seed"] == 9 and data["levels"] == []
    early = post(client, "/api/render", session=sid, sliders={"2": [1.0, 0, 0]})
    assert early.status_code == 400 and "not ready" in early.json()["error"]
    ready = post(client, "/api/directions", session=sid, level=2).json()
    assert ready["current"] and ready["version"] == data["version"] and len(ready["gains"]) == 3
    assert ready["gains"] == sorted(ready["gains"], reverse=True)
    assert post(client, "/api/render", session=sid, sliders={"2": [1.0, 0, 0]}).status_code == 200
    bad = post(client, "/api/directions", session=sid, level=5)
    assert bad.status_code == 400 and "level must be" in bad.json()["error"]


def test_late_directions_for_an_old_base_are_dropped(pipe):
    from udpm.explore.session import DirectionCache, Explorer

    explorer = Explorer(pipe, DirectionCache(pipe, k=2))
    explorer.select(1)
    version, base = explorer.snapshot()
    found = explorer.cache.get(base, 3)
    explorer.select(2)
    assert not explorer.install(version, found) and explorer.directions == {}
    version, base = explorer.snapshot()
    assert explorer.install(version, explorer.cache.get(base, 3))
    assert torch.equal(
        explorer.directions[3].directions, level_directions(pipe, base, 3, 2).directions
    )


def test_slider_zero_reproduces_the_image_exactly(client, sid):
    original = commit(client, "/api/select", session=sid, seed=5)["image"]
    moved = post(client, "/api/render", session=sid, sliders={"3": [1.5, 0, 0]}).json()
    assert moved["image"] != original
    back = post(client, "/api/render", session=sid, sliders={"3": [0, 0, 0]}).json()
    assert back["image"] == original


def test_slider_moves_the_latent_along_its_direction(client, sid, pipe):
    base = latent_of(client, sid, pipe)
    post(client, "/api/render", session=sid, sliders={"2": [0, 1.25, 0]})
    moved = latent_of(client, sid, pipe)
    shift = (moved.noises[1] - base.noises[1]).norm()
    assert float(shift) == pytest.approx(1.25, rel=1e-4)
    assert torch.equal(moved.noises[0], base.noises[0])
    assert torch.equal(moved.noises[2], base.noises[2])


@pytest.mark.parametrize(
    "sliders, message",
    [
        ({"3": [3.5, 0, 0]}, "in [-3.0, 3.0]"),
        ({"3": [1, 0]}, "takes 3 slider values"),
        ({"4": [0, 0, 0]}, "level must be"),
        ({"3": ["a", 0, 0]}, "must be numbers"),
        ([1, 2], "must be an object"),
    ],
)
def test_render_rejects_bad_sliders_and_keeps_the_state(client, sid, sliders, message):
    before = post(client, "/api/render", session=sid, sliders={"3": [0.5, 0, 0]}).json()["image"]
    response = post(client, "/api/render", session=sid, sliders=sliders)
    assert response.status_code == 400 and message in response.json()["error"]
    assert post(client, "/api/render", session=sid).json()["image"] == before


def test_redraw_replaces_only_that_level(client, sid, pipe):
    base = latent_of(client, sid, pipe)
    data = post(client, "/api/redraw", session=sid, level=2).json()
    new = latent_of(client, sid, pipe)
    assert not torch.equal(new.noises[1], base.noises[1])
    assert torch.equal(new.noises[0], base.noises[0]) and torch.equal(new.noises[2], base.noises[2])
    assert data["seed"] is None and data["sliders"] == {}


def test_swap_takes_the_other_images_map(client, sid, pipe):
    base = latent_of(client, sid, pipe)
    post(client, "/api/swap", session=sid, level=3, seed=11)
    new = latent_of(client, sid, pipe)
    other = Latent.from_seed(pipe, 11)
    assert torch.equal(new.noises[2], other.noises[2])
    assert torch.equal(new.noises[0], base.noises[0]) and torch.equal(new.noises[1], base.noises[1])


def test_interpolation_ends_are_the_two_images(client, sid, pipe):
    a = post(client, "/api/select", session=sid, seed=5).json()["image"]
    assert post(client, "/api/partner", session=sid, seed=6).json()["image"] == a
    end = post(client, "/api/render", session=sid, mix=1.0).json()["image"]
    assert np.array_equal(pixels(end), png_of(pipe.sample(1, seed=6)[0]))
    middle = latent_of_after(client, sid, pipe, mix=0.5)
    delta = 2**-0.5
    expected = (
        delta * Latent.from_seed(pipe, 5).noises[0] + delta * Latent.from_seed(pipe, 6).noises[0]
    )
    assert torch.allclose(middle.noises[0], expected, atol=1e-6)
    response = post(client, "/api/render", session=sid, mix=1.5)
    assert response.status_code == 400 and "[0, 1]" in response.json()["error"]


def latent_of_after(client, sid, pipe, **body):
    assert post(client, "/api/render", session=sid, **body).status_code == 200
    return latent_of(client, sid, pipe)


def test_keep_makes_the_shown_image_the_base(client, sid, pipe):
    moved = post(client, "/api/render", session=sid, sliders={"1": [2.0, 0, 0]}).json()["image"]
    kept = post(client, "/api/keep", session=sid).json()
    assert kept["image"] == moved and kept["sliders"] == {} and kept["seed"] is None


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/redraw", {"level": 0}, "level must be"),
        ("/api/swap", {"level": 1, "seed": -3}, "seed must"),
        ("/api/swap", {"level": "1", "seed": 3}, "level must"),
        ("/api/select", {"seed": 1.5}, "seed must"),
        ("/api/partner", {"seed": "x"}, "seed must"),
        ("/api/select", {"seed": 1, "class": 2}, "unconditional"),
    ],
)
def test_edits_reject_bad_input(client, sid, path, body, message):
    response = client.post(path, json={"session": sid, **body})
    assert response.status_code == 400 and message in response.json()["error"]


def test_requests_need_a_session_and_json(client):
    assert client.post("/api/render", json={"session": "nope"}).status_code == 404
    assert client.get("/api/image.png?session=nope").status_code == 404
    response = client.post("/api/select", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    fresh = client.post("/api/session").json()["session"]
    response = post(client, "/api/render", session=fresh)
    assert response.status_code == 400 and "no image chosen" in response.json()["error"]
    assert client.get(f"/api/latent?session={fresh}").status_code == 400
    assert client.get("/api/select").status_code == 405


# ---------------------------------------------------------------- server: files
def test_png_download_is_the_image_shown(client, sid):
    shown = post(client, "/api/render", session=sid, sliders={"3": [1.0, 0.5, 0]}).json()["image"]
    response = client.get(f"/api/image.png?session={sid}")
    assert response.headers["content-type"] == "image/png"
    assert "attachment" in response.headers["content-disposition"]
    assert np.array_equal(pixels(response.content), pixels(shown))


def test_latent_download_is_the_sample_format_and_uploads_back(client, sid, pipe, tmp_path):
    shown = post(client, "/api/render", session=sid, sliders={"2": [0, 0, 2.0]}).json()["image"]
    data = client.get(f"/api/latent?session={sid}").content
    path = tmp_path / "x.latent.safetensors"
    path.write_bytes(data)
    latent = Latent.load(path, pipe)  # the format `udpm sample --save-latents` writes
    assert np.array_equal(png_of(decode(pipe, [latent])[0]), pixels(shown))
    other = client.post("/api/session").json()["session"]
    uploaded = client.post(f"/api/upload?session={other}", content=data)
    assert uploaded.status_code == 200 and uploaded.json()["image"] == shown


def test_uploads_are_checked(client, sid, pipe, other_pipe, tmp_path):
    def upload(data):
        return client.post(f"/api/upload?session={sid}", content=data)

    before = post(client, "/api/render", session=sid).json()["image"]
    wrong_shape = Latent([torch.zeros(3, 8, 8), torch.zeros(3, 4, 4), torch.zeros(3, 2, 2)])
    foreign = Latent.from_seed(other_pipe, 0)
    not_latent = tmp_path / "t.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(not_latent))
    cases = [
        (wrong_shape.save(tmp_path / "a.latent.safetensors").read_bytes(), 400, "has shape"),
        (foreign.save(tmp_path / "b.latent.safetensors").read_bytes(), 400, "another checkpoint"),
        (not_latent.read_bytes(), 400, "not a udpm latent"),
        (b"\x00" * 100, 400, "not a readable safetensors"),
        (b"", 400, "empty upload"),
        (b"\x00" * (64 * 1024 + 1), 413, "too large"),
    ]
    for data, status, message in cases:
        response = upload(data)
        assert response.status_code == status and message in response.json()["error"], message
        assert "/tmp" not in response.json()["error"]
    assert post(client, "/api/render", session=sid).json()["image"] == before


# ---------------------------------------------------------------- server: concurrency, errors
def test_fast_slider_requests_are_coalesced(client, sid, monkeypatch):
    """Twenty renders sent at once: all answered, most superseded, none queued stale."""
    from udpm.explore import session as session_mod

    real, calls = session_mod.render, []

    def slow_render(model, latent):
        calls.append(1)
        time.sleep(0.2)  # far longer than it takes to send the others, even on a busy machine
        return real(model, latent)

    monkeypatch.setattr(session_mod, "render", slow_render)
    values = [round(-1 + 0.1 * i, 2) for i in range(20)]

    def send(t):
        return post(client, "/api/render", session=sid, sliders={"3": [t, 0, 0]})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(send, values))
    assert all(r.status_code == 200 for r in responses)
    superseded = sum(r.json().get("superseded", False) for r in responses)
    assert superseded >= 10 and len(calls) == 20 - superseded


def test_internal_errors_are_json_without_traceback(pipe, monkeypatch):
    from udpm.explore import session as session_mod

    def broken(model, latent):
        raise RuntimeError("boom\nTraceback (most recent call last)")

    with TestClient(create_app(pipe), raise_server_exceptions=False) as c:
        sid = c.post("/api/session").json()["session"]
        monkeypatch.setattr(session_mod, "render", broken)
        response = c.post("/api/select", json={"session": sid, "seed": 1})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError)"}


def test_other_hosts_are_refused_when_guarded(pipe):
    with TestClient(
        create_app(pipe, allowed_hosts=["127.0.0.1"]), base_url="http://evil.example"
    ) as c:
        assert c.get("/api/info").status_code == 400


def test_class_conditional_models_take_a_class(client):
    from tests.conftest import ShuffleNet

    conditional = tiny_pipe(ShuffleNet, num_classes=3)
    with TestClient(create_app(conditional, k=2)) as c:
        sid = c.post("/api/session").json()["session"]
        data = c.post("/api/select", json={"session": sid, "seed": 2, "class": 1}).json()
        assert data["class"] == 1
        assert c.get("/api/grid?n=2&class=1").status_code == 200
        response = c.post("/api/select", json={"session": sid, "seed": 2, "class": 3})
        assert response.status_code == 400 and "class must be in 0..2" in response.json()["error"]


def test_non_udpm_models_are_refused():
    # A stand-in: only what the latent tools look at to tell a model without level maps.
    ddpm = SimpleNamespace(config=SimpleNamespace(method="ddpm"), meta={})
    ddpm.spec = SimpleNamespace(has_levels=False)
    with pytest.raises(UDPMError, match="need a UDPM checkpoint"):
        create_app(ddpm)


# ---------------------------------------------------------------- the command
def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--checkpoint", "--port", "--host", "127.0.0.1", "Ctrl-C"):
        assert option in text


def test_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["explore"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "udpm explore: error: " + EXTRA_HINT
    assert "pip install 'udpm[explore]'" in err


def test_busy_port_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["explore", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_the_shipped_model_and_stops_on_ctrl_c():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "udpm.cli", "explore", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert f"serving on http://127.0.0.1:{port}/" in line, proc.stderr.read()
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_oldest_page_is_closed_beyond_the_limit(pipe):
    with TestClient(create_app(pipe, max_sessions=2)) as c:
        first, second, third = (c.post("/api/session").json()["session"] for _ in range(3))
        assert c.post("/api/select", json={"session": first, "seed": 1}).status_code == 404
        for sid in (second, third):
            assert c.post("/api/select", json={"session": sid, "seed": 1}).status_code == 200


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert main(["explore", "--checkpoint", str(missing), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("udpm explore: error:") and "nope" in err[0]
