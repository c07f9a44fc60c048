"""What every request to ``latentfarm serve`` passes before any route sees it, and what every answer carries.

In this order:

1. **Host.** Only the host names of ``Settings.allowed_hosts`` are answered; by default, without a token the
   loopback names (127.0.0.1, localhost, [::1], any port), with a token any. A web page whose own domain was
   made to resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host and gets a 400.
2. **Origin.** A request other than GET and HEAD that a browser sent from another origin (``Sec-Fetch-Site``
   other than same-origin or none, or an ``Origin`` other than this server's host:port) is refused with a 403: no
   page of another site, nor of another port of this machine, can submit or cancel (see ``from_here``). A
   request without these headers (curl, scripts) goes on.
3. **Token.** With ``LATENTFARM_API_TOKEN`` set, every route needs it, except the login page and the static
   files (a style sheet, a script and an icon: no data): ``Authorization: Bearer <token>``, or the dashboard's
   session cookie (set by ``POST /login``). Without it the API and ``/openapi.json`` answer 401 and a page
   redirects to ``/login``. A write signed in only by the cookie must show it comes from this server's pages.

Every answer, refusals and errors included, carries ``SECURITY_HEADERS``: the Content-Security-Policy allows
nothing but this server's own files and no framing, so the dashboard has no inline script or style.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ANY_HOST = "*"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SESSION_COOKIE = "latentfarm_session"
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", CSP),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
NEEDS_BEARER = "this needs a bearer token: send 'Authorization: Bearer <LATENTFARM_API_TOKEN>'"
_PUBLIC = ("/login", "/logout")
_SESSION_MESSAGE = b"latentfarm dashboard session v1"


def session_value(token: str) -> str:
    """The session cookie's value: an HMAC of a fixed message keyed by the token, so the cookie proves the token
    was given without holding it (and changing the token signs every browser out)."""
    return hmac.new(token.encode(), _SESSION_MESSAGE, hashlib.sha256).hexdigest()


def allowed_hosts(configured: tuple[str, ...] | None, token: str | None) -> frozenset[str] | None:
    """The host names answered (lower case, no brackets), or None for any."""
    if configured is None:
        return None if token else frozenset(LOOPBACK_HOSTS)
    names = frozenset(h.strip().lower().strip("[]") for h in configured if h.strip())
    return None if ANY_HOST in names else names


def host_name(host: str) -> str:
    """``Host`` without its port and brackets, lower case: ``[::1]:8080`` is ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def same_origin(origin: str, host: str) -> bool:
    """Whether ``Origin`` names this server as the browser reached it (its ``Host``). The scheme is not compared:
    behind a proxy that ends TLS the server sees http for an https origin."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return False
    default = ":80" if parts.scheme == "http" else ":443"
    return parts.netloc.lower().removesuffix(default) == host.strip().lower().removesuffix(default)


def from_here(fetch_site: str | None, origin: str | None, host: str, strict: bool) -> bool:
    """Whether a request comes from this server's own pages, or (unless ``strict``) from no browser page at all.

    ``Sec-Fetch-Site`` (sent by every current browser) decides when present: same-origin, or none (the user's own
    action). A form on a page with ``Referrer-Policy: no-referrer`` sends ``Origin: null`` (as a sandboxed frame
    does), so null counts only beside ``Sec-Fetch-Site: same-origin``. Any other Origin must be this server's.
    Without either header (curl, scripts) the request is no browser's: allowed unless ``strict``."""
    if origin is not None and origin != "null" and not same_origin(origin, host):
        return False
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    if origin is None:
        return not strict
    return origin != "null"


@dataclass(frozen=True)
class Credentials:
    """What a request offers: the ``Authorization`` header (None when absent; its bearer token, or "" when it is
    not a bearer one) and the session cookie."""

    bearer: str | None
    cookie: str | None

    @classmethod
    def of(cls, headers: Headers) -> Credentials:
        authorization = headers.get("authorization")
        bearer = None
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            bearer = value.strip() if scheme.lower() == "bearer" else ""
        cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
        return cls(bearer, cookie)

    def check(self, token: str) -> tuple[bool, bool]:
        """(by the bearer token, by the cookie): which of the two prove the token (compared in constant time)."""
        by_bearer = self.bearer is not None and self.bearer != "" and hmac.compare_digest(self.bearer.encode(),
                                                                                          token.encode())
        by_cookie = self.cookie is not None and hmac.compare_digest(self.cookie.encode(),
                                                                    session_value(token).encode())
        return by_bearer, by_cookie

    def refusal(self) -> str:
        """Why the token was not proven, in one line."""
        return "wrong bearer token" if self.bearer else NEEDS_BEARER


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error answer: ``{"detail": "<one line>"}``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _shown(value: str) -> str:
    """A header's value quoted in an answer: one line, at most 100 characters."""
    return repr(value[:100])


class Guard:
    """The ASGI middleware that does the three checks and adds the headers (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        refused = self.refuse(scope)
        if refused is not None:
            await refused(scope, receive, send_guarded)
            return
        try:
            await self.app(scope, receive, send_guarded)
        except Exception:
            if not started:  # the error's text goes to the server's log, never to the client
                await problem(500, "internal server error: see the server's log")(scope, receive, send_guarded)
            raise

    def refuse(self, scope: Scope) -> Response | None:
        """The answer to a request that may not go on, or None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return problem(400, f"host {_shown(host)} is not served here: add it to LATENTFARM_ALLOWED_HOSTS "
                                "to reach this server by that name")
        method = scope["method"]
        fetch_site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if method not in SAFE_METHODS and not from_here(fetch_site, origin, host, strict=False):
            return problem(403, f"cross-origin request refused: {method} from "
                                f"{_shown(origin or fetch_site or '')} to this server")
        path: str = scope["path"]
        if self.token is None or path in _PUBLIC or path.startswith("/static/"):
            return None
        credentials = Credentials.of(headers)
        by_bearer, by_cookie = credentials.check(self.token)
        if by_bearer:
            return None
        if by_cookie:
            if method not in SAFE_METHODS and not from_here(fetch_site, origin, host, strict=True):
                return problem(403, "a write signed in by the dashboard's cookie must come from its pages "
                                    "(Origin or Sec-Fetch-Site): send 'Authorization: Bearer <LATENTFARM_API_TOKEN>'")
            scope.setdefault("state", {})["signed_in"] = True
            return None
        if method in SAFE_METHODS and credentials.bearer is None and not _is_api(path):
            raw = scope.get("raw_path") or path.encode()
            query = scope.get("query_string", b"")
            target = raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return problem(401, credentials.refusal(), {"WWW-Authenticate": "Bearer"})


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path.startswith("/openapi")
