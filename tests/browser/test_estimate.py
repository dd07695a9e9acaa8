"""Before a run, the page shows an estimate of its memory, updated as the form changes."""
import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_memory_estimate_follows_the_form(page):
    est = page.get_by_test_id("estimate")
    page.get_by_test_id("prompt").fill("How much memory will this take?")
    page.get_by_test_id("max-new-tokens").fill("8")
    page.get_by_test_id("max-new-tokens").dispatch_event("input")
    expect(est).to_be_visible()
    expect(est).to_have_attribute("data-fits", "true")
    first = est.text_content()
    tokens_before = int(re.search(r"(\d+) tokens", first).group(1))
    page.get_by_test_id("max-new-tokens").fill("512")
    page.get_by_test_id("max-new-tokens").dispatch_event("input")
    expect(est).to_contain_text(f"{tokens_before - 8 + 512} tokens")
    assert "MB" in est.text_content() or "KB" in est.text_content()
    page.get_by_test_id("prompt").fill("")
    page.get_by_test_id("prompt").dispatch_event("input")
    expect(est).to_be_hidden()
