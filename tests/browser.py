"""Headless Chromium (Debian's package) driven by Playwright, for the dashboard and report tests.

Without /usr/bin/chromium these tests skip, except where BIRDTUNE_REQUIRE_BROWSER=1 (set by .ci/run,
which installs it): there a missing browser fails them.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("BIRDTUNE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# as root in a container, with no network: no sandbox, no background connections to Google's hosts
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "results" / "screenshots"  # CI keeps these as artifacts


def require_browser() -> None:
    if not Path(CHROMIUM).is_file():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("BIRDTUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def page(width: int = 1400, height: int = 900):
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot(pg, name: str, full_page: bool = False) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    pg.screenshot(path=str(path), full_page=full_page)
    return path


if __name__ == "__main__":  # python tests/browser.py PAGE_OR_FILE OUT.png [--full]: the README's screenshots
    import sys

    target = sys.argv[1] if "://" in sys.argv[1] else Path(sys.argv[1]).resolve().as_uri()
    with page(1200, 900) as pg:
        pg.goto(target)
        pg.wait_for_load_state("load")
        pg.screenshot(path=sys.argv[2], full_page="--full" in sys.argv)
    print(f"wrote {sys.argv[2]}")
