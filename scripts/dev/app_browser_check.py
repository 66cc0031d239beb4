#!/usr/bin/env python
"""Measure the interactive page in headless Chromium and take its screenshot (docs/img/app.png).

    python scripts/dev/app_browser_check.py [--moves 8] [--screenshot docs/img/app.png]

Serves the page (bundled models, examples) on 127.0.0.1, picks the first example, then moves the
glasses slider ``--moves`` times and prints, per move, the seconds from the slider's release to the new
edited image in the page (the edit round trip a user sees), and their median. Needs Gradio, selenium and
Debian's chromium + chromium-driver.
"""
import argparse
import runpy
import shutil
import statistics
import sys
import time
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_require_wagi.py"))  # one line, exit 2 without wagi

from wagi.app import AppEngine, build_app, bundled_models, example_images, launch  # noqa: E402

SCREEN = (1400, 1500)
SCREENSHOT_WIDTH = 900  # px of the PNG kept in docs/ (small, still readable)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--moves", type=int, default=8)
    p.add_argument("--screenshot", type=Path, default=None, metavar="PNG")
    args = p.parse_args(argv)

    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    demo = build_app(AppEngine(bundled_models()), example_images())
    launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    opts = Options()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={SCREEN[0]},{SCREEN[1]}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    wait = WebDriverWait(driver, 120, poll_frequency=0.01)

    def edited_src(d):
        found = d.find_elements(By.CSS_SELECTOR, "#edited img")
        return found[0].get_attribute("src") if found else None

    try:
        driver.get(demo.local_url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples img"))[0].click()
        wait.until(edited_src)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-file a"))
        slider = driver.find_element(By.CSS_SELECTOR, "#slider-shipped-glasses input[type=range]")
        width = slider.size["width"]
        times = []
        for k in range(args.moves):
            before = edited_src(driver)
            offset = (width // 8) * (1 + k % 3) * (1 if k % 2 else -1)  # ends on an added attribute
            actions = ActionChains(driver).move_to_element(slider).click_and_hold().move_by_offset(offset, 0)
            actions.perform()
            t0 = time.perf_counter()
            ActionChains(driver).release().perform()
            wait.until(lambda d, before=before: edited_src(d) != before)
            times.append(time.perf_counter() - t0)
            print(f"move {k}: {times[-1]:.3f} s", flush=True)
            time.sleep(0.5)  # let the follow-up step (sub-bands, downloads) finish before the next move
        print(f"edit round trip in the browser: median {statistics.median(times):.3f} s, "
              f"max {max(times):.3f} s over {len(times)} moves")
        if args.screenshot:
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-file a"))
            time.sleep(1.0)
            png = args.screenshot.with_suffix(".full.png")
            driver.save_screenshot(str(png))
            img = Image.open(png).convert("RGB")
            img = img.resize((SCREENSHOT_WIDTH, round(img.height * SCREENSHOT_WIDTH / img.width)), Image.LANCZOS)
            img.quantize(colors=128).save(args.screenshot, optimize=True)
            png.unlink()
            print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size // 1024} KiB)")
    finally:
        driver.quit()
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
