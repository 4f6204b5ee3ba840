"""`vlp serve`: the API answers as `vlp caption` / `vlp ask` do, refuses what it cannot use
with a 4xx and one line, serves concurrent requests correctly, and its page works in a
real headless Chromium. The bundle is conftest.py's tiny main job, built once per session."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_extraction.images import decode_rgb
from vlp.bundle import load_bundle
from vlp.cli import build_parser, main
from vlp.serve import BundleModels, ServeSettings, build_app

QUESTIONS = ("what color is the circle", "how many shapes are there", "is there a square")


@pytest.fixture(scope="module")
def bundle_dir(tiny_quickstart):
    return tiny_quickstart[0]


@pytest.fixture(scope="module")
def models(bundle_dir):
    loaded = BundleModels(load_bundle(bundle_dir))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def client(models):
    with TestClient(build_app(models, ServeSettings())) as c:
        yield c


@pytest.fixture(scope="module")
def images(bundle_dir):
    """Two ToyWorld test images and a real photograph (matplotlib's sample portrait)."""
    import matplotlib.cbook

    toy = sorted((bundle_dir / "toyworld" / "images").glob("toy_*.jpg"))[:2]
    return [*toy, Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def upload(path: Path) -> dict:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def without(result: dict, *keys) -> dict:
    return {k: v for k, v in result.items() if k not in keys}


def test_the_api_answers_as_vlp_caption_and_vlp_ask(client, bundle_dir, images, capsys):
    assert main(["caption", *map(str, images), "--bundle", str(bundle_dir), "--json",
                 "--n_best", "3"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in printed] == [str(p) for p in images]
    for path, expected in zip(images, printed):
        got = client.post("/api/caption", files=upload(path))
        assert got.status_code == 200, got.text
        body = got.json()
        assert without(body, "width", "height") == without(expected, "image")
        assert len(body["n_best"]) == 3 and body["n_best"][0]["caption"] == body["caption"]
        scores = [c["score"] for c in body["n_best"]]
        assert scores == sorted(scores, reverse=True)
        height, width = decode_rgb(path).shape[:2]
        assert (body["width"], body["height"]) == (width, height)

    question = QUESTIONS[1]
    assert main(["ask", str(images[0]), question, "--bundle", str(bundle_dir), "--json",
                 "--top", "4"]) == 0
    expected = json.loads(capsys.readouterr().out)
    got = client.post("/api/ask", files=upload(images[0]), data={"question": question, "top": "4"})
    assert got.status_code == 200, got.text
    assert without(got.json(), "width", "height") == without(expected, "image")
    assert len(expected["candidates"]) == 4


def test_the_api_locates_as_vlp_locate(client, bundle_dir, images, capsys):
    expression = "the small red circle"
    assert main(["locate", str(images[0]), expression, "--bundle", str(bundle_dir), "--json",
                 "--top", "2"]) == 0
    expected = json.loads(capsys.readouterr().out)
    got = client.post("/api/locate", files=upload(images[0]),
                      data={"expression": expression, "top": "2"})
    assert got.status_code == 200, got.text
    assert without(got.json(), "width", "height") == without(expected, "image")
    assert expected["box"] == expected["candidates"][0]["box"]
    blank = client.post("/api/locate", files=upload(images[0]), data={"expression": "  "})
    assert blank.status_code == 422 and "expression" in blank.json()["error"]


def test_vlp_caption_prints_the_k_best_only_when_asked(bundle_dir, images, capsys):
    toy = str(images[0])
    assert main(["caption", toy, "--bundle", str(bundle_dir), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["image", "caption", "score", "regions"]
    assert main(["caption", toy, "--bundle", str(bundle_dir), "--n_best", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{toy}: ") for line in lines)
    assert main(["caption", toy, "--bundle", str(bundle_dir), "--n_best", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vlp caption: error: --n_best 4 exceeds the beam size 3 (raise --beam_size)"]


def _bomb_png(side: int = 30000) -> bytes:
    """A valid 8x8 PNG whose header declares side x side pixels."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.fixture(scope="module")
def strict_client(models):
    """A server with small limits: 0.25 MB per upload, 100,000 pixels per image."""
    with TestClient(build_app(models, ServeSettings(max_upload_mb=0.25, max_pixels=100_000))) as c:
        yield c


LIMIT = "upload exceeds the limit of 0.25 MB (--max_upload_mb)"
FORMATS = "not an image in a format accepted here (JPEG, PNG, GIF, BMP, WEBP, TIFF)"
UNUSABLE = {  # case: (file name, status, message)
    "oversized": ("big.jpg", 413, LIMIT),
    "oversized, no length": ("big.jpg", 413, LIMIT),
    "bomb": ("bomb.png", 413, "bomb.png: declares more than 100000 pixels (the "
                              "decompression-bomb limit)"),
    "too many pixels": ("photo.jpg", 413, "photo.jpg: 512x600 pixels exceeds the "
                                          "decompression-bomb limit of 100000 pixels"),
    "empty": ("empty.jpg", 400, "empty.jpg: empty file (0 bytes)"),
    "not an image": ("notes.jpg", 400, f"notes.jpg: {FORMATS}"),
    "EPS (run by an outside program)": ("page.eps", 400, f"page.eps: {FORMATS}"),
}


@pytest.mark.parametrize("case", UNUSABLE)
def test_unusable_uploads_are_refused_with_one_line(strict_client, images, case):
    name, status, message = UNUSABLE[case]
    noise = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    data = {"oversized": noise, "bomb": _bomb_png(), "too many pixels": images[-1].read_bytes(),
            "empty": b"", "not an image": b"a shopping list, not a picture\n",
            "EPS (run by an outside program)": b"%!PS-Adobe-3.0 EPSF-3.0\n"
                                               b"%%BoundingBox: 0 0 64 64\nshowpage\n"}
    if case == "oversized, no length":  # a chunked upload: refused while it is read
        got = strict_client.post("/api/caption", content=_chunks(b"--b\r\n" + noise),
                                 headers={"content-type": "multipart/form-data; boundary=b"})
    else:
        got = strict_client.post("/api/caption", files={"image": (name, data[case])})
    assert (got.status_code, got.json()) == (status, {"error": message})
    assert strict_client.post("/api/caption", files=upload(images[0])).status_code == 200


MALFORMED = {  # case: (route, request, the error's start)
    "no image": ("/api/caption", {"data": {"n_best": "2"}, "files": {"other": ("a.txt", b"x")}},
                 "image: missing"),
    "no question": ("/api/ask", {"files": "IMAGE"}, "question: missing"),
    "blank question": ("/api/ask", {"files": "IMAGE", "data": {"question": "   "}},
                       "question: between 1 and 500 characters"),
    "n_best past the beam": ("/api/caption", {"files": "IMAGE", "data": {"n_best": "7"}},
                             "n_best 7: between 1 and the beam size 3"),
    "top not a number": ("/api/ask", {"files": "IMAGE", "data": {"question": "why", "top": "x"}},
                         "top: Input should be a valid integer"),
    "bad JSON": ("/api/ask", {"content": b'{"question": "why", "image": ',
                              "headers": {"content-type": "application/json"}},
                 "expected a multipart/form-data upload with an 'image' file field, "
                 "got application/json"),
    "broken multipart": ("/api/caption", {"content": b"--x\r\nno headers, no end",
                                          "headers": {"content-type":
                                                      "multipart/form-data; boundary=x"}}, ""),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_request_gets_a_4xx_and_the_server_goes_on(client, images, case):
    route, request, message = MALFORMED[case]
    if request.get("files") == "IMAGE":
        request = {**request, "files": upload(images[0])}
    got = client.post(route, **request)
    assert 400 <= got.status_code < 500
    error = got.json()["error"]
    assert error and error.startswith(message) and "\n" not in error
    after = client.post("/api/ask", files=upload(images[0]), data={"question": QUESTIONS[0]})
    assert after.status_code == 200 and after.json()["answer"]


def test_example_images_are_served_by_index_never_by_path(client, bundle_dir):
    listed = client.get("/api/examples").json()
    test_split = [im for im in json.loads((bundle_dir / "toyworld" / "annotations" /
                                           "dataset_toy.json").read_text())["images"]
                  if im["split"] == "test"]
    assert [ex["name"] for ex in listed] == [im["filename"] for im in test_split[:4]]
    first = client.get(listed[0]["image"])
    assert first.headers["content-type"] == "image/jpeg"
    assert first.content == (bundle_dir / "toyworld" / "images" / listed[0]["name"]).read_bytes()
    for url in ("/api/examples/4/image", "/api/examples/..%2F..%2Fbundle.json/image",
                "/static/..%2F..%2Fbundle.py", "/static/index.html"):
        got = client.get(url)
        assert got.status_code in (404, 422) and "error" in got.json(), url
    assert client.get("/api/health").json()["tasks"] == ["caption", "ask", "locate"]


def test_the_server_listens_on_loopback_unless_told_otherwise(capsys):
    args = build_parser().parse_args(["serve", "--bundle", "DIR"])
    assert (args.host, args.port, args.max_upload_mb, args.max_pixels) == (
        "127.0.0.1", 8000, 10.0, 40_000_000)
    assert main(["serve", "--bundle", "DIR", "--max_upload_mb", "0"]) == 2
    assert capsys.readouterr().err == "vlp serve: error: --max_upload_mb 0.0: must be above 0\n"


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    """`vlp serve` in its own process, on a free port the server picks itself (--port 0)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlp", "serve", "--bundle", str(bundle_dir),
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = _wait_for_url(proc, log)
        yield url, log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_url(proc, log: Path, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"vlp serve exited: {log.read_text()}"
        found = re.search(r"vlp serve: (http://\S+/)", log.read_text())
        if found:
            try:
                if httpx.get(found[1] + "api/health", timeout=5).status_code == 200:
                    return found[1]
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"vlp serve did not answer within {timeout:.0f} s: {log.read_text()}")


def test_concurrent_requests_each_get_their_own_answer(server, models, images):
    url, printed = server
    assert printed.startswith("vlp serve: http://127.0.0.1:")  # loopback by default
    jobs = [(images[i % len(images)], QUESTIONS[i % len(QUESTIONS)] if i % 2 else None)
            for i in range(16)]
    expected = [_in_process(models, path, question) for path, question in jobs]

    def send(job):
        path, question = job
        if question is None:
            return httpx.post(url + "api/caption", files=upload(path), timeout=120).json()
        return httpx.post(url + "api/ask", files=upload(path), data={"question": question},
                          timeout=120).json()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(send, jobs))
    assert got == expected


def _in_process(models, path: Path, question: str | None) -> dict:
    pixels = decode_rgb(path)
    if question is None:
        return models.caption(pixels, models.beam_size).result()
    return models.ask(pixels, question, 3).result()


# The browser: Debian's chromium and chromedriver, which .ci/run installs where missing.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert CHROMIUM and CHROMEDRIVER, ("Chromium or its driver is missing: "
                                       "apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # Selenium must never fetch a browser or a driver
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        yield driver
        driver.quit()


def _text(driver, element_id: str, timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, element_id).text)


def _png_pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)


def test_the_page_captions_answers_and_draws_the_regions(server, browser, images, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, _ = server
    toy = images[0]
    caption = httpx.post(url + "api/caption", files=upload(toy), timeout=120).json()
    answer = httpx.post(url + "api/ask", files=upload(toy), data={"question": QUESTIONS[0]},
                        timeout=120).json()

    browser.get(url)
    _text(browser, "limits")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#example-list button")) == 4
    browser.find_element(By.ID, "file").send_keys(str(toy))
    assert _text(browser, "caption") == caption["caption"]
    shown = [li.find_element(By.CLASS_NAME, "text").text
             for li in browser.find_elements(By.CSS_SELECTOR, "#n-best li")]
    assert shown == [c["caption"] for c in caption["n_best"]]

    regions = browser.find_elements(By.CSS_SELECTOR, "#overlay g.region")
    assert len(regions) == len(caption["regions"]) >= 1
    titles = [g.find_element(By.TAG_NAME, "title").get_attribute("textContent") for g in regions]
    assert titles == [f"{r['label']} ({r['score']:.2f})" for r in caption["regions"]]
    ActionChains(browser).move_to_element(regions[0].find_element(By.TAG_NAME, "rect")).perform()
    assert _text(browser, "region-label") == titles[0]  # the label shows on hover

    stage = browser.find_element(By.ID, "stage")
    with_boxes = _png_pixels(stage.screenshot_as_png)
    browser.execute_script("document.getElementById('overlay').style.display = 'none'")
    bare = _png_pixels(stage.screenshot_as_png)
    browser.execute_script("document.getElementById('overlay').style.display = ''")
    assert len(np.unique(with_boxes, axis=0)) > 1  # not a blank picture
    assert with_boxes.shape == bare.shape and (with_boxes != bare).any()  # the boxes show
    page = _png_pixels(browser.get_screenshot_as_png())
    assert len(np.unique(page, axis=0)) > 10

    browser.find_element(By.ID, "question").send_keys(QUESTIONS[0])
    browser.find_element(By.ID, "ask-button").click()
    assert _text(browser, "answer") == answer["answer"]
    shown = [li.find_element(By.CLASS_NAME, "text").text
             for li in browser.find_elements(By.CSS_SELECTOR, "#answers li")]
    assert shown == [c["answer"] for c in answer["candidates"]]

    located = httpx.post(url + "api/locate", files=upload(toy),
                         data={"expression": "the red circle"}, timeout=120).json()
    browser.find_element(By.ID, "expression").send_keys("the red circle")
    browser.find_element(By.ID, "locate-button").click()
    x1, y1, x2, y2 = located["box"]
    numbers = ", ".join(f"{v:g}" for v in located["box"])  # as JavaScript prints them
    assert _text(browser, "located") == f"{located['candidates'][0]['label']} at [{numbers}]"
    found = browser.find_element(By.ID, "found")
    assert [float(found.get_attribute(k)) for k in ("x", "y")] == [x1, y1]

    notes = tmp_path / "notes.jpg"
    notes.write_text("a shopping list, not a picture\n")
    refused = httpx.post(url + "api/caption", files=upload(notes), timeout=60).json()["error"]
    browser.find_element(By.ID, "file").send_keys(str(notes))
    assert _text(browser, "error") == refused
    assert browser.find_element(By.ID, "caption").text == ""
