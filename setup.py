"""Build step: put ECharts (from the npm package, never a CDN, never committed) into the wheel.

`pip wheel .`, `python -m build` and `pip install .` copy `node_modules/echarts/dist/echarts.min.js`
and its LICENSE and NOTICE into `llmvis/web/static/vendor/` of the build, so an installed wheel
serves charts with no npm and no project folder. Run `npm ci` first; the build fails without it.
The sdist carries the three files in that folder, so a wheel built from the sdist (what
`python -m build` does) takes them from there. Everything else about the package is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
ECHARTS = ROOT / "node_modules" / "echarts"
CARRIED = ROOT / "llmvis" / "web" / "static" / "vendor"  # in an unpacked sdist; absent in a checkout
VENDOR_FILES = {"echarts.min.js": ECHARTS / "dist" / "echarts.min.js",
                "ECHARTS-LICENSE.txt": ECHARTS / "LICENSE", "ECHARTS-NOTICE.txt": ECHARTS / "NOTICE"}


def vendor_into(package_root: Path) -> None:
    target = package_root / "llmvis" / "web" / "static" / "vendor"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in VENDOR_FILES.items():
        if not source.is_file():
            source = CARRIED / name  # building from an sdist: no node_modules, the file came with it
        if not source.is_file():
            raise SystemExit(f"error: {VENDOR_FILES[name]} is missing: run `npm ci` before building llmvis")
        if source.resolve() != (target / name).resolve():
            (target / name).write_bytes(source.read_bytes())


class BuildPyWithECharts(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):  # `pip install -e .` serves node_modules directly
            vendor_into(Path(self.build_lib))


class SdistWithECharts(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        vendor_into(Path(base_dir))  # an sdist built elsewhere has no node_modules: carry the file


setup(cmdclass={"build_py": BuildPyWithECharts, "sdist": SdistWithECharts})
