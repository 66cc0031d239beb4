"""The interactive page end to end in a real headless Chromium (selenium driving Debian's ``chromium`` with
``chromium-driver``): load the page, pick an example, move a slider, check that the edited image changed;
upload a file that is not an image and read the message in the page.

Skipped where Gradio, selenium, the browser or its driver is missing; nothing is downloaded."""
import io
import os
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from wagi.app import AppEngine, build_app, bundled_models, example_images, launch

BROWSERS = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
STALE_RETRIES = 20
WAIT_S = 90  # first inversion includes loading the model on a busy 2-core CPU


def _browser():
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


pytestmark = [
    pytest.mark.skipif(_browser() is None or shutil.which(DRIVER) is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]
gradio = pytest.importorskip("gradio", reason="the page needs Gradio: pip install -e '.[app]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """The page served from another working directory than the repository, as a user may start it."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        engine = AppEngine(bundled_models(), download_dir=tmp_path_factory.mktemp("downloads"))
        demo = build_app(engine, example_images())
        launch(demo, port=None, prevent_thread_lock=True, quiet=True)
        yield demo.local_url
        demo.close()
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = _browser()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=opts)
    yield driver
    driver.quit()


def _wait(driver, condition):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page replaces elements as results arrive: a stale one is read again at the next poll.
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _src(driver, elem_id):
    """The ``src`` of the image shown in component ``elem_id``, or None when it shows none."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(STALE_RETRIES):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
            return found[0].get_attribute("src") if found else None
        except StaleElementReferenceException:  # replaced between find and read: look again
            continue
    raise AssertionError(f"#{elem_id} kept changing")


def _pixels(url) -> np.ndarray:
    with urllib.request.urlopen(url) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.float32)


def _pick_first_example(driver):
    from selenium.webdriver.common.by import By

    thumbs = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#examples img"))
    thumbs[0].click()


@pytest.mark.slow
def test_browser_pick_example_and_move_a_slider(page_url, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    _pick_first_example(browser)
    before = _wait(browser, lambda d: _src(d, "edited"))
    assert _src(browser, "recon") and _src(browser, "unfused") and _src(browser, "subbands")
    assert "PSNR" in browser.find_element(By.ID, "metrics").text
    slider = browser.find_element(By.CSS_SELECTOR, "#slider-shipped-glasses input[type=range]")
    ActionChains(browser).move_to_element(slider).click_and_hold().move_by_offset(slider.size["width"] // 3, 0) \
        .release().perform()
    after = _wait(browser, lambda d: _src(d, "edited") != before and _src(d, "edited"))
    value = float(browser.find_element(By.CSS_SELECTOR, "#slider-shipped-glasses input[type=number]")
                  .get_attribute("value"))
    assert value > 0
    change = np.abs(_pixels(after) - _pixels(before)).mean()
    assert change > 1.0  # mean change in 8-bit levels: the glasses edit is visible
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#result-file a, #result-file [download]"))
    browser.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()  # clearing is no error
    _wait(browser, lambda d: _src(d, "edited") is None and _src(d, "recon") is None)
    assert not browser.find_elements(By.CSS_SELECTOR, ".toast-body")


def test_browser_bad_upload_shows_a_message_and_the_page_keeps_working(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image")
    browser.get(page_url)
    upload = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    upload[0].send_keys(str(junk))
    toasts = ".toast-body, .toast-wrap"
    message = _wait(browser, lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, toasts)
                                             if "cannot read image" in e.text), None))
    assert "notes.png: cannot read image: not a supported image" in message
    assert "Traceback" not in browser.page_source
    _pick_first_example(browser)
    _wait(browser, lambda d: _src(d, "edited"))
