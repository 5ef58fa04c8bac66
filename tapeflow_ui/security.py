"""Who may see and act: one token per TAPEFLOW_HOME, every request checked, actions CSRF-checked.

The token is ``TAPEFLOW_HOME/secrets/ui-token`` (created 0600 on first use, like the database
passwords); `tapeflow up` prints the login URL to the terminal that started it, never to a log. As in
Jupyter, the first visit carries ``?token=...``: the server answers with a redirect to the same page
without it and an HttpOnly, SameSite=Strict session cookie. The cookie holds an HMAC of the token, not
the token; scripts may send ``Authorization: Bearer <token>`` instead. Anything else gets 401 and no
data, ``/health`` included (the stack's probe sends the token).

Actions (POST) also need the CSRF value: an HMAC of the token under another label, written into each
page's ``<meta name="csrf-token">`` and sent back as ``X-CSRF-Token``; a foreign ``Origin`` is refused
too. No page ever holds the token itself.

Every response carries a Content-Security-Policy that allows scripts, styles and connections from the
UI's own origin only (the charting library is served from the package: no CDN), no framing, no
referrer, and ``Cache-Control: no-store``. Style *attributes* are allowed (``style-src-attr``): the
charting library sizes its canvases with them; style elements and every script stay same-origin only.

Hand-written as a small ASGI middleware rather than a framework's auth package: the rules above are
the whole policy (a shared secret, no users, no sessions to store), and a generic package would add a
user model and storage this has no use for.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapeflow_runtime.files import read_or_create_secret
from tapeflow_runtime.paths import StackPaths

TOKEN_FILE = "ui-token"  # nosec B105 # the file name under secrets/, not a secret
COOKIE = "tapeflow_ui_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def token_path(paths: StackPaths) -> Path:
    return paths.secrets_dir / TOKEN_FILE


def load_token(paths: StackPaths) -> str:
    """The UI token of this home, created on first use."""
    paths.ensure()
    return read_or_create_secret(token_path(paths))


def derive(token: str, label: str) -> str:
    return hmac.new(token.encode(), label.encode(), hashlib.sha256).hexdigest()


def csrf_value(token: str) -> str:
    return derive(token, "tapeflow-ui csrf")


class TokenGuard:
    """The ASGI middleware enforcing the rules of the module docstring."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the UI token is too short (16 characters at least)")
        self.app = app
        self.token = token
        self.session = derive(token, "tapeflow-ui session")
        self.csrf = csrf_value(token)

    def _authenticated(self, headers: Headers, cookies: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        cookie = cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the UI has none: refused before anything reads the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = _cookies(headers.get("cookie", ""))
        method = scope.get("method", "GET")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        if not self._authenticated(headers, cookies):
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            offered = query.pop("token", None)
            if (
                offered is not None
                and method in SAFE_METHODS
                and hmac.compare_digest(offered.encode(), self.token.encode())
            ):
                target = scope.get("path", "/") + (f"?{urlencode(query)}" if query else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(COOKIE, self.session, httponly=True, samesite="strict", path="/")
                await response(scope, receive, send_with_headers)
                return
            response = PlainTextResponse(
                "401: this tapeflow UI needs its token: open the URL `tapeflow up` printed, "
                "or `tapeflow ui --print-url`",
                status_code=401,
            )
            await response(scope, receive, send_with_headers)
            return
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            host = headers.get("host", "")
            if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
                await PlainTextResponse("403: cross-origin request refused", status_code=403)(
                    scope, receive, send_with_headers
                )
                return
            if not hmac.compare_digest(headers.get(CSRF_HEADER, "").encode(), self.csrf.encode()):
                await PlainTextResponse("403: missing or wrong CSRF token", status_code=403)(
                    scope, receive, send_with_headers
                )
                return
        await self.app(scope, receive, send_with_headers)


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out
