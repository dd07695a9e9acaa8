"""Where the page's files are: static assets, the page template, the share viewer, and ECharts
from the npm package installed beside the project (never a CDN)."""
from __future__ import annotations

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"
SHARE_DIR = STATIC_DIR / "share"
PROJECT_DIR = WEB_DIR.parent.parent  # the checkout (or site-packages) that holds the llmvis package


VENDOR_DIR = STATIC_DIR / "vendor"  # filled by the wheel's build step (setup.py); absent in a checkout


def echarts_path() -> Path | None:
    """echarts.min.js: the copy a built wheel carries, else node_modules beside the project or in
    the working directory."""
    bundled = VENDOR_DIR / "echarts.min.js"
    if bundled.is_file():
        return bundled
    for root in (PROJECT_DIR, Path.cwd()):
        p = root / "node_modules" / "echarts" / "dist" / "echarts.min.js"
        if p.is_file():
            return p
    return None
