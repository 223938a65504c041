"""`rediffuse serve` in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium): an
image run's canvas changes at least three times before the end, an audio run ends with a playable WAV, a text run's
tokens are revealed, the compare view fills both panes; a screenshot is saved. Skipped, with the reason, where no
Chromium is installed (`.ci/run` installs it)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from helpers import AUDIO_NET, IMAGE_NET, POINTS, tiny, write_fsdd
from rediffuse.config import TrainConfig
from rediffuse.serve import Server
from rediffuse.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("no Chromium here: apt-get install chromium chromium-driver (.ci/run does)", allow_module_level=True)

from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 120


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A served page over an image, an audio, a text and a points run, open in headless Chromium."""
    folder = tmp_path_factory.mktemp("browser")
    common = dict(steps=3, batch_size=8, warmup_steps=1, log_every=10, checkpoint_every=100, progress=False)
    train(TrainConfig(data="digits", out=str(folder / "digits"), net="unet", net_kwargs=IMAGE_NET, conditional=True,
                      **common))
    write_fsdd(folder / "fsdd", digits=range(2), speakers=("ann",), indices=range(4), n=600)
    train(TrainConfig(data=f"fsdd:{folder / 'fsdd'}", out=str(folder / "speech"), clip_length=512,
                      net_kwargs=AUDIO_NET, **common))
    train(tiny(folder, steps=5, out=str(folder / "text"), net_kwargs={"dim": 16, "depth": 1, "heads": 2}))
    train(TrainConfig(out=str(folder / "points"), steps=5, net="mlp", **POINTS))
    server = Server([folder / name for name in ("digits", "speech", "text", "points")], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    browser.get(server.address)
    WebDriverWait(browser, WAIT_S).until(lambda b: len(Select(b.find_element("id", "run")).options) == 4)
    yield browser
    browser.quit()
    server.shutdown()


def pick(browser, run: int, **fields: str) -> None:
    """Choose a run and fill fields (element id -> value)."""
    Select(browser.find_element("id", "run")).select_by_index(run)
    for name, value in fields.items():
        box = browser.find_element("id", name)
        box.clear()
        box.send_keys(value)


def finished(browser, pane: str = "a") -> bool:
    """Whether the pane's status says done (an error fails the test at once)."""
    status = browser.find_element("id", f"status-{pane}")
    assert "error" not in (status.get_attribute("class") or ""), status.text
    return status.text.startswith("done")


def test_an_image_run_streams_frames_to_the_canvas(page, tmp_path):
    pick(page, 0, steps="20", n="8")
    page.find_element("id", "generate").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b))
    frames = int(page.find_element("id", "canvas-a").get_attribute("data-frames"))
    assert frames >= 3  # it changed at least three times before the end
    assert "network evaluations" in page.find_element("id", "status-a").text
    page.save_screenshot(str(tmp_path / "serve.png"))
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_an_audio_run_ends_with_a_playable_wav(page):
    pick(page, 1, steps="10", n="2")
    page.find_element("id", "generate").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b))
    players = page.find_elements("css selector", "#audio-a audio")
    assert len(players) == 2 and players[0].get_attribute("src").startswith("data:audio/wav;base64,")
    duration = page.execute_script("const a = document.querySelector('#audio-a audio'); "
                                   "return new Promise(r => a.readyState > 0 ? r(a.duration) : "
                                   "a.addEventListener('loadedmetadata', () => r(a.duration)));")
    assert duration > 0


def test_a_text_run_reveals_its_tokens(page):
    pick(page, 2, steps="16", n="2")
    page.find_element("id", "generate").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b))
    text = page.find_element("id", "text-a")
    assert int(text.get_attribute("data-frames")) >= 3 and "_" not in text.text and len(text.text) > 20


def test_the_compare_view_runs_the_same_noise_twice(page, tmp_path):
    pick(page, 3, steps="12", n="300")
    Select(page.find_element("id", "sampler-b")).select_by_value("euler")
    page.find_element("id", "compare").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b, "b"))
    assert page.find_element("id", "pane-b").is_displayed() and finished(page, "a")
    assert "euler" in page.find_element("id", "title-b").text
    page.save_screenshot(str(tmp_path / "compare.png"))
    Path(tmp_path / "compare.png").stat()


def test_a_painted_mask_edits_a_generated_image(page):
    pick(page, 0, steps="10", n="4")
    page.find_element("id", "generate").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b))
    assert page.find_element("id", "edit-pane").is_displayed()
    page.execute_script("setMask(0, 0, 8, 4);")  # the top half of the 8 x 8 digit
    Select(page.find_element("id", "method")).select_by_value("replace")
    page.find_element("id", "edit").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b) and "edit of sample 0" in
                                      b.find_element("id", "title-a").text)
    assert page.execute_script("return maskHex();") == "ffffffff00000000"


def test_a_region_of_a_generated_clip_is_redrawn(page):
    pick(page, 1, steps="6", n="2")
    page.find_element("id", "generate").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b))
    assert page.find_element("id", "audio-edit").is_displayed()
    region = page.find_element("id", "region")
    region.clear()
    region.send_keys("0.01:0.03")
    Select(page.find_element("id", "method")).select_by_value("replace")
    page.find_element("id", "edit").click()
    WebDriverWait(page, WAIT_S).until(lambda b: finished(b) and "edit of sample" in
                                      b.find_element("id", "title-a").text)
    assert len(page.find_elements("css selector", "#audio-a audio")) == 1
