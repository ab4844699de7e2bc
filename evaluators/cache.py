"""Evaluation results cached by content, so the same checkpoint is never evaluated twice.

A result is keyed by the bytes of the model (and adapter) folder, the benchmark and its samples, the
generation settings, the judge and the limit. An entry is a folder (`metrics.json` + `samples.jsonl`)
written under a temporary name and renamed into place, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

HASH_CHUNK = 1 << 20
# (folder, its files' (relative path, size, mtime)) -> digest: hashing a 60 GB model once per process is enough.
_hash_memo: dict[tuple, str] = {}


def content_hash(folder: str | Path) -> str:
    """Return the sha256 of a folder's files: their relative paths and bytes, in sorted order."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    signature = (str(folder), tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                                    for p in files))
    if signature in _hash_memo:
        return _hash_memo[signature]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    _hash_memo[signature] = digest.hexdigest()
    return _hash_memo[signature]


def model_hash(model_digest: str, adapter_dir: str | Path | None = None) -> str:
    """Return the identity of a model (its content hash), or of a base model plus an adapter folder.

    An adapter is hashed together with its base: the same adapter on another base is another model.
    """
    if adapter_dir is None:
        return model_digest
    return hashlib.sha256(f"{model_digest}+{content_hash(adapter_dir)}".encode()).hexdigest()


def result_key(**parts: Any) -> str:
    """Return the cache key of one benchmark result: a digest of every part, as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResultCache:
    """A folder of cached benchmark results; a None root caches nothing."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser() if root is not None else None

    def entry(self, key: str) -> Path | None:
        """Return the folder of a complete entry for `key`, or None on a miss."""
        if self.root is None:
            return None
        folder = self.root / key[:2] / key
        return folder if (folder / "metrics.json").is_file() else None

    def get(self, key: str) -> tuple[dict, Path] | None:
        """Return (metrics, samples file) cached under `key`, or None."""
        folder = self.entry(key)
        if folder is None:
            return None
        return json.loads((folder / "metrics.json").read_text())["metrics"], folder / "samples.jsonl"

    def put(self, key: str, metrics: dict, records: list[dict], about: dict) -> Path | None:
        """Store a result atomically; return its samples file (None when caching is off)."""
        if self.root is None:
            return None
        final = self.root / key[:2] / key
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            write_jsonl(staging / "samples.jsonl", records)
            (staging / "metrics.json").write_text(json.dumps({"metrics": metrics, "about": about}, indent=1,
                                                             default=str))
            os.rename(staging, final)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            # Another process stored the same result first (the rename failed); its entry is as good as ours.
            if not (isinstance(err, OSError) and self.entry(key) is not None):
                raise
        return final / "samples.jsonl"


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Write one JSON object per line."""
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
