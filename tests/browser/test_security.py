"""Hostile text is only ever shown as text, and the page talks to no host but its own."""
from __future__ import annotations

from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from test_page import READABLE_JS, generate, rendered, wait_rendered

pytestmark = pytest.mark.browser

HOSTILE = [
    '</script><script>window.__pwned=1</script>',
    '<img src=x onerror="window.__pwned=2">',
    '<a href="javascript:window.__pwned=3">click me</a> [link](javascript:window.__pwned=4)',
    'abc \u202egnp.exe\u202c and zero\u200bwidth\u200djoin\ufeff',
]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_prompts_are_inert_text(page, evil):
    generate(page, evil, max_new_tokens=2)
    shown = page.evaluate(READABLE_JS)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#conversation a, #conversation img, #conversation script").count() == 0
    assert page.locator("script:not([src])").count() == 0  # nothing inline was ever added
    if "\u202e" in evil:
        # invisible and bidi control characters are shown as code points, never applied
        for cp in ("U+202E", "U+202C", "U+200B", "U+200D"):
            assert cp in shown
        assert "\u202e" not in shown
    else:
        assert evil in shown
    for chip in page.locator("[data-testid='token']").all()[:3]:
        chip.click()
    page.get_by_test_id("tab-probs").click()
    wait_rendered(page, "probs")
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_page_works_with_every_other_host_blocked(browser, server):
    """Block every request that is not to the app's own origin; the page must still work fully."""
    own = urlparse(server).netloc
    foreign: list[str] = []
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")

    def gate(route):
        host = urlparse(route.request.url).netloc
        if host == own or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready='true']")
    generate(page, "Say hello.", max_new_tokens=3)
    for tab in ("probs", "entropy", "similarity", "projection", "attention"):
        before = rendered(page)
        page.get_by_test_id(f"tab-{tab}").click()
        wait_rendered(page, tab, before)
    expect(page.locator("[data-testid='token']").first).to_be_visible()
    context.close()
    assert foreign == [], f"the page asked foreign hosts: {foreign}"
    assert not errors, errors
