"""`llmvis serve --base-url /llmvis/`: the app under a path prefix, as JupyterHub's server proxy or
nginx pass it on. A real server (waitress, the default model, a token) is started with the prefix;
Chromium opens the URL it prints, the page draws a chart and generates a token, and every request
it makes stays under the prefix. Requests outside the prefix are JSON 404s."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from llmvis.web.app import parse_base_url
from tests.browser.conftest import READY_TIMEOUT_S, ROOT, VIEWPORT, _free_port

TOKEN = "prefix-test-token-1234"
PREFIX = "/llmvis"


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory):
    """`llmvis serve --base-url /llmvis/ --token ...` on a free port: (origin, the URL it printed)."""
    tmp = tmp_path_factory.mktemp("base-url")
    port = _free_port()
    out, err = tmp / "stdout.log", tmp / "stderr.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "LLMVIS_DATA_DIR": str(tmp / "data")}
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--base-url", "/llmvis/",
                                 "--token", TOKEN], cwd=ROOT, env=env, stdout=fo, stderr=fe)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not re.search(r"serving .* at (\S+)", out.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.3)
        printed = re.search(r"serving .* at (\S+)", out.read_text()).group(1)
        while True:  # the URL is printed just before waitress listens
            try:
                get(origin + PREFIX + "/api/model", auth=True)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
                time.sleep(0.3)
        yield origin, printed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, auth: bool = False):
    """(status, headers, body) without following redirects; HTTP errors are answers too."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"} if auth else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.browser
def test_the_printed_url_is_under_the_prefix(prefixed):
    origin, printed = prefixed
    assert printed == f"{origin}{PREFIX}/?token={TOKEN}"


@pytest.mark.browser
def test_only_the_prefix_is_served(prefixed):
    origin, _ = prefixed
    status, _, body = get(origin + PREFIX + "/api/model", auth=True)
    assert status == 200 and json.loads(body)["num_layers"] == 30
    status, _, body = get(origin + PREFIX + "/vendor/echarts.min.js", auth=True)
    assert status == 200 and len(body) > 500_000
    assert get(origin + PREFIX + "/api/model")[0] == 401  # the guard still stands behind the prefix
    for outside in ("/", "/api/model", "/vendor/echarts.min.js", "/static/js/main.js", "/llmvisx/api/model",
                    "/other/llmvis/api/model", "/api/model?x=/llmvis/"):
        status, headers, body = get(origin + outside, auth=True)
        assert status == 404 and headers["Content-Type"] == "application/json", outside
        answer = json.loads(body)
        assert answer["status"] == 404 and "serves under /llmvis/" in answer["error"], answer
    status, headers, _ = get(origin + PREFIX + "?run=abc")  # the bare prefix: to its page, query kept
    assert status == 308 and headers["Location"] == PREFIX + "/?run=abc"
    status, headers, _ = get(origin + PREFIX + f"/?token={TOKEN}&run=abc")  # the token link: into a cookie
    assert status == 303 and headers["Location"] == PREFIX + "/?run=abc"
    assert "Path=/" in headers["Set-Cookie"]


@pytest.mark.browser
def test_the_page_draws_and_generates_through_the_prefix(prefixed, browser):
    origin, printed = prefixed
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    requests, failed, errors = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(printed)
        assert page.url == f"{origin}{PREFIX}/"  # the token went into the cookie, out of the address bar
        page.wait_for_selector("body[data-ready='true']")
        page.get_by_test_id("prompt").fill("Say hi.")
        page.get_by_test_id("temperature").fill("0")
        page.get_by_test_id("max-new-tokens").fill("3")
        page.get_by_test_id("generate").click()
        page.wait_for_selector("[data-testid='token'][data-source='generated']", timeout=120_000)
        page.wait_for_selector("[data-testid='chart'] canvas", state="attached")  # ECharts from vendor/ drew
        assert page.evaluate("typeof echarts") == "object"
        page.wait_for_selector("#share-run:not([disabled])")
        with page.expect_download() as dl:
            page.get_by_test_id("share-run").click()
        assert urllib.parse.urlsplit(dl.value.url).path.startswith(PREFIX + "/api/runs/")
        assert b'id="llmvis-data"' in Path(dl.value.path()).read_bytes()
        ours = [u for u in requests if u.startswith(origin)]
        assert any("/api/generate" in u for u in ours) and any(u.endswith("/vendor/echarts.min.js") for u in ours)
        outside = [u for u in ours if not urllib.parse.urlsplit(u).path.startswith(PREFIX + "/")]
        assert not outside, outside  # every URL of the page is relative: nothing left the prefix
        assert not failed and not errors, (failed, errors)
    finally:
        context.close()


def test_the_flag_is_checked():
    assert parse_base_url("/llmvis/") == parse_base_url("/llmvis") == "/llmvis"
    assert parse_base_url("/user/ann/proxy/5000/") == "/user/ann/proxy/5000"
    assert parse_base_url("") == parse_base_url("/") == ""
    for bad in ("llmvis", "/a//b", "/a/../b", "/./x", "/a b", "/<x>/", "//evil.example/", "/a?b"):
        with pytest.raises(ValueError, match="must be a path"):
            parse_base_url(bad)
    done = subprocess.run([sys.executable, "-m", "llmvis", "serve", "--base-url", "llmvis/"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "argument --base-url: must be a path such as /llmvis/" in done.stderr
    helped = subprocess.run([sys.executable, "-m", "llmvis", "serve", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert "--base-url PATH" in helped.stdout and "JupyterHub" in helped.stdout


PAGE_JS = ROOT / "llmvis" / "web" / "static" / "js"


def test_the_page_names_no_absolute_url():
    """The page's own URLs are relative (resolved against its folder), so it works under any prefix."""
    page = (ROOT / "llmvis" / "web" / "templates" / "index.html").read_text()
    assert re.findall(r'(?:src|href|action)="(/[^"]*)"', page) == []
    for path in sorted(PAGE_JS.rglob("*.js")):
        text = path.read_text()
        if path.name == "api.js":  # its paths are joined to the client's base, "." in main.js
            continue
        assert not re.findall(r"""[`'"]/(?:api|static|vendor)\b""", text), path
    assert "createApi({ base: '.' })" in (PAGE_JS / "main.js").read_text()
