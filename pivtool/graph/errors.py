"""Graph errors, each mapped to a documented exit code through its base class:
bad configuration or input is a :class:`~pivtool.core.errors.UsageError` (2, nothing was
changed), a refused client credential an :class:`~pivtool.core.errors.AuthenticationError`
(3), everything Entra refused or failed a :class:`GraphError` (1)."""

from __future__ import annotations

from ..core.errors import AuthenticationError, PivToolError, UsageError


class GraphError(PivToolError):
    """Microsoft Graph (or the network on the way) refused or failed a request.

    ``status`` is the HTTP status (None for a network failure), ``code`` Graph's error code
    (``error.code`` of the body), when there was one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphConfigError(UsageError):
    """Missing or contradictory Graph configuration (tenant, client id, credential)."""


class GraphAuthError(AuthenticationError):
    """The token endpoint refused the client credential or the sign-in (exit code 3)."""


class BindingLimitError(UsageError):
    """The merge would exceed Entra's limits on certificateUserIds (10 values, 1,024
    characters each): nothing was written."""


class ValueConflictError(GraphError):
    """A value to bind is already held by another user (Entra requires each value to be
    unique in the tenant). ``holders`` maps each value to the users holding it."""

    def __init__(self, message: str, holders: dict[str, list[str]]) -> None:
        super().__init__(message, 400, "conflict")
        self.holders = holders


class SyncedUserError(GraphError):
    """The user is synchronised from on-premises Active Directory: only the sync engine
    writes its certificateUserIds. ``on_premises`` holds what to set there instead."""

    def __init__(self, message: str, on_premises: list[str]) -> None:
        super().__init__(message, None, "synced-user")
        self.on_premises = on_premises
