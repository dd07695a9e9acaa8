"""Browser-test fixtures: the real server on a free port, and headless Chromium (Debian's build).

The server runs `python -m llmvis serve` with the embedded default model, exactly as a user
would start it. If it fails to come up, the error carries its stderr.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 1000}
SCREENSHOT_DIR = ROOT / "artifacts" / "screenshots"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("LLMVIS_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


@pytest.fixture(scope="session")
def server():
    """Start `llmvis serve` on a free port; yield its base URL; stop it at the end."""
    port = _free_port()
    logdir = Path(tempfile.mkdtemp(prefix="llmvis-browser-"))
    out_path, err_path = logdir / "stdout.log", logdir / "stderr.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "LLMVIS_DATA_DIR": str(logdir / "data")}  # run history in a temp folder, never the user's
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmvis", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = "no answer yet"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llmvis serve exited with code {proc.returncode} before it was ready.\n"
                    f"--- stderr ---\n{_tail(err_path)}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/model", timeout=2) as resp:
                    info = json.load(resp)
                if info.get("num_layers"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llmvis serve was not ready after {READY_TIMEOUT_S} s ({last_error}).\n"
                    f"--- stderr ---\n{_tail(err_path)}"
                )
            try:  # wait for the process to exit, or a quarter second, whichever comes first
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium from the system (Playwright cannot download browsers here)."""
    path = _chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (make chromium, or set LLMVIS_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    """A fresh English page at the app, ready (model info loaded). Fails on uncaught JS errors."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    console_errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        lambda msg: console_errors.append(msg.text)
        if msg.type == "error" and "Failed to load resource" not in msg.text
        else None,
    )
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready='true']")
    pg.base_url = server
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not console_errors, f"console errors: {console_errors}"


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR
