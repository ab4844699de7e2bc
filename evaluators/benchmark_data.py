"""Where a benchmark's records come from, checked before any work: a file in data_dir, else the Hub when it is
reachable; and how many items a run reads.

Real benchmark data comes from `data_dir` (default: the SAFETYTAX_DATA_DIR environment variable), else from
the Hugging Face Hub when it is not offline. A user who names a folder means it: the file must be there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from trainables.locations import hub_offline
from trainables.schema import ConfigError
from trainables.tables import read_rows, where_in


DATA_DIR_ENV = "SAFETYTAX_DATA_DIR"


def require_columns(rows: list[dict], columns: list[str], source: str) -> None:
    """Raise ConfigError naming the missing columns of `source`, the record lacking them, and the columns it has."""
    if not rows:
        raise ConfigError(f"{source} holds no records")
    for index, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ConfigError(
                f"{source}: {where_in(rows, index)} lacks column(s) {', '.join(missing)}; "
                f"columns found: {', '.join(map(str, row))}"
            )


def prompt_text(rows: list[dict], index: int, column: str, source: str) -> str:
    """Return the text of one record's prompt cell; an empty or missing cell is a ConfigError naming the record."""
    value = rows[index].get(column)
    if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
        raise ConfigError(f"{source}: {where_in(rows, index)} has an empty {column!r} cell; a prompt cannot be empty "
                          "(fill it or drop the record)")
    return str(value)


def _hub_rows(repo: str, config: str | None, split: str) -> list[dict]:
    import datasets  # only when a benchmark comes from the Hub

    try:
        return [dict(row) for row in datasets.load_dataset(repo, config, split=split)]
    except Exception as err:  # network, auth (GPQA is gated) or a renamed dataset: all need the user
        raise ConfigError(
            f"could not load {repo} ({split}) from the Hub: {err}; download it and pass data_dir"
        ) from None


def rows_source(name: str, filenames: list[str], data_dir: str | None,
                hub: tuple[str, str | None, str] | None) -> tuple[Callable[[], list[dict]], str]:
    """Return (a reader of the benchmark's records, where they come from); raise ConfigError now if neither works.

    With a data_dir (default: $SAFETYTAX_DATA_DIR) the file must be there: a user who names a folder
    means it. Without one, the Hub copy is used when the Hub is not offline, and stderr says so.
    """
    directory = data_dir or os.environ.get(DATA_DIR_ENV)
    if directory:
        for filename in filenames:
            path = Path(directory) / filename
            if path.is_file():
                return (lambda: read_rows(path)), str(path)
        raise ConfigError(f"benchmark {name}: {Path(directory) / filenames[0]} does not exist; put "
                          f"{' or '.join(filenames)} in {directory}, or fix data_dir (or {DATA_DIR_ENV})")
    if hub is not None and not hub_offline(datasets=True):
        print(f"benchmark {name}: no data_dir given ({DATA_DIR_ENV} is unset), so it is loaded from the Hub "
              f"(hf://{hub[0]}); pass data_dir to use local files", file=sys.stderr)
        return (lambda: _hub_rows(*hub)), f"hf://{hub[0]}"
    hub_note = "the Hub is offline (HF_HUB_OFFLINE)" if hub else "it has no Hub source"
    raise ConfigError(
        f"benchmark {name}: no data_dir given ({DATA_DIR_ENV} is unset) and {hub_note}; put "
        f"{' or '.join(filenames)} in a folder and pass it as data_dir (or set {DATA_DIR_ENV})"
    )


def resolve_limit(limit: int | None, default: int | None) -> int | None:
    """Return the number of items to read: `limit`, else the benchmark's default; ConfigError on a bad limit."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    return limit if limit is not None else default


def limited(items: list, limit: int | None, default: int | None = None) -> list:
    """Return the first `limit` items (else the first `default`, else all); the order is the benchmark's own."""
    limit = resolve_limit(limit, default)
    return items if limit is None else items[:limit]
