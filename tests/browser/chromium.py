"""Open crmbook reports in Debian's headless Chromium (no browser download) through the DevTools
protocol, with Playwright's Python client, and check what a reader would see.

`python -m tests.browser.chromium <run folder> <out folder>` saves the screenshots the README shows
(the index and one report, 1366×768) of a run folder.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

VIEWPORT = {"width": 1366, "height": 768}


def chromium_path() -> str | None:
    """Debian's chromium (CHROMIUM overrides), None when it is not installed."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass
class PageCheck:
    """What went wrong on one page, by kind (empty lists: nothing)."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)


def launch(playwright):
    """Headless Chromium from the system, network off except file:// (see `block_network`)."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium: install Debian's chromium package")
    return playwright.chromium.launch(executable_path=path, headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                            "--host-resolver-rules=MAP * ~NOTFOUND"])


def new_page(browser):
    """A 1366×768 page that records console errors, failed requests and every request to a
    network (which is refused): returns (page, PageCheck)."""
    context = browser.new_context(viewport=VIEWPORT, reduced_motion="reduce", service_workers="block")
    check = PageCheck(url="")
    context.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort("blockedbyclient"))
    page = context.new_page()
    page.on("console", lambda msg: check.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: check.console_errors.append(str(exc)))
    page.on("requestfailed", lambda req: check.failed_requests.append(f"{req.url} ({req.failure})"))
    page.on("request", lambda req: check.network_requests.append(req.url)
            if not req.url.startswith(("file:", "data:", "about:", "blob:")) else None)
    return page, check


def open_page(page, check: PageCheck, path: Path) -> None:
    check.url = path.as_uri()
    page.goto(check.url, wait_until="load")
    page.wait_for_load_state("networkidle")


def broken_images(page) -> list[str]:
    """Images that did not decode (their src, cut short)."""
    return page.evaluate("""async () => {
        const bad = [];
        for (const img of document.images) {
            try { await img.decode(); } catch (e) { bad.push(img.src.slice(0, 60)); continue; }
            if (!img.complete || img.naturalWidth === 0) bad.push(img.src.slice(0, 60));
        }
        return bad;
    }""")


def toc_problems(page) -> tuple[int, list[str]]:
    """Follow every table-of-contents link: it must name an element that is a heading, and after
    the click the heading must be in view. Returns (links followed, problems)."""
    links = page.eval_on_selector_all("nav.crm-toc ol a", "els => els.map(a => a.getAttribute('href'))")
    problems = []
    for href in links:
        target = page.evaluate("""href => {
            const el = href.startsWith('#') ? document.getElementById(decodeURIComponent(href.slice(1))) : null;
            return el ? el.tagName : null;
        }""", href)
        if target not in ("H1", "H2", "H3", "H4"):
            problems.append(f"{href} -> {target}")
            continue
        page.click(f"nav.crm-toc ol a[href='{href}']")
        top = page.evaluate("""href => document.getElementById(decodeURIComponent(href.slice(1))).getBoundingClientRect().top""", href)
        if not 0 <= top < VIEWPORT["height"] - 20:
            problems.append(f"{href}: heading at {top:.0f}px after the click")
        if page.evaluate("location.hash") != href:
            problems.append(f"{href}: location is {page.evaluate('location.hash')}")
    page.evaluate("window.scrollTo(0, 0)")
    return len(links), problems


def first_screen(page) -> dict[str, list[float] | None]:
    """Where the header items, the first KPI cards and the findings are (top, bottom in px) on the
    page as it opens; None when a report has no such element."""
    return page.evaluate("""() => {
        const box = el => { if (!el) return null; const r = el.getBoundingClientRect(); return [r.top, r.bottom]; };
        const cards = document.querySelector('.crm-body .crm-cards');
        return {
            title: box(document.querySelector('header h1')),
            as_of: box(document.querySelector('header .crm-asof')),
            cards: box(cards),
            findings: box(document.querySelector('.crm-body .crm-findings')),
        };
    }""")


@functools.cache
def _font_files() -> dict[str, tuple[str, int]]:
    """PostScript name -> (font file, index in a collection), from fontconfig (the fonts Chromium uses)."""
    listing = subprocess.run(["fc-list", "--format", "%{postscriptname}\t%{file}\t%{index}\n"],
                             capture_output=True, text=True, check=True).stdout
    files = {}
    for line in listing.splitlines():
        name, file, index = (line.split("\t") + ["", "", "0"])[:3]
        files.setdefault(name, (file, int(index.split(",")[0] or 0)))
    return files


@functools.cache
def _cmap(postscript_name: str) -> frozenset[int]:
    """The characters a font has glyphs for (empty when fontconfig does not know the font)."""
    from fontTools.ttLib import TTFont

    found = _font_files().get(postscript_name)
    if found is None:
        return frozenset()
    with TTFont(found[0], fontNumber=found[1], lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


def missing_glyphs(page, cdp) -> tuple[int, int, list[str]]:
    """Characters drawn as empty boxes: for every element whose own text has characters beyond
    ASCII, Chromium reports the fonts it drew them with (DevTools CSS.getPlatformFontsForNode);
    each of those characters must be in the character map of one of those fonts (fontTools) —
    a character no font has is drawn with a font that lacks it. Returns (elements checked,
    elements with Chinese text, problems)."""
    count, cjk = page.evaluate("""() => {
        const cjk = /[\\u3000-\\u303f\\u3400-\\u4dbf\\u4e00-\\u9fff\\uff00-\\uffef]/;
        let n = 0, c = 0;
        for (const el of document.body.querySelectorAll('*')) {
            if (el.closest('script, style, svg') || !el.getClientRects().length) continue;
            let text = '';
            for (const node of el.childNodes) if (node.nodeType === 3) text += node.textContent;
            const wide = [...new Set([...text].filter(ch => ch.codePointAt(0) > 126 && ch.trim()))];
            if (wide.length) { el.setAttribute('data-glyphs', wide.join('')); n++; if (cjk.test(text)) c++; }
        }
        return [n, c];
    }""")
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    problems = []
    for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-glyphs]"})["nodeIds"]:
        attrs = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]
        wanted = dict(zip(attrs[::2], attrs[1::2]))["data-glyphs"]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        drawable = frozenset().union(*(_cmap(f["postScriptName"]) for f in fonts if not f.get("isCustomFont")))
        missing = [ch for ch in wanted if ord(ch) not in drawable]
        if missing:
            names = sorted({f["familyName"] for f in fonts})
            problems.append(f"{''.join(missing)!r} (U+{ord(missing[0]):04X}) drawn with {names} that lack it")
    return count, cjk, problems


def screenshot(page, path: Path) -> Path:
    """The first screen (1366×768) as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    return path


def save_screenshots(run_dir: Path, out_dir: Path, report: str = "06_performance", suffix: str | None = None) -> list[Path]:
    """Screenshots of a run's index and one report: <out>/index_<lang>.png, <out>/<report>_<lang>.png."""
    from playwright.sync_api import sync_playwright

    language = suffix or re.search(r'<html lang="([a-z]+)', (run_dir / "index.html").read_text(encoding="utf-8"))[1]
    saved = []
    with sync_playwright() as pw:
        browser = launch(pw)
        for name in ("index", report):
            page, _ = new_page(browser)
            open_page(page, _, run_dir / f"{name}.html")
            saved.append(screenshot(page, out_dir / f"{name}_{language}.png"))
            page.context.close()
        browser.close()
    return saved


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m tests.browser.chromium <run folder> <out folder> [report]")
    for shot in save_screenshots(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4]):
        print(shot)
