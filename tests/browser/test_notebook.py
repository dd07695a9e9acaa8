"""A Trace inline in a notebook, as Jupyter would show it, drawn by real Chromium: the token chips
of `_repr_html_`, and `run.show()`'s sandboxed viewer with its charts, with no server at all."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_inline_views_draw_without_a_server(browser):
    import llmvis

    run = llmvis.trace("Name a colour.", temperature=0, max_new_tokens=4)
    page = browser.new_page()
    try:
        page.set_content(f"<html><body>{run._repr_html_()}{run.show('attention', layers=[0, 29]).html}</body></html>")
        assert page.locator(".llmvis-tok").count() == len(run.tokens)
        frame = page.frame_locator("iframe.llmvis-view")
        frame.locator("body[data-ready='true']").wait_for(timeout=60_000)
        assert frame.locator("#attention canvas, #attention svg").count() >= 1  # ECharts drew inside the sandbox
        assert frame.locator(".chip, [class*='tok']").count() >= len(run.tokens)
    finally:
        page.close()
