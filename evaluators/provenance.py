"""What an evaluation asked and who judged it: each benchmark's source and items, each judge's model and rules.

`evaluation_provenance(cfg, samples, base_model)` returns plain JSON for a sweep's `provenance.json`:

- per benchmark: its name, source (a file path, `hf://REPO`, or the tiny generator), the sha256 of the
  items actually loaded (id, prompt, reference) and the limit;
- per judge: its name, its model's path, revision and content hash (a local folder or a cached Hub
  snapshot; None when the model is not on this machine), the sha256 of its rules (prompt, chat template,
  threshold, parse) and its options without credentials;
- the base model: its content hash when it is a local folder, and for `tiny://` the seed.

A reading that moves when any of these changes can be traced to the change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from evaluators.cache import content_hash
from evaluators.judges import judge_entry
from trainables.credentials import is_credential

def items_hash(samples: list) -> str:
    """Return the sha256 of the items as loaded: ids, prompts and references, in order."""
    rows = [[s.id, s.prompt, repr(s.reference)] for s in samples]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hub_snapshot(repo: str, revision: str | None) -> Path | None:
    # A Hub id the judge loads by name: its cached snapshot, when this machine has one; never downloads.
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, offline, or not a Hub id: the hash is then unknown
        return None


def model_record(model: str | None, revision: str | None = None) -> dict[str, Any]:
    """Return {path, revision, content_hash} of a model; the hash of a local folder or cached Hub snapshot."""
    if model is None:
        return {"path": None, "revision": None, "content_hash": None}
    folder = Path(model) if Path(model).is_dir() else _hub_snapshot(model, revision)
    if folder is not None and folder.parent.name == "snapshots":
        revision = revision or folder.name  # the commit the cached snapshot holds
    return {"path": model, "revision": revision, "content_hash": content_hash(folder) if folder else None}


def judge_record(name: str, options: dict) -> dict[str, Any]:
    """Return a judge's provenance: its model, the hash of its rules, and its options (credentials left out)."""
    entry = judge_entry(name)
    return {"name": name, "model": model_record(entry.model(options), options.get("revision")),
            "rules_hash": _text_hash(entry.rules(options)),
            "options": {k: v for k, v in options.items() if not is_credential(k)}}


def base_model_record(base_model: str, digest: str | None) -> dict[str, Any]:
    """Return the base model's name, content hash and, for a `tiny://` model, its seed."""
    record: dict[str, Any] = {"model": base_model, "content_hash": digest}
    if base_model.startswith("tiny://"):
        record["tiny_seed"] = int(parse_qs(urlparse(base_model).query).get("seed", ["0"])[0])
    return record


def evaluation_provenance(cfg, benchmarks: dict[str, tuple[Any, list]], base_model: str,
                          base_digest: str | None) -> dict[str, Any]:
    """Return the evaluation's provenance; `benchmarks`: {name: (Benchmark, the samples loaded)}."""
    return {
        "benchmarks": [{"name": name, "source": benchmark.source, "items": len(samples),
                        "items_hash": items_hash(samples), "limit": cfg.limit}
                       for name, (benchmark, samples) in benchmarks.items()],
        "judges": [judge_record(judge, cfg.options_for(judge)) for judge in cfg.judge_names()],
        "base_model": base_model_record(base_model, base_digest),
        "backend": cfg.backend, "dtype": cfg.dtype, "generation": cfg.generation.model_dump(),
    }


def evaluation_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Return 'what: old -> new' for each change of a benchmark's items, a judge, or the base model."""
    changes = []

    def by_name(entries: list[dict]) -> dict[str, dict]:
        return {entry["name"]: entry for entry in entries}

    old_benchmarks, new_benchmarks = by_name(old.get("benchmarks", [])), by_name(new.get("benchmarks", []))
    for name in sorted(set(old_benchmarks) | set(new_benchmarks)):
        before, after = old_benchmarks.get(name, {}), new_benchmarks.get(name, {})
        if before.get("items_hash") != after.get("items_hash"):
            changes.append(f"benchmark {name} items: {str(before.get('items_hash'))[:12]} -> "
                           f"{str(after.get('items_hash'))[:12]}")
    old_judges, new_judges = by_name(old.get("judges", [])), by_name(new.get("judges", []))
    for name in sorted(set(old_judges) | set(new_judges)):
        before, after = old_judges.get(name, {}), new_judges.get(name, {})
        for what, read in (("rules", lambda j: j.get("rules_hash")),
                           ("model", lambda j: (j.get("model") or {}).get("content_hash"))):
            if read(before) != read(after):
                changes.append(f"judge {name} {what}: {str(read(before))[:12]} -> {str(read(after))[:12]}")
    before, after = old.get("base_model", {}), new.get("base_model", {})
    if before.get("content_hash") != after.get("content_hash"):
        changes.append(f"base model: {str(before.get('content_hash'))[:12]} -> {str(after.get('content_hash'))[:12]}")
    return changes
