"""The reports as a stakeholder opens them: Debian's headless Chromium (no browser download),
each page from file:// with the network blocked, for an English and a Chinese run of the tiny
demo. Checks: no console errors, no failed requests, no request to a network; every
table-of-contents link lands on a heading; every image decodes; no Chinese text drawn without a
Chinese font (and no chart glyph missing from matplotlib's fonts); at 1366×768 the first screen
shows the title, the as-of date, the KPI cards and the findings. Saves screenshots of the index
and one report in each language (to $CRMBOOK_SCREENSHOTS when set).

Skipped only when chromium is not installed on a developer's machine; CI installs it
(.ci/run) and fails here when it is missing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from tests.browser import chromium
from tests.conftest import crmbook, write_params

pytestmark = pytest.mark.slow

LANGUAGES = {"en": "Customer analytics (browser test)", "zh": "客户分析（浏览器测试）"}
MAX_REPORT_BYTES = 1_500_000


@pytest.fixture(scope="module")
def playwright_browser():
    if chromium.chromium_path() is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = chromium.launch(pw)
        yield browser
        browser.close()


@pytest.fixture(scope="module", params=sorted(LANGUAGES))
def run_folder(request, tmp_path_factory, demo_dir) -> Path:
    """A run of the tiny demo in the language."""
    language = request.param
    folder = tmp_path_factory.mktemp(f"browser_{language}")
    params = write_params(folder, demo_dir, **{"language: en ": f"language: {language} ",
                                               "title: Customer analytics (tiny test data)": f"title: {LANGUAGES[language]}"})
    result = crmbook("run", "--params", str(params), "--reports-dir", str(folder / "reports"))
    assert result.returncode == 0, result.stdout + result.stderr
    return (folder / "reports" / "latest").resolve()


@pytest.fixture(scope="module")
def pages(run_folder, playwright_browser, tmp_path_factory) -> dict[str, dict]:
    """Every HTML page of the run, opened once: what each check found."""
    language = re.search(r'<html lang="([a-z]+)', (run_folder / "index.html").read_text(encoding="utf-8"))[1]
    shots = Path(os.environ.get("CRMBOOK_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    found = {}
    for path in sorted(run_folder.glob("*.html")):
        page, check = chromium.new_page(playwright_browser)
        chromium.open_page(page, check, path)
        cdp = page.context.new_cdp_session(page)
        result = {"check": check, "images": chromium.broken_images(page), "first_screen": chromium.first_screen(page),
                  "glyphs": chromium.missing_glyphs(page, cdp), "language": language,
                  "image_count": page.evaluate("document.images.length")}
        if path.stem in ("index", "06_performance"):
            result["screenshot"] = chromium.screenshot(page, shots / f"{path.stem}_{language}.png")
        result["toc"] = chromium.toc_problems(page)
        found[path.name] = result
        page.context.close()
    return found


def test_every_report_of_the_run_is_opened(run_folder, pages):
    assert set(pages) == {"index.html", "01_ingestion.html", "02_cleaning.html", "03_segmentation.html", "04_clv.html",
                          "05_attribution.html", "06_performance.html"}


def test_no_console_error_no_failed_or_network_request(pages):
    for name, found in pages.items():
        check = found["check"]
        assert not check.console_errors, f"{name}: {check.console_errors}"
        assert not check.failed_requests, f"{name}: {check.failed_requests}"
        assert not check.network_requests, f"{name} asks the network for {check.network_requests}"


def test_every_image_decodes(pages):
    for name, found in pages.items():
        assert not found["images"], f"{name}: images that do not decode: {found['images']}"
    assert sum(found["image_count"] for found in pages.values()) >= 20  # the charts are images


def test_every_toc_link_lands_on_a_heading(pages):
    for name, found in pages.items():
        if name == "index.html":
            continue
        followed, problems = found["toc"]
        assert followed >= 3, f"{name}: a table of contents of {followed} links"
        assert not problems, f"{name}: {problems}"


def test_first_screen_shows_title_as_of_cards_and_findings(pages):
    height = chromium.VIEWPORT["height"]
    for name, found in pages.items():
        if name == "index.html":
            continue
        boxes = found["first_screen"]
        for item in ("title", "as_of", "cards", "findings"):
            assert boxes[item] is not None, f"{name} has no {item}"
            top, bottom = boxes[item]
            assert 0 <= top and bottom <= height, f"{name}: {item} spans {top:.0f}-{bottom:.0f}px, the screen is {height}px"


def test_no_missing_glyph_boxes(pages):
    checked = chinese = 0
    for name, found in pages.items():
        count, cjk, problems = found["glyphs"]
        checked, chinese = checked + count, chinese + cjk
        assert not problems, f"{name}: characters drawn as boxes: {problems[:3]}"
    if next(iter(pages.values()))["language"] == "zh":
        assert chinese > 100, f"only {chinese} elements with Chinese text: is the report in Chinese?"


def test_the_glyph_check_sees_boxes(playwright_browser, tmp_path):
    """The check itself: Chinese text passes, private-use characters (no font has them) do not."""
    page_file = tmp_path / "boxes.html"
    page_file.write_text('<!DOCTYPE html><html lang="zh-CN"><meta charset="utf-8"><body>'
                         "<p>中文：客户分析</p><p>&#xE000;&#xE001;</p></body></html>", encoding="utf-8")
    page, check = chromium.new_page(playwright_browser)
    chromium.open_page(page, check, page_file)
    count, cjk, problems = chromium.missing_glyphs(page, page.context.new_cdp_session(page))
    page.context.close()
    assert (count, cjk) == (2, 1)
    assert len(problems) == 1 and "U+E000" in problems[0]


def test_charts_have_every_glyph(run_folder):
    """matplotlib warns 'Glyph ... missing from font(s)' when a chart label has a character none of
    its fonts draws (an empty box in the PNG); the executed notebooks keep that warning."""
    for path in sorted((run_folder / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                       if o.get("output_type") == "stream")
        assert "missing from font" not in text, f"{path.name}: {re.findall(r'Glyph .*? missing from font.*', text)[:3]}"


def test_reports_are_small(run_folder):
    for path in sorted(run_folder.glob("*.html")):
        assert path.stat().st_size <= MAX_REPORT_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"


def test_screenshots_of_index_and_a_report(pages):
    from PIL import Image

    shots = [found["screenshot"] for found in pages.values() if "screenshot" in found]
    assert len(shots) == 2
    for shot in shots:
        with Image.open(shot) as image:
            assert image.size == (chromium.VIEWPORT["width"], chromium.VIEWPORT["height"])
