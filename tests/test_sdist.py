"""`python -m build` makes an sdist that carries ECharts (echarts.min.js, its LICENSE and NOTICE,
copied from the npm package at build time), and a wheel built from that sdist alone, unpacked far
from the checkout and its node_modules, carries them too. tests/browser/test_wheel.py installs the
wheel built this way and serves the page from it.

Both builds use --no-isolation (the pinned setuptools of the test environment; no index needed)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ECHARTS = ROOT / "node_modules" / "echarts"
VENDOR = "llmvis/web/static/vendor/"
CARRIED = {"echarts.min.js": ECHARTS / "dist" / "echarts.min.js", "ECHARTS-LICENSE.txt": ECHARTS / "LICENSE",
           "ECHARTS-NOTICE.txt": ECHARTS / "NOTICE"}


def _build(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "build", "--no-isolation", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def build_sdist(dest: Path) -> Path:
    """`python -m build --sdist` of this checkout into dest; the .tar.gz."""
    done = _build(["--sdist", "-o", str(dest), str(ROOT)], dest)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return next(dest.glob("llmvis-*.tar.gz"))


def unpack(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    return next(p for p in dest.iterdir() if p.is_dir() and p.name.startswith("llmvis-"))


def wheel_from_sdist(sdist: Path, dest: Path) -> Path:
    """The wheel `python -m build --wheel` makes from the unpacked sdist alone (no node_modules there)."""
    src = unpack(sdist, dest / "src")
    assert not (src / "node_modules").exists() and not (src.parent.parent / "node_modules").exists()
    done = _build(["--wheel", "-o", str(dest / "dist"), str(src)], dest)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return next((dest / "dist").glob("llmvis-*.whl"))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    return build_sdist(tmp_path_factory.mktemp("sdist"))


def test_the_sdist_carries_echarts_and_its_license_notice(sdist):
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        for name, source in CARRIED.items():
            assert VENDOR + name in members, sorted(members)[:40]
            assert tar.extractfile(members[VENDOR + name]).read() == source.read_bytes(), name
        assert {"setup.py", "pyproject.toml", "llmvis/web/templates/index.html", "llmvis/web/static/js/main.js",
                "llmvis/web/static/share/viewer.js"} <= set(members)
        assert not any(n.startswith(("node_modules/", ".venv/")) for n in members)  # ECharts alone, copied
    assert b"Apache License" in CARRIED["ECHARTS-LICENSE.txt"].read_bytes()


def test_a_wheel_built_from_the_sdist_alone_carries_echarts(sdist, tmp_path):
    wheel = wheel_from_sdist(sdist, tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        for name, source in CARRIED.items():
            assert whl.read(VENDOR + name) == source.read_bytes(), name
        assert "llmvis/web/templates/index.html" in whl.namelist()


def test_a_build_without_echarts_fails_in_one_line(sdist, tmp_path):
    """An unpacked sdist whose vendor folder is gone, far from any node_modules: the build says what to do."""
    src = unpack(sdist, tmp_path / "src")
    shutil.rmtree(src / VENDOR)
    done = _build(["--wheel", "-o", str(tmp_path / "dist"), str(src)], tmp_path)
    assert done.returncode != 0
    assert "echarts.min.js is missing: run `npm ci` before building llmvis" in done.stdout + done.stderr
    assert not list(tmp_path.glob("dist/*.whl"))
