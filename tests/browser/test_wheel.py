"""A built wheel works on its own: it carries ECharts (copied from the npm package at build time)
and its license notice, and once installed outside the project folder `llmvis serve`, started
from another directory, serves /vendor/echarts.min.js and a page whose charts draw.

The wheel is the one `python -m build` makes: built from the sdist, unpacked away from the
checkout and its node_modules (tests/test_sdist.py checks the sdist itself)."""
from __future__ import annotations

import os
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.browser.conftest import ROOT
from tests.test_sdist import build_sdist, wheel_from_sdist

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, built from this checkout's sdist and installed (--no-deps) into a folder of its
    own; the dependencies come from the test's environment, the llmvis package only from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = wheel_from_sdist(build_sdist(tmp), tmp)
    target = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return wheel, target, tmp


def test_the_wheel_carries_echarts_and_its_license(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    vendor = "llmvis/web/static/vendor/"
    assert {vendor + "echarts.min.js", vendor + "ECHARTS-LICENSE.txt", vendor + "ECHARTS-NOTICE.txt"} <= names
    assert zipfile.ZipFile(wheel).read(vendor + "echarts.min.js") == \
        (ROOT / "node_modules" / "echarts" / "dist" / "echarts.min.js").read_bytes()
    assert "llmvis/web/templates/index.html" in names and "llmvis/web/static/js/main.js" in names


def test_an_installed_wheel_serves_the_page_with_charts(installed, browser):
    _, target, tmp = installed
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    port = _free_port()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(target), *deps]),
                        "LLMVIS_DATA_DIR": str(tmp / "data")}
    log = tmp / "server.log"
    with open(log, "w") as fh:  # -S: no site-packages of the checkout's venv (its editable llmvis) on the path
        proc = subprocess.Popen([sys.executable, "-S", "-m", "llmvis", "serve", "--port", str(port)],
                                cwd=elsewhere, env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/api/model", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        probe = subprocess.run([sys.executable, "-S", "-c", "import llmvis, sys; print(llmvis.__file__)"],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
        assert probe.stdout.strip().startswith(str(target)), probe  # the wheel's copy, not the checkout
        with urllib.request.urlopen(base + "/vendor/echarts.min.js", timeout=30) as resp:
            assert resp.status == 200 and len(resp.read()) > 500_000
        page = browser.new_page()
        try:
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='true']", timeout=60_000)
            page.get_by_test_id("prompt").fill("Say hi.")
            page.get_by_test_id("temperature").fill("0")
            page.get_by_test_id("max-new-tokens").fill("3")
            page.get_by_test_id("generate").click()
            page.wait_for_selector("[data-testid='token'][data-source='generated']", timeout=120_000)
            page.wait_for_selector("[data-testid='chart'] canvas, [data-testid='chart'] svg", state="attached",
                                   timeout=60_000)  # ECharts drew (the page's CSP forbids eval-based waits)
            assert page.evaluate("typeof echarts") == "object"
        finally:
            page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
