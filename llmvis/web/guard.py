"""Who may talk to the server: the Host allowlist (DNS rebinding), the same-origin rule for every
request that changes state (cross-site forms, no-cors fetches, beacons), and the token.

Checked before any route runs; a refusal is a 401 or 403 in the one error shape. The page itself
sends same-origin requests with its cookie, so it works unchanged; curl and scripts send no
Origin and no cookie, and pass (with `Authorization: Bearer <token>` when a token is set).
"""
from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlencode

from flask import Flask, redirect, request

from llmvis.core.errors import Forbidden, Unauthorized

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
TOKEN_COOKIE = "llmvis_token"
TOKEN_PARAM = "token"


def host_name(host_header: str) -> str:
    """The name part of a Host header: `[::1]:5000` -> `::1`, `Example.org:80` -> `example.org`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_host_names(bind_host: str, extra: tuple[str, ...] = ()) -> set[str]:
    """The loopback names, the bound host (unless it is a wildcard) and the --allow-host names."""
    names = set(LOOPBACK_NAMES)
    bound = host_name(bind_host) if bind_host else ""
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound)
    names.update(host_name(h) for h in extra)
    return names


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an Origin header names this server as the request reached it (scheme://Host)."""
    origin = origin.strip().lower()
    for scheme in ("http://", "https://"):
        if origin.startswith(scheme):
            return origin[len(scheme):].rstrip("/") == host_header.strip().lower()
    return False  # "null" (file://, sandboxed frames) and anything else


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def request_token() -> str | None:
    """The token a request carries: `Authorization: Bearer`, then the cookie, then `?token=`."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.cookies.get(TOKEN_COOKIE) or request.args.get(TOKEN_PARAM)


def install_guard(app: Flask, bind_host: str, allowed_hosts: tuple[str, ...], token: str | None) -> None:
    """Refuse other hosts, cross-site state changes and (with a token) unauthenticated requests."""
    names = allowed_host_names(bind_host, allowed_hosts)
    any_host = "*" in allowed_hosts

    @app.before_request
    def guard():
        host = request.headers.get("Host", "")
        if not any_host and host_name(host) not in names:
            raise Forbidden(f"host: {host[:100]!r} is not served here (DNS rebinding guard); "
                            "start with --allow-host NAME to serve it")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None:
                if not same_origin(origin, host):
                    raise Forbidden(f"origin: {origin[:100]!r} is another site; only this page may change state")
            elif request.cookies:
                raise Forbidden("origin: a request with cookies must say its Origin")
            site = request.headers.get("Sec-Fetch-Site")
            if site is not None and site not in ("same-origin", "none"):
                raise Forbidden(f"origin: a {site[:20]} request may not change state")
        if token is not None:
            if not token_matches(request_token(), token):
                raise Unauthorized("token: this server needs its token: open the URL it printed "
                                   "(…/?token=…) or send Authorization: Bearer <token>")
            if request.method == "GET" and request.path == "/" and TOKEN_PARAM in request.args:
                # the page's link: keep the token in an HttpOnly cookie, and out of the address bar
                rest = [(k, v) for k, v in request.args.items(multi=True) if k != TOKEN_PARAM]
                page = request.script_root + "/"  # under --base-url, the prefix's own page
                resp = redirect(page + ("?" + urlencode(rest) if rest else ""), code=303)
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
                return resp
        return None
