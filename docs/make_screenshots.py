"""Screenshots of the comparison page and a single report for the README, run by hand:

    .venv/bin/python docs/make_screenshots.py

It audits the two models of tests/test_compare_html.py (BERT-like: six weights; ALBERT-like: one
weight applied six times), renders the pages, and saves PNGs next to this file with Debian's
chromium (never a downloaded browser). Each picture is clipped to the part a reader needs, so it
stays under 300 KB.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import auditor  # noqa: E402
from auditor.comparison import compare  # noqa: E402
from auditor.report.html import render_comparison_html, render_html  # noqa: E402
from conftest import CHROMIUM_ARGS  # noqa: E402
from test_compare_html import _layers_model  # noqa: E402

MAX_BYTES = 300_000


def _bottom(page: Any, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return float(box["y"] + box["height"])


def _top(page: Any, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return float(box["y"])


def _shot(browser: Any, html: Path, out: Path, width: int, start: str | None, end: str) -> None:
    """The page at ``width`` px from the top of ``start`` (the page's top when None) to the bottom of ``end``."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(html.as_uri(), wait_until="load")
        y0 = max(_top(page, start) - 12, 0) if start else 0
        y1 = _bottom(page, end) + 12
        body = page.locator("body").bounding_box()  # the page's column (max-width), without the margins
        assert body is not None
        x0, x1 = max(body["x"], 0), min(body["x"] + body["width"], width)
        page.screenshot(path=str(out), full_page=True, clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})
    finally:
        page.close()
    size = out.stat().st_size
    print(f"{out.relative_to(ROOT)}: page {width} px wide, {size / 1024:.0f} KiB")
    if size > MAX_BYTES:
        raise SystemExit(f"{out.name} is {size} bytes, over {MAX_BYTES}: clip it shorter")


def main() -> None:
    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("chromium is not installed (Debian's package)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # the pages name the models as given: short relative paths read better
        bert = auditor.audit(_layers_model(Path("bert-like.onnx"), shared=False))
        albert = auditor.audit(_layers_model(Path("albert-like.onnx"), shared=True))
        compare_html, report_html = Path(work, "compare.html"), Path(work, "report.html")
        compare_html.write_text(render_comparison_html(compare([bert, albert])), encoding="utf-8")
        report_html.write_text(render_html(albert), encoding="utf-8")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            try:
                _shot(browser, compare_html, DOCS / "compare-1280.png", 1280, "#findings", "#charts .ratio-charts")
                _shot(browser, compare_html, DOCS / "compare-390.png", 390, "#ratios", "#charts .ratio-charts")
                _shot(browser, report_html, DOCS / "report-390.png", 390, None, "#findings")
            finally:
                browser.close()


if __name__ == "__main__":
    main()
