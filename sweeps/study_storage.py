"""The Optuna study's RDB storage, made safe to pickle: Tune saves the searcher, storage included, to disk.

Optuna's `RDBStorage` pickles its URL, password and all, so a study in PostgreSQL or MySQL would put the
database password into Tune's searcher state under the sweep's storage path (a bucket, on a cluster).
`CredentialFreeRDBStorage` pickles the URL with its password redacted and keeps the full URL in the
memory of the process that opened it: the driver, which is also the only process that unpickles the
searcher (when `--resume` restores it) and does so after it has opened the storage from the spec again.
"""

from __future__ import annotations

from typing import Any

import optuna

from sweeps.tracking import redact_uri
from trainables.private_apis import RDB_STORAGE_STATE_URL

_FULL_URLS: dict[str, str] = {}  # redacted URL -> URL with its password; this process only


class CredentialFreeRDBStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose pickled state holds no password."""

    def __init__(self, url: str, **kwargs: Any):
        _FULL_URLS[redact_uri(url)] = url
        super().__init__(url, **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state[RDB_STORAGE_STATE_URL] = redact_uri(state[RDB_STORAGE_STATE_URL])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        redacted = state[RDB_STORAGE_STATE_URL]
        if redacted not in _FULL_URLS and "***@" in redacted:
            raise RuntimeError(f"optuna.storage {redacted}: the password is not known in this process; open the "
                               "storage from the sweep's spec before restoring its searcher")
        super().__setstate__({**state, RDB_STORAGE_STATE_URL: _FULL_URLS.get(redacted, redacted)})
