"""What counts as a credential in a config or an options mapping: such keys are never logged or recorded."""

from __future__ import annotations

import re

# A key that names a credential, whatever section it sits in: tokens, secrets, passwords, API and access keys.
CREDENTIAL_KEY = re.compile(
    r"token|secret|passw|(?:^|[_-])key(?:$|[_-])|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth",
    re.IGNORECASE)


def is_credential(key: object) -> bool:
    """Return True when `key` names a credential."""
    return bool(CREDENTIAL_KEY.search(str(key)))
