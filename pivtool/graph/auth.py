"""Access tokens for Microsoft Graph with MSAL.

* An application credential (client secret or certificate): the client-credentials flow,
  for unattended batches; the app's granted application permissions apply.
* No application credential: the device-code flow, for an administrator at a desk; the
  signed-in administrator's roles and the delegated permissions apply. The sign-in
  instructions go to a callback (the CLI prints them); later runs reuse the cached
  refresh token silently.

The token cache is a file in the user's configuration directory, written 0600. Tokens
and secrets are never logged or put into exception text: MSAL's error descriptions are
reduced to their AADSTS code and first sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.fileio import atomic_write
from .config import GraphConfig
from .errors import GraphAuthError, GraphConfigError, GraphError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

#: Shown to the person who has to sign in (the device-code message from the token service).
SignInPrompt = Callable[[str], None]


class TokenSource:
    """Gets (and caches) access tokens for one :class:`GraphConfig`."""

    def __init__(self, config: GraphConfig, http: requests.Session,
                 permissions: tuple[str, ...], sign_in: SignInPrompt | None = None) -> None:
        self.config = config
        self.http = http
        self.permissions = permissions
        self.sign_in = sign_in
        self._app: Any = None
        self._cache: Any = None

    # ------------------------------------------------------------------ MSAL application

    def _load_cache(self) -> Any:
        import msal

        cache = msal.SerializableTokenCache()
        path = self.config.cache_path
        if path is not None and path.exists():
            try:
                cache.deserialize(path.read_text())
            except (OSError, ValueError):
                # A damaged cache costs one sign-in, never a failure.
                log.debug("token cache %s unreadable; starting afresh", path)
        return cache

    def _save_cache(self) -> None:
        path = self.config.cache_path
        if path is None or self._cache is None or not self._cache.has_state_changed:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, self._cache.serialize().encode(), mode=0o600)

    def _application(self) -> Any:
        if self._app is not None:
            return self._app
        import msal

        self._cache = self._load_cache()
        known = self.config.microsoft_authority
        common: dict[str, Any] = {
            "authority": self.config.authority,
            "token_cache": self._cache,
            "http_client": self.http,
            # Discovery and validation are for Microsoft's hosts; any other authority
            # (a sovereign or test endpoint) would otherwise be checked against the
            # public cloud.
            "validate_authority": known,
            "instance_discovery": known,
        }
        try:
            if self.config.unattended:
                credential: Any = self.config.client_secret
                cert = self.config.client_certificate
                if cert is not None:
                    credential = {"private_key": cert.private_key_pem,
                                  "public_certificate": cert.certificate_pem}
                self._app = msal.ConfidentialClientApplication(
                    self.config.client_id, client_credential=credential, **common)
            else:
                self._app = msal.PublicClientApplication(self.config.client_id, **common)
        except ValueError as e:
            raise GraphError(f"cannot reach the sign-in service at {self.config.authority}: "
                             f"{_first_sentence(str(e))}") from None
        except _network_errors() as e:
            raise GraphError(f"cannot reach the sign-in service at {self.config.authority}: "
                             f"{type(e).__name__}") from None
        return self._app

    # ------------------------------------------------------------------ tokens

    def token(self) -> str:
        """A valid access token (from the cache when possible)."""
        app = self._application()
        scopes = self.config.scopes(self.permissions)
        try:
            if self.config.unattended:
                result = app.acquire_token_for_client(scopes)
            else:
                result = self._delegated(app, scopes)
        except _network_errors() as e:
            raise GraphError(f"cannot reach the sign-in service at {self.config.authority}: "
                             f"{type(e).__name__}") from None
        finally:
            self._save_cache()
        if not isinstance(result, dict) or "access_token" not in result:
            raise _token_error(result)
        token = result["access_token"]
        assert isinstance(token, str)
        return token

    def _delegated(self, app: Any, scopes: list[str]) -> Any:
        for account in app.get_accounts():
            result = app.acquire_token_silent(scopes, account=account)
            if result and "access_token" in result:
                return result
        if self.sign_in is None:
            raise GraphConfigError("an administrator must sign in (device code) and there is "
                                   "no terminal: run it in a terminal once (the sign-in is "
                                   "cached), or give the application a credential "
                                   "(PIVTOOL_CLIENT_SECRET or --client-cert)")
        flow = app.initiate_device_flow(scopes=scopes)
        if "user_code" not in flow:
            raise _token_error(flow)
        self.sign_in(str(flow.get("message") or
                         f"Open {flow.get('verification_uri')} and enter {flow['user_code']}"))
        return app.acquire_token_by_device_flow(flow)


_AADSTS = re.compile(r"AADSTS\d+")


def _first_sentence(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.split(". ")[0].rstrip(".")[:200]


def _token_error(result: Any) -> Exception:
    """A one-line error from an MSAL error result (no token, no secret, no trace id)."""
    if not isinstance(result, dict):
        return GraphError("the sign-in service gave no token")
    error = str(result.get("error") or "error")
    description = str(result.get("error_description") or "")
    code = _AADSTS.search(description)
    summary = _first_sentence(_AADSTS.sub("", description, count=1).lstrip(": "))
    text = f"sign-in refused: {error}" + (f" ({code.group(0)})" if code else "") + \
        (f": {summary}" if summary else "")
    if error in ("invalid_client", "unauthorized_client", "access_denied",
                 "authorization_declined", "expired_token", "invalid_grant"):
        return GraphAuthError(text)
    return GraphError(text)


def _network_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.ConnectionError, requests.Timeout)

