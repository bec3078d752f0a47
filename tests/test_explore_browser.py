"""``udpm explore`` in a real browser: headless Debian Chromium driven by Selenium.

Opens the page on the shipped model, clicks a sample, drags a level-3 slider and checks the
image changed, drags a level-1 slider the same distance and checks it changed the image
less, and takes a screenshot (``UDPM_EXPLORE_SCREENSHOT=PATH`` also writes it there: that is
how ``docs/images/explore.png`` is made). It also reports the page's own latency from slider
event to image on screen. Skipped when Chromium, its driver or Selenium is missing;
``.ci/run`` installs them (Debian ``chromium chromium-driver``).
"""

import base64
import io
import json
import os
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium: install Debian's chromium and chromium-driver (.ci/run does)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the explore extra is not installed")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,1300",
]


@pytest.fixture(scope="module")
def server():
    """The app on the shipped model, served by uvicorn on a free port in a thread."""
    import torch

    import udpm
    from udpm.explore.app import create_app

    torch.set_num_threads(1)
    config = uvicorn.Config(create_app(udpm.load()), host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def pixels(data_url: str) -> np.ndarray:
    data = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def settled(driver) -> bool:
    """No render in flight or waiting."""
    return driver.execute_script("const s = window.udpmExplore; return !s.inFlight && !s.dirty;")


def image(driver) -> str:
    return driver.find_element(By.ID, "image").get_attribute("src")


def drag(driver, slider, pixels_right: int, steps: int = 20) -> None:
    """Press on the slider's thumb (the middle: 0) and drag right in small moves, as a hand."""
    chain = ActionChains(driver, duration=10).click_and_hold(slider)
    for _ in range(steps):
        chain.move_by_offset(pixels_right // steps, 0).pause(0.02)
    chain.release().perform()
    WebDriverWait(driver, 30).until(settled)


def slider(driver, level: int, k: int = 0):
    return driver.find_element(By.CSS_SELECTOR, f'input[data-level="{level}"][data-k="{k}"]')


def test_sliders_in_a_real_browser(server, browser, tmp_path):
    browser.get(server)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#grid img")
    assert len(thumbs) == 16
    thumbs[1].click()  # seed 1
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-level="3"]'))
    assert "seed 1" in browser.find_element(By.ID, "provenance").text
    original = image(browser)

    drag(browser, slider(browser, 3), 90)
    after3 = image(browser)
    change3 = np.abs(pixels(after3) - pixels(original)).mean()
    assert after3 != original and change3 > 0
    assert float(slider(browser, 3).get_attribute("value")) > 0.5

    reset = browser.find_element(By.CSS_SELECTOR, 'fieldset[data-level="3"] .reset')
    reset.click()
    wait.until(settled)
    wait.until(lambda d: image(d) == original)  # slider 0 is the original, bit for bit

    WebDriverWait(browser, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-level="1"]')
    )  # the finest level's sliders come last (seconds: its map has the most entries)
    drag(browser, slider(browser, 1), 90)
    assert float(slider(browser, 1).get_attribute("value")) > 0.5
    change1 = np.abs(pixels(image(browser)) - pixels(original)).mean()
    assert change1 < change3, (change1, change3)

    latencies = browser.execute_script("return window.udpmExplore.latencies")
    assert len(latencies) >= 3
    p50, p95 = np.percentile(latencies, [50, 95])
    report = {"renders": len(latencies), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1)}
    print("browser slider-to-image latency:", json.dumps(report))
    assert p95 < 3000, report  # the 100 ms target is measured, not gated: CI CPUs are shared

    # Nothing stale arrives after the drag: the image shown is the server's last render.
    sid = browser.execute_script("return window.udpmExplore.session")
    with urllib.request.urlopen(f"{server}api/image.png?session={sid}", timeout=10) as r:
        last = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")).astype(float)
    assert np.array_equal(pixels(image(browser)), last)

    # leave a visible edit on screen for the picture: level 3 moved back out
    drag(browser, slider(browser, 3), 60)
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "explore.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    if os.environ.get("UDPM_EXPLORE_SCREENSHOT"):
        shutil.copy(shot, os.environ["UDPM_EXPLORE_SCREENSHOT"])
    if os.environ.get("UDPM_EXPLORE_LATENCY_JSON"):
        context = {"load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
        with open(os.environ["UDPM_EXPLORE_LATENCY_JSON"], "w") as f:
            json.dump({**report, **context}, f, indent=2)
            f.write("\n")


def alone(seed: int) -> np.ndarray:
    """The pixels of seed ``seed`` decoded at batch 1, as the server renders it (a grid
    thumbnail comes from a larger batch, whose float sums may differ in the last bit)."""
    import udpm
    from udpm.explore.frames import data_url, render
    from udpm.latent import Latent

    model = udpm.load()
    return pixels(data_url(render(model, Latent.from_seed(model, seed)).image))


def test_interpolate_and_swap_in_a_real_browser(server, browser):
    """The partner slider's far end is the second image, exactly; a swap edits the image."""
    browser.get(server)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    browser.find_element(By.CSS_SELECTOR, '#grid img[data-seed="2"]').click()
    wait.until(lambda d: "seed 2" in d.find_element(By.ID, "provenance").text)
    assert np.array_equal(pixels(image(browser)), alone(2))

    browser.find_element(By.ID, "pick-partner").click()
    browser.find_element(By.CSS_SELECTOR, '#grid img[data-seed="3"]').click()
    wait.until(lambda d: d.find_element(By.ID, "partner-info").text == "seed 3")
    mix = browser.find_element(By.ID, "mix")

    def drag_to_end(d) -> bool:
        # On a loaded machine the synthetic drag is sometimes dropped before the page
        # handles it (the slider stays at 0); dragging again is what a user would do.
        ActionChains(d).click_and_hold(mix).move_by_offset(400, 0).release().perform()
        return mix.get_attribute("value") == "1"

    wait.until(drag_to_end)
    wait.until(settled)
    assert mix.get_attribute("value") == "1"
    assert np.array_equal(pixels(image(browser)), alone(3))

    before = image(browser)
    browser.find_element(By.CSS_SELECTOR, 'fieldset[data-level="3"] .swap').click()
    browser.find_element(By.CSS_SELECTOR, '#grid img[data-seed="4"]').click()
    wait.until(lambda d: "edited" in d.find_element(By.ID, "provenance").text)
    assert image(browser) != before
    assert browser.find_element(By.ID, "status").text == ""  # no error shown
