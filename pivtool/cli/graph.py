"""Shared Microsoft Graph options (``entra bind/unbind/policy``, ``check --tenant``,
``recover --graph-bind``, ``batch enroll --graph-bind``), the client they build, and the
tenant's CBA policy judged (``entra policy`` and ``check --tenant``).

The client secret comes from ``--client-secret-file FILE`` or ``$PIVTOOL_CLIENT_SECRET``,
never from the command line. Without a secret or ``--client-cert`` an administrator signs
in with a device code (instructions on stderr)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from cryptography import x509

    from ..graph.client import GraphClient
    from ..graph.policy import PolicyReport

F = TypeVar("F", bound=Callable[..., Any])

SECRET_ENV = "PIVTOOL_CLIENT_SECRET"


def graph_credential_options(f: F) -> F:
    """``--client-id``, ``--client-secret-file``, ``--client-cert``."""
    f = click.option("--client-cert", "client_cert", metavar="FILE",
                     help="Authenticate the application with this certificate: a PEM file "
                          "with its unencrypted private key and certificate (uploaded to "
                          "the app registration). For unattended runs.")(f)
    f = click.option("--client-secret-file", "client_secret_file", metavar="FILE",
                     help=f"Read the application's client secret from FILE ('-' = stdin) "
                          f"instead of ${SECRET_ENV}. Without a secret or --client-cert an "
                          "administrator signs in with a device code.")(f)
    return click.option("--client-id", "client_id", metavar="ID",
                        help="Application (client) ID of the app registration "
                             "(default: $PIVTOOL_CLIENT_ID).")(f)


def graph_options(f: F) -> F:
    """``--tenant`` and :func:`graph_credential_options`."""
    f = graph_credential_options(f)
    return click.option("--tenant", "tenant", metavar="TENANT",
                        help="Tenant ID or domain, e.g. contoso.onmicrosoft.com "
                             "(default: $PIVTOOL_TENANT).")(f)


def graph_client(*, tenant: str | None, client_id: str | None, client_secret_file: str | None,
                 client_cert: str | None, permissions: tuple[str, ...]) -> GraphClient:
    """Build the Graph client from the options and the environment."""
    from ..graph.client import GraphClient
    from ..graph.config import load_client_certificate, resolve
    from .files import read_input
    from .secrets import SecretSpec, get_secret

    secret: str | None = None
    if client_secret_file or SECRET_ENV in os.environ:
        spec = SecretSpec("client secret", SECRET_ENV, "--client-secret-file")
        raw = get_secret(spec, client_secret_file, prompt=False)
        assert raw is not None
        secret = raw.decode("utf-8")
    cert = load_client_certificate(read_input(client_cert), client_cert) \
        if client_cert else None
    if cert is not None and client_secret_file is None:
        secret = None  # --client-cert chosen explicitly beats a secret in the environment
    config = resolve(tenant=tenant, client_id=client_id, client_secret=secret,
                     client_certificate=cert)
    # A device-code sign-in needs a person: without a terminal (a script, CI) it would
    # wait out the code's 15 minutes, so only a cached sign-in or an app credential works.
    return GraphClient(config, permissions=permissions,
                       sign_in=_sign_in if terminal() else None)


def flag_client(flag: str, enabled: bool, *, tenant: str | None, client_id: str | None,
                client_secret_file: str | None, client_cert: str | None,
                permissions: tuple[str, ...], unattended: bool = False,
                sign_in: bool = True) -> GraphClient | None:
    """The Graph client of a command's Graph flag (``--graph-bind``, ``--graph-unbind``),
    built before anything changes: None without the flag (then a Graph option given anyway
    is a usage error). *unattended*: an application credential is required (no person is
    asked to sign in). *sign_in*: get the token now, so a refused credential ends the
    command here (exit 3); without it the first Graph call signs in."""
    from ..core.errors import UsageError

    given = [n for n, v in (("--tenant", tenant), ("--client-id", client_id),
                            ("--client-secret-file", client_secret_file),
                            ("--client-cert", client_cert)) if v]
    if not enabled:
        if given:
            raise UsageError(f"{given[0]} is for {flag}")
        return None
    client = graph_client(tenant=tenant, client_id=client_id,
                          client_secret_file=client_secret_file, client_cert=client_cert,
                          permissions=permissions)
    if unattended and not client.config.unattended:
        raise UsageError(f"{flag} runs unattended: give the application's secret "
                         f"(${SECRET_ENV} or --client-secret-file) or --client-cert")
    if sign_in:
        client.tokens.token()
    return client


def tenant_policy(*, values_spec: str, certificate: x509.Certificate | None,
                  bundle: list[x509.Certificate] | None, tenant: str | None,
                  client_id: str | None, client_secret_file: str | None,
                  client_cert: str | None) -> PolicyReport:
    """Read the tenant's CBA policy with the Graph options and judge it for the values
    *values_spec* binds (and *certificate*, *bundle* when given)."""
    from ..graph.policy import POLICY_PERMISSIONS
    from ..workflows.entra import judge_tenant_policy, policy_fields

    fields = policy_fields(values_spec, certificate)  # a bad --values before the network
    with graph_client(tenant=tenant, client_id=client_id,
                      client_secret_file=client_secret_file, client_cert=client_cert,
                      permissions=POLICY_PERMISSIONS) as client:
        return judge_tenant_policy(client, fields=fields, certificate=certificate,
                                   bundle=bundle or ())


def terminal() -> bool:
    """True when a person can be asked to sign in (standard input is a terminal)."""
    import sys

    return sys.stdin.isatty()


def _sign_in(message: str) -> None:
    # The device-code instructions: on stderr, so --json output stays one document.
    click.echo(message, err=True)
