"""A small Microsoft Graph client over ``requests``: bearer token from
:class:`~pivtool.graph.auth.TokenSource`, ``Retry-After`` honoured on 429/503/504,
``@odata.nextLink`` paging, Graph's error body turned into one line.

Logged at DEBUG: method, path and status only; never headers (the bearer token) or
bodies.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .auth import SignInPrompt, TokenSource
from .config import GraphConfig
from .errors import GraphAuthError, GraphError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

#: Statuses Graph answers when it wants the caller to wait and try again.
RETRY_STATUSES = frozenset({429, 503, 504})
#: Longest single wait pivtool accepts from Retry-After (a longer one ends the attempt).
MAX_WAIT = 120.0
#: Connection timeout and read timeout, seconds.
TIMEOUT = (10.0, 60.0)
#: Pages followed at most (a loop in nextLink must not run forever).
MAX_PAGES = 1000


def new_session(config: GraphConfig) -> requests.Session:
    """The HTTP session Graph and MSAL share: TLS verified against :attr:`ca_file` (the
    system store or ``SSL_CERT_FILE``), pivtool's user agent."""
    import requests

    from .. import __version__

    session = requests.Session()
    session.verify = config.ca_file if config.ca_file else True
    # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override ``verify`` through
    # trust_env; the trust decision is made once, in GraphConfig.
    session.trust_env = False
    session.headers["User-Agent"] = f"pivtool/{__version__}"
    return session


class GraphClient:
    """Authenticated calls to Graph v1.0 for one tenant."""

    def __init__(self, config: GraphConfig, *, permissions: tuple[str, ...],
                 sign_in: SignInPrompt | None = None, retries: int = 4,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.http = new_session(config)
        self.tokens = TokenSource(config, self.http, permissions, sign_in)
        self.retries = retries
        self.sleep = sleep
        self._token: str | None = None

    def close(self) -> None:
        """Close the HTTP session."""
        self.http.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def url(self, path: str) -> str:
        """Absolute v1.0 URL of *path* (``/users/...``)."""
        return self.config.api + path

    def get(self, path: str, params: dict[str, str] | None = None, *,
            headers: dict[str, str] | None = None, what: str = "") -> dict[str, Any]:
        """GET *path*; the JSON object returned."""
        resp = self._send("GET", self.url(path), params=params, headers=headers, what=what)
        return _json(resp, what or path)

    def get_all(self, path: str, params: dict[str, str] | None = None, *,
                headers: dict[str, str] | None = None, what: str = "") -> list[dict[str, Any]]:
        """GET a collection, following ``@odata.nextLink``; every item of ``value``."""
        items: list[dict[str, Any]] = []
        url: str | None = self.url(path)
        query = params
        for _ in range(MAX_PAGES):
            assert url is not None
            data = _json(self._send("GET", url, params=query, headers=headers, what=what),
                         what or path)
            page = data.get("value")
            if not isinstance(page, list):
                raise GraphError(f"Graph answered {what or path} without a 'value' list")
            items += [i for i in page if isinstance(i, dict)]
            url = data.get("@odata.nextLink")
            if not url:
                return items
            # nextLink carries the whole query; it must stay on the Graph host.
            if urlsplit(url).netloc != urlsplit(self.config.api).netloc:
                raise GraphError(f"Graph's next page link for {what or path} points "
                                 "elsewhere; refusing to follow it")
            query = None
        raise GraphError(f"Graph returned more than {MAX_PAGES} pages for {what or path}")

    def patch(self, path: str, body: dict[str, Any], *, what: str = "") -> None:
        """PATCH *path* with a JSON body (Graph answers 204 No Content)."""
        self._send("PATCH", self.url(path), json_body=body, what=what)

    # ------------------------------------------------------------------ plumbing

    def _send(self, method: str, url: str, *, params: dict[str, str] | None = None,
              headers: dict[str, str] | None = None, json_body: Any = None,
              what: str = "") -> requests.Response:
        import requests

        path = urlsplit(url).path
        refreshed = False
        attempt = 0
        while True:
            if self._token is None:
                self._token = self.tokens.token()
            hdrs = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                    **(headers or {})}
            try:
                resp = self.http.request(method, url, params=params, headers=hdrs,
                                         json=json_body, timeout=TIMEOUT)
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt < self.retries:
                    attempt += 1
                    wait = _backoff(attempt)
                    log.debug("%s %s: %s, retrying in %.1f s", method, path,
                              type(e).__name__, wait)
                    self.sleep(wait)
                    continue
                raise GraphError(f"cannot reach Microsoft Graph at "
                                 f"{urlsplit(url).netloc}: {type(e).__name__}") from None
            log.debug("%s %s -> %d", method, path, resp.status_code)
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                wait = retry_after(resp.headers.get("Retry-After"), attempt)
                if wait > MAX_WAIT:
                    raise _error(resp, method, what or path)
                log.debug("%s %s: %d, waiting %.1f s (Retry-After)", method, path,
                          resp.status_code, wait)
                self.sleep(wait)
                continue
            if resp.status_code == 401 and not refreshed:
                # An expired or revoked token: get a fresh one once.
                refreshed = True
                self._token = None
                continue
            if resp.status_code >= 400:
                raise _error(resp, method, what or path)
            return resp


def _backoff(attempt: int) -> float:
    return float(min(2 ** (attempt - 1), 30))


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date);
    exponential backoff when it is absent or unreadable."""
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.timezone.utc)
            return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())
    return _backoff(attempt)


def _json(resp: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise GraphError(f"Graph answered {what} with something that is not JSON") from None
    if not isinstance(data, dict):
        raise GraphError(f"Graph answered {what} with JSON that is not an object")
    return data


def error_body(resp: requests.Response) -> tuple[str, str]:
    """(code, message) of Graph's ``{"error": {"code", "message"}}`` body, or ('', '')."""
    try:
        data = resp.json()
    except ValueError:
        return "", ""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("code") or ""), str(err.get("message") or "")


def _error(resp: requests.Response, method: str, what: str) -> GraphError | GraphAuthError:
    code, message = error_body(resp)
    text = f"Graph {method} {what}: HTTP {resp.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message.splitlines()[0][:300]}"
    if resp.status_code == 401:
        return GraphAuthError(text)
    if resp.status_code == 403:
        text += " (the account or application lacks a permission or role: see " \
                "docs/entra-cba.md, 'Permissions')"
    return GraphError(text, resp.status_code, code or None)
