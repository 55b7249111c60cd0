"""Microsoft Graph for Entra certificate-based authentication: bind and unbind a
certificate's ``certificateUserIds`` on a user, and read the tenant's CBA policy.

The only package that imports ``msal`` and ``requests`` (both lazily, inside functions), so
``pivtool --version`` and the card commands never load them. Layering: below the CLI and
the workflows, beside :mod:`pivtool.certs` (it uses the certificateUserIds values from
:mod:`pivtool.certs.entra`); it never talks to a card.
"""
