"""Who may talk to the dashboard: the bind address, the Host header and an access token.

- ``check_bind``: ``--host`` must be an address of this machine's kind (an IP literal or a name that
  resolves); a bind beyond loopback is refused without a token and warned about with one.
- ``HttpGuard`` (WSGI middleware): a request whose Host header names anything but the bound names
  (``localhost``, ``127.0.0.1``, ``[::1]``, the ``--host`` value, ``--allow-host`` names; on a
  wildcard bind also this machine's host names and any IP literal) gets 400: a DNS-rebinding page
  (``evil.example`` resolving to 127.0.0.1) is refused even on the default loopback bind. With a
  token every route but ``/health`` needs it: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN``
  once in a browser (it sets an HttpOnly, SameSite=Strict cookie that the page's requests carry).
- ``server_limits``: waitress's connection limit and idle timeout. Its defaults (100 connections,
  30 s) let 100 idle sockets lock the dashboard and /health out for 30 s; here the limit is 1000
  (bounded by the open-file limit) and an idle connection is closed after 10 s.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import resource
import socket
from http.cookies import SimpleCookie
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from edge_foct.runtime.errors import EdgeFoctError

log = logging.getLogger("edge_foct.serve")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
COOKIE = "edge_foct_token"
TOKEN_ENV = "EDGE_FOCT_TOKEN"
OPEN_ROUTES = frozenset({"/health"})  # liveness probes need no token (it tells ok/status/frame count only)
CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT_S = 10
CLEANUP_INTERVAL_S = 2

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() == "localhost" if ip is None else ip.is_loopback


def is_wildcard(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")


def check_token(token: str | None) -> None:
    """A token goes into a header and a cookie: 8-256 characters of A-Z a-z 0-9 . _ ~ + / = -."""
    if token is not None and not TOKEN_RE.fullmatch(token):
        raise EdgeFoctError(f"--token / ${TOKEN_ENV}: give 8 to 256 characters of A-Z a-z 0-9 . _ ~ + / = - "
                            f"(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`)")


def check_bind(host: str, token: str | None) -> str | None:
    """Refuse a ``--host`` that is no address (one line), or a non-loopback one without a token;
    returns the warning to log for a non-loopback bind (None on loopback)."""
    check_token(token)
    if _ip(host) is None:
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError) as e:
            raise EdgeFoctError(f"--host {host!r}: not an IP address or a name this machine resolves ({e}); "
                                f"use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    if is_loopback(host):
        return None
    if not token:
        raise EdgeFoctError(f"--host {host} serves the dashboard beyond this machine: set an access token "
                            f"(--token TOKEN or ${TOKEN_ENV}), or keep the default --host 127.0.0.1")
    where = "every interface" if is_wildcard(host) else host
    return (f"dashboard listens on {where}: anyone on the network who has the token sees the line; "
            f"open it with ?token=... once, or send 'Authorization: Bearer ...'")


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    names = set(LOOPBACK_NAMES) | {host.strip("[]").lower()} | {e.strip("[]").lower() for e in extra}
    if is_wildcard(host):
        fqdn = socket.getfqdn()
        names |= {socket.gethostname().lower(), fqdn.lower()}
    return frozenset(names)


def host_header_name(value: str) -> str:
    """'Name:8008' / '[::1]:8008' / 'name' -> 'name' / '::1' (lower case, no trailing dot)."""
    value = value.strip()
    if value.startswith("["):
        name = value[1:value.find("]")] if "]" in value else value[1:]
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.rstrip(".").lower()


def server_limits() -> dict[str, int]:
    """waitress settings: connection_limit (raised soft open-file limit permitting), channel_timeout,
    cleanup_interval."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTION_LIMIT + 256  # + the files, pipes and sockets the rest of the app holds
    if soft != resource.RLIM_INFINITY and soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    limit = CONNECTION_LIMIT if soft == resource.RLIM_INFINITY else max(16, min(CONNECTION_LIMIT, soft - 256))
    return {"connection_limit": limit, "channel_timeout": CHANNEL_TIMEOUT_S, "cleanup_interval": CLEANUP_INTERVAL_S}


class HttpGuard:
    """WSGI middleware: Host header check, then the token (when one is set)."""

    def __init__(self, app: Callable, host: str, token: str | None = None, allow_hosts: Iterable[str] = ()) -> None:
        self.app, self.token = app, token or None
        self.names = allowed_host_names(host, allow_hosts)
        self.any_ip = is_wildcard(host)

    def host_ok(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 without Host: no browser sends that, so no rebinding either
            return True
        name = host_header_name(header)
        return name in self.names or (self.any_ip and _ip(name) is not None)

    def _token_of(self, environ: dict[str, Any]) -> tuple[str | None, bool]:
        """(token offered, offered in the query string)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        q = parse_qs(environ.get("QUERY_STRING", ""))
        if "token" in q:
            return q["token"][0], True
        cookie = SimpleCookie()
        try:
            cookie.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # a malformed Cookie header is no token
            return None, False
        return (cookie[COOKIE].value if COOKIE in cookie else None), False

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.host_ok(environ.get("HTTP_HOST")):
            return _deny(start_response, "400 Bad Request",
                         f"host {environ.get('HTTP_HOST')!r} is not a name this dashboard serves")
        if self.token is None or environ.get("PATH_INFO", "/") in OPEN_ROUTES:
            return self.app(environ, start_response)
        offered, in_query = self._token_of(environ)
        if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
            return _deny(start_response, "401 Unauthorized",
                         "token required: open the page with ?token=TOKEN or send 'Authorization: Bearer TOKEN'",
                         [("WWW-Authenticate", 'Bearer realm="edge-foct"')])
        if not in_query:
            return self.app(environ, start_response)

        def with_cookie(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            headers = headers + [("Set-Cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")]
            return start_response(status, headers, *exc)

        return self.app(environ, with_cookie)


def _deny(start_response: StartResponse, status: str, message: str,
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = json.dumps({"error": message}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), *(extra or [])])
    return [body]
