"""The README's picture of `vlp serve` (docs/serve.png): the page in Debian's headless
Chromium with an image captioned, a question answered and one region's label shown.

    python scripts/serve_screenshot.py runs/quickstart [--image photo.jpg] \\
        [--question "what color is the circle"] [--out docs/serve.png]

Without --image it picks the bundle's first example image. Needs the `dev` extra
(selenium) and `apt-get install chromium chromium-driver`; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def start_server(bundle: str, log: Path) -> tuple[subprocess.Popen, str]:
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlp", "serve", "--bundle", bundle,
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"vlp serve: (http://\S+/)", log.read_text())
        if found:
            try:
                urllib.request.urlopen(found[1] + "api/health", timeout=5)
                return proc, found[1]
            except OSError:
                pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"vlp serve did not start: {log.read_text()}")


def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        sys.exit("Chromium or its driver is missing: apt-get install chromium chromium-driver")
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1180,860", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def shoot(driver, url: str, image: str | None, question: str, out: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text(element_id):
        return WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, element_id).text)

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "body[data-ready]"))
    if image:
        driver.find_element(By.ID, "file").send_keys(str(Path(image).resolve()))
    else:
        driver.find_element(By.CSS_SELECTOR, "#example-list button").click()
    text("caption")
    driver.find_element(By.ID, "question").send_keys(question)
    driver.find_element(By.ID, "ask-button").click()
    text("answer")
    rect = driver.find_element(By.CSS_SELECTOR, "#overlay g.region rect")
    ActionChains(driver).move_to_element(rect).perform()
    text("region-label")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(driver.get_screenshot_as_png())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle directory (vlp quickstart's output)")
    parser.add_argument("--image", help="image file to upload (default: the first example)")
    parser.add_argument("--question", default="what color is the circle")
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args.bundle, Path(tmp) / "serve.log")
        driver = None
        try:
            driver = chromium(Path(tmp) / "profile")
            shoot(driver, url, args.image, args.question, args.out)
        finally:
            if driver is not None:
                driver.quit()
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.out}: the page at {url}")


if __name__ == "__main__":
    main()
