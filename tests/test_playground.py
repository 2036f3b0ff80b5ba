"""The playground page in headless Chromium (Debian's, driven by Playwright): type, click, see a completion."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serve_util import start_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # root in CI; the page is our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine has no network: no update or sync calls
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page_url(tiny_run: Path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("PYCPILOT_REQUIRE_BROWSER"):  # make test installs it: missing there is a failure
            pytest.fail(f"Chromium is not at {CHROMIUM} (make test installs Debian's chromium)")
        pytest.skip("no Chromium here (make test installs Debian's chromium)")
    proc, base = start_process(tiny_run)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_type_click_and_see_a_completion(page_url: str, tiny_run: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from pycpilot.generate import Completer

    prompt = "class Store:\n    def __init__(self, size):\n"
    want = Completer(tiny_run).complete(prompt, max_new_tokens=20, scope="block", heal=True).completions[0].text
    assert want  # the page must show something
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(page_url + "/")
            expect(page.locator("#model")).to_have_text("pycpilot-gmodel")
            code = page.locator("#code")
            code.fill("")
            code.type(prompt)  # the cursor ends after the prompt: nothing after it, no suffix
            page.fill("#max_tokens", "20")
            page.select_option("#scope", "block")
            page.click("#complete")
            expect(page.locator("#status")).to_contain_text(" ms", timeout=30_000)
            assert page.locator("#preview .new").text_content() == want
            assert "error" not in (page.locator("#status").get_attribute("class") or "")
            page.click("#accept")
            assert code.input_value() == prompt + want
            page.screenshot(path=str(tmp_path / "playground.png"))
            # A bad setting shows the server's message, not a broken page.
            page.fill("#max_tokens", "0")
            page.click("#complete")
            expect(page.locator("#status")).to_contain_text("max_tokens must be at least 1")
        finally:
            browser.close()
