"""Driving Debian's chromium with Playwright for the console's browser tests (nothing is downloaded: the browser is
the system's `/usr/bin/chromium`, installed by `.ci/run` with apt-get; `playwright install` is never run)."""

from __future__ import annotations

import shutil
from typing import Any, Iterator

import pytest

CHROMIUM_PATHS = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    for name in CHROMIUM_PATHS:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch() -> Iterator[Any]:
    """A headless chromium, or a skip that says why there is none."""
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on this machine: `apt-get install chromium` (.ci/run does it when missing)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """Console errors, uncaught exceptions and dialogs (an injected script's alert) seen by a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.accept_confirms = True
        page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm" and self.accept_confirms:
            dialog.accept()
        else:
            dialog.dismiss()
