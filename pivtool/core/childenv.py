"""The environment every subprocess pivtool starts gets: pivtool's own, minus every
``PIVTOOL_*`` variable.

Why all of them and not a list of the secret ones: ``PIVTOOL_PIN``, ``PIVTOOL_MGMT_KEY``,
``PIVTOOL_ESCROW_PASSPHRASE``... are secrets, a future secret variable would be missed by a
deny-list, and no child (an issuer command, the demo's pivtool runs) needs pivtool's settings.
What a child is meant to see it gets explicitly through *extra* (e.g. the attestation file
paths ``enroll`` hands to ``--issuer-cmd``). docs/security-model.md states the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The prefix of every variable pivtool reads (secrets and settings alike).
PREFIX = "PIVTOOL_"


def child_env(extra: Mapping[str, str] | None = None,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """*base* (default: ``os.environ``) without any ``PIVTOOL_*`` variable (any case), plus
    *extra* (which may set ``PIVTOOL_*`` names of its own on purpose)."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.upper().startswith(PREFIX)}
    env.update(extra or {})
    return env
