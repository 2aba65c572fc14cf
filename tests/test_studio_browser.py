"""The studio page end to end in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, Selenium).

``vidtrack studio`` runs in a subprocess on the tiny random SAM 2 model, saved in transformers layout and loaded
through ``--checkpoint`` (the real loading path), on 12 real frames (DAVIS car-shadow, when ../shared/data is
present; else two synthetic moving shapes, so the page is never left untested). The test clicks a point, checks
that a mask is drawn at the clicked place, adds a negative click that shrinks it, drags a box for a second
object, propagates, corrects frame 6,
propagates again and exports DAVIS PNGs and an MP4 through the page's download links. Independently, the same
prompts (the coordinates the page actually sent, read back from the server) go through the session API directly
on the same checkpoint: every mask the page drew and every downloaded PNG must equal the API's byte for byte;
the MP4 (H.264 is lossy and libx264 here not bit-reproducible) must encode the overlay of the API's masks.

Random weights do not know what a car is, so the click points are chosen with the API first (a point whose
mask covers it; a negative point inside that mask that shrinks it): the page must then show exactly that.

Screenshots land in ``$VIDTRACK_TEST_ARTIFACTS/studio`` (default: the test's tmp folder) - look at them.
Without a browser the test skips with the reason; with ``VIDTRACK_REQUIRE_BROWSER=1`` (CI) it fails instead.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SHARED_DATA, moving_shapes, write_video

REQUIRE = os.environ.get("VIDTRACK_REQUIRE_BROWSER", "").strip() == "1"
MODEL = "sam2.1-tiny"
SIZE = (320, 180)  # (W, H) of the test video
ALPHA = 140  # the page paints masks with this alpha


def need(ok: object, reason: str) -> None:
    """Skip (or, with VIDTRACK_REQUIRE_BROWSER=1, fail) when something the browser test needs is missing."""
    if not ok:
        if REQUIRE:
            pytest.fail(f"{reason} (VIDTRACK_REQUIRE_BROWSER=1: the browser test must run)")
        pytest.skip(reason)


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def chromium_paths() -> tuple[str | None, str | None]:
    browser = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
                   None)
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from PIL import Image

    folder = SHARED_DATA / "davis2016" / "JPEGImages" / "480p" / "car-shadow"
    paths = sorted(folder.glob("*.jpg"))[:12]
    if len(paths) == 12:
        frames = [np.asarray(Image.open(p).convert("RGB").resize(SIZE, Image.BILINEAR)) for p in paths]
    else:
        frames = moving_shapes(12, SIZE[1], SIZE[0])
    return write_video(tmp_path_factory.mktemp("studio-browser") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def api_loader(tiny_checkpoint_dir) -> Iterator[Any]:
    """The loader the server builds (same options, same --checkpoint), in this process."""
    from vidtrack.api import create_tracking_loader
    from vidtrack.cli_options import TrackerOptions

    options = TrackerOptions(device="cpu", threads=1)
    config = options.config(MODEL, checkpoint_path=str(tiny_checkpoint_dir), cache_dir=None)
    loader = create_tracking_loader(MODEL, config).load()
    yield loader
    loader.unload()


def _neighbourhood(mask: np.ndarray, x: float, y: float, r: int = 3) -> np.ndarray:
    xi, yi = round(x), round(y)
    return mask[max(yi - r, 0): yi + r + 1, max(xi - r, 0): xi + r + 1]


def choose_points(loader: Any, video: Path) -> dict[str, Any]:
    """With the API: a positive point inside its own mask, a negative point that shrinks that mask but keeps the
    positive point covered, a box that gives object 2 a mask, and a frame-6 correction point outside object 1's
    propagated mask."""
    w, h = SIZE
    grid = [(float(x), float(y)) for y in range(24, h - 24, 16) for x in range(24, w - 24, 16)]
    with loader.open_session(str(video)) as s:
        for p in grid:
            s.reset()
            m = s.add_prompt(0, 1, points=np.array([p], np.float32), labels=np.array([1], np.int32)).mask_for(1).mask
            if _neighbourhood(m, *p).all() and 0.01 * w * h < m.sum() < 0.6 * w * h:
                break
        else:
            raise AssertionError("no grid point lies inside its own mask on this checkpoint")
        area = int(m.sum())
        inside = [q for q in grid if m[int(q[1]), int(q[0])] and np.hypot(q[0] - p[0], q[1] - p[1]) > 20]
        for q in inside:
            s.reset()
            s.add_prompt(0, 1, points=np.array([p], np.float32), labels=np.array([1], np.int32))
            m2 = s.add_prompt(0, 1, points=np.array([q], np.float32), labels=np.array([0], np.int32)).mask_for(1).mask
            if _neighbourhood(m2, *p).all() and m2.sum() < area:
                break
        else:
            raise AssertionError("no negative point shrinks the mask on this checkpoint")
        boxes = [(x, y, x + bw, y + bh) for bw, bh in ((90, 60), (60, 90), (120, 80))
                 for x in range(10, w - bw, 40) for y in range(10, h - bh, 30)]
        for b in boxes:
            f = s.add_prompt(0, 2, box=np.array(b, np.float32), clear_old_points=True)
            area = f.mask_for(2).area
            if 0.01 * w * h < area < 0.5 * w * h:
                break
        else:
            raise AssertionError("no box gives object 2 a mask on this checkpoint")
        list(s.propagate("forward"))
        f6 = s.frame_result(6)
        assert f6 is not None
        m6 = f6.mask_for(1).mask
        r = next(c for c in grid if not _neighbourhood(m6, *c, r=6).any())
    return {"positive": p, "negative": q, "correction": r, "box": b}


class Page:
    """The studio page in headless Chromium."""

    def __init__(self, url: str, downloads: Path, artifacts: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium_paths()
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(browser)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,900", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"):
            opts.add_argument(arg)
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False,
                                               "profile.default_content_setting_values.automatic_downloads": 1})
        self.d = webdriver.Chrome(service=Service(str(driver)), options=opts)
        self.url, self.artifacts, self.shots = url, artifacts, 0
        self.d.get(url)
        self.wait(lambda: self.js("return !!(window.studio && window.studio.ready)"), "page ready")

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def wait(self, cond: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; status: {self.status()}")

    def status(self) -> str:
        return str(self.js("return document.getElementById('status').textContent"))

    def count(self, what: str) -> int:
        return int(self.js(f"return window.studio.counts.{what}"))

    def click(self, x: float, y: float, *, right: bool = False) -> None:
        """Click canvas pixel (x, y) of the video frame and wait for the page to draw the answer."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        marks = self.d.find_element(By.ID, "marks")
        cw, ch = self.js("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", marks)
        before = self.count("prompts")
        chain = ActionChains(self.d).move_to_element_with_offset(marks, round((x + 0.5) * cw / SIZE[0] - cw / 2),
                                                                 round((y + 0.5) * ch / SIZE[1] - ch / 2))
        (chain.context_click() if right else chain.click()).perform()
        self.wait(lambda: self.count("prompts") > before, "the prompt's masks")

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Drag a box from canvas pixel (x0, y0) to (x1, y1) and wait for the masks."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        marks = self.d.find_element(By.ID, "marks")
        cw, ch = self.js("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", marks)
        sx, sy = cw / SIZE[0], ch / SIZE[1]
        before = self.count("prompts")
        (ActionChains(self.d).move_to_element_with_offset(marks, round((x0 + 0.5) * sx - cw / 2),
                                                          round((y0 + 0.5) * sy - ch / 2))
         .click_and_hold().move_by_offset(round((x1 - x0) * sx / 2), round((y1 - y0) * sy / 2))
         .move_by_offset(round((x1 - x0) * sx / 2), round((y1 - y0) * sy / 2)).release().perform())
        self.wait(lambda: self.count("prompts") > before, "the box's masks")

    def overlay(self) -> np.ndarray:
        """The overlay canvas as (H, W, 4) RGBA."""
        data = self.js("const c = document.getElementById('overlay');"
                       "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);")
        return np.asarray(data, dtype=np.uint8).reshape(SIZE[1], SIZE[0], 4)

    def last_points(self, frame: int, object_id: int = 1) -> list[tuple[list[float], int]]:
        p = self.js(f"return window.studio.frameData.prompts['{object_id}']")
        assert self.js("return window.studio.frameData.frame_idx") == frame
        return list(zip(p["points"], p["labels"], strict=True))

    def key(self, name: str, times: int = 1) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        for _ in range(times):
            ActionChains(self.d).send_keys(getattr(Keys, name)).perform()

    def shot(self, name: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        return path

    def close(self) -> None:
        self.d.quit()


def decode_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_page_click_correct_propagate_export_equals_api(video, api_loader, tiny_checkpoint_dir, tmp_path):
    browser, driver = chromium_paths()
    need(_importable("selenium"), "selenium is not installed (pip install -e '.[dev]')")
    need(_importable("fastapi") and _importable("uvicorn"), "the studio needs vidtrack[studio] (fastapi, uvicorn)")
    need(browser, "no chromium browser found (apt install chromium chromium-driver)")
    need(driver, "no chromedriver found (apt install chromium-driver)")
    from test_studio import StudioProcess, studio_args
    from vidtrack.export.registry import export_result

    artifacts = Path(os.environ.get("VIDTRACK_TEST_ARTIFACTS", tmp_path)) / "studio"
    artifacts.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    points = choose_points(api_loader, video)

    server = StudioProcess(studio_args(video, tmp_path / "project", tiny_checkpoint_dir))
    page = Page(server.url, downloads, artifacts)
    seen: dict[str, np.ndarray] = {}
    try:
        sid = page.js("return window.studio.session.sid")
        assert page.js("return window.studio.session.num_frames") == 12

        # 1. a positive click: a non-empty mask is drawn where the click was
        page.click(*points["positive"])
        seen["positive"] = page.overlay()
        (px, py), label = page.last_points(0)[0]
        assert label == 1 and abs(px - points["positive"][0]) < 1 and abs(py - points["positive"][1]) < 1
        rgba = seen["positive"][round(py), round(px)]
        assert rgba[3] == ALPHA and abs(int(rgba[0]) - 128) <= 2, rgba  # object 1's colour (DAVIS palette red)
        area_pos = int((seen["positive"][..., 3] > 0).sum())
        assert area_pos > 0
        page.shot("positive-click")

        # 2. a right click (negative) shrinks it; the positive point stays covered
        page.click(*points["negative"], right=True)
        seen["negative"] = page.overlay()
        area_neg = int((seen["negative"][..., 3] > 0).sum())
        assert 0 < area_neg < area_pos
        assert seen["negative"][round(py), round(px)][3] == ALPHA
        page.shot("negative-click")

        # 3. a second object from a dragged box; then back to object 1 (key "1")
        page.js("document.getElementById('add-object').click()")
        page.wait(lambda: page.js("return window.studio.objectId") == 2, "object 2")
        page.drag(*points["box"])
        seen["box"] = page.overlay()
        box_sent = page.js("return window.studio.frameData.prompts['2'].box")
        assert np.allclose(box_sent, points["box"], atol=1.5), box_sent
        green = (seen["box"][..., 3] == ALPHA) & (seen["box"][..., 1] > 100) & (seen["box"][..., 0] < 20)
        assert green.any()  # object 2's colour (DAVIS palette green)
        page.js("window.dispatchEvent(new KeyboardEvent('keydown', {key: '1'}))")
        assert page.js("return window.studio.objectId") == 1
        page.shot("two-objects")

        # 4. propagate forward: progress reaches the end, the timeline shows object 1 on every frame
        page.js("document.getElementById('propagate').click()")
        page.wait(lambda: page.count("propagations") >= 1, "the first propagation")
        assert page.js("return window.studio.job.state") == "done"
        assert page.js("return window.studio.job.done") == 12
        assert "." not in page.js("return window.studio.timeline.rows['1']")
        assert "." not in page.js("return window.studio.timeline.rows['2']")
        assert page.js("return window.studio.frame") == 11  # the preview followed the propagation
        page.shot("propagated")

        # 5. correct frame 6 (keys to get there) and propagate again
        page.key("HOME")
        page.key("ARROW_RIGHT", 6)
        page.wait(lambda: page.js("return window.studio.frame === 6 && window.studio.frameData.frame_idx === 6"),
                  "frame 6")
        seen["frame6-before"] = page.overlay()
        page.click(*points["correction"])
        seen["correction"] = page.overlay()
        assert not np.array_equal(seen["correction"], seen["frame6-before"])
        page.js("document.getElementById('propagate').click()")
        page.wait(lambda: page.count("propagations") >= 2, "the second propagation")
        assert page.js("return window.studio.job.state") == "done"
        page.key("HOME")
        page.key("ARROW_RIGHT", 6)
        page.wait(lambda: page.js("return window.studio.frame === 6 && window.studio.frameData.frame_idx === 6"),
                  "frame 6")
        page.shot("corrected")

        # 6. export DAVIS PNGs + MP4 through the page's download links
        page.js("for (const i of document.querySelectorAll('#formats input')) "
                "i.checked = ['davis-png', 'overlay-mp4'].includes(i.value);")
        page.js("document.getElementById('export').click()")
        page.wait(lambda: page.count("exports") >= 1, "the export")
        page.wait(lambda: {p.name for p in downloads.iterdir()} == {"davis.zip", "overlay.mp4"}, "the downloads")
        page.shot("exported")

        # every resource the page loaded came from the studio itself
        urls = page.js("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(server.url) for u in urls), urls

        # 7. a reload reattaches this tab to its session
        page.d.refresh()
        page.wait(lambda: page.js("return !!(window.studio && window.studio.ready)"), "page ready after reload")
        assert page.js("return window.studio.session.sid") == sid
        assert page.js("return window.studio.session.prompted") == {"1": [0, 6], "2": [0]}
        sent = server.call("GET", f"/api/sessions/{sid}/masks/0")["prompts"]["1"]
        sent6 = server.call("GET", f"/api/sessions/{sid}/masks/6")["prompts"]["1"]
    finally:
        page.close()
        server.stop()

    # The same prompts (coordinates as the page sent them) through the session API, same checkpoint.
    def painted(masks: list[tuple[int, np.ndarray]]) -> np.ndarray:
        return np.logical_or.reduce([m for _, m in masks]) if masks else np.zeros(SIZE[::-1], bool)

    def pts(i: int, prompts: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"points": np.array([prompts["points"][i]], np.float32),
                "labels": np.array([prompts["labels"][i]], np.int32)}

    with api_loader.open_session(str(video)) as s:
        f = s.add_prompt(0, 1, **pts(0, sent))
        assert np.array_equal(seen["positive"][..., 3] > 0, painted([(1, f.mask_for(1).mask)]))
        f = s.add_prompt(0, 1, **pts(1, sent))
        assert np.array_equal(seen["negative"][..., 3] > 0, painted([(1, f.mask_for(1).mask)]))
        f = s.add_prompt(0, 2, box=np.array(box_sent, np.float32), clear_old_points=True)
        assert np.array_equal(seen["box"][..., 3] > 0, painted([(m.object_id, m.mask) for m in f.masks]))
        assert f.mask_for(2).area > 0
        list(s.propagate("forward"))
        uncorrected = s.frame_result(6)
        f = s.add_prompt(6, 1, **pts(0, sent6))
        assert np.array_equal(seen["correction"][..., 3] > 0, painted([(m.object_id, m.mask) for m in f.masks]))
        list(s.propagate("forward"))
        api_out = tmp_path / "api"
        api_result = s.result()
        export_result(api_result, api_out, ["davis-png", "overlay-mp4"], source=str(video))

    with zipfile.ZipFile(downloads / "davis.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        assert names == sorted(f"davis/{p.name}" for p in (api_out / "davis").glob("*.png"))
        assert len(names) == 12
        for name in names:
            assert z.read(name) == (api_out / name).read_bytes(), name
        from PIL import Image

        assert np.asarray(Image.open(io.BytesIO(z.read(names[6])))).any()
    # libx264 does not always give the same bytes twice here (two exports of one result in one process can
    # differ), and H.264 (yuv420p, crf 20) blurs the 1-px outlines and labels, so the MP4s are compared as
    # pictures: page vs API file >= 36 dB (measured: identical, or 41.7-45 dB when the encoder differs); each
    # frame close to render_overlay of the API's result on the source frame, luma >= 30 dB (measured 34.8-37.4;
    # the neighbouring frame's masks give 12.9-18.3); and where the correction changed frame 6's drawing, the
    # page's frame is nearer the corrected drawing (mean abs error measured 35 vs 65).
    from vidtrack.export.overlay import render_overlay

    source = decode_video(video)
    expected = [render_overlay(img, fr) for img, fr in zip(source, api_result.frames, strict=True)]
    page_video, api_video = decode_video(downloads / "overlay.mp4"), decode_video(api_out / "overlay.mp4")
    assert len(page_video) == len(api_video) == 12
    for i in range(12):
        assert psnr(page_video[i], api_video[i]) > 36, (i, psnr(page_video[i], api_video[i]))
        for name, got in (("page", page_video[i]), ("api", api_video[i])):
            assert psnr(luma(got), luma(expected[i])) > 30, (name, i, psnr(luma(got), luma(expected[i])))
    wrong = render_overlay(source[6], uncorrected)
    changed = (wrong != expected[6]).any(axis=-1)
    assert changed.sum() > 50
    got6 = page_video[6].astype(np.int64)[changed]
    assert np.abs(got6 - expected[6][changed]).mean() < np.abs(got6 - wrong[changed]).mean()


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))
