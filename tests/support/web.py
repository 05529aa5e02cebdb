"""Browser-test helpers: Debian's Chromium driven by Playwright, and where screenshots go."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: The system browser (Playwright's own download cannot work on these machines).
CHROMIUM = "/usr/bin/chromium"
#: Set to a folder (``docs/web``) to keep the screenshots the tests take of each screen.
SHOTS_ENV = "CAESAR_REST_WEB_SHOTS"


def require_chromium() -> None:
    """Skip without Chromium or Playwright, except under CI (``CI=true``), where it fails."""
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        why = "browser tests need " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@contextmanager
def chromium() -> Iterator[Any]:
    """One headless Chromium (Playwright's sync API), for a module's tests to share."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, width: int = 1100, height: int = 800, init: str | None = None) -> Any:
    """A page in a fresh context (no cookies, no storage) of ``browser``.

    ``init`` is a script run before the page's own (``window.caesarSettings = {...}``).
    """
    context = browser.new_context(viewport={"width": width, "height": height})
    if init:
        context.add_init_script(init)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


@contextmanager
def browser_page(width: int = 1100, height: int = 800) -> Iterator[Any]:
    """A headless Chromium page of its own (a browser started for it)."""
    with chromium() as browser:
        yield new_page(browser, width, height)


def shot_path(tmp: Path, name: str) -> Path:
    """Where the screenshot ``name`` goes: ``$CAESAR_REST_WEB_SHOTS`` when set, else ``tmp``."""
    folder = Path(os.environ.get(SHOTS_ENV) or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"
