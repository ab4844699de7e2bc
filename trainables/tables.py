"""Reading a table of records from a local file, as every dataset and benchmark file is read.

.jsonl, .json, .csv and .parquet files become a list of dicts of plain Python values, each record
remembering where it sits in its file, so an error names the line to fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from trainables.schema import ConfigError


class Rows(list):
    """Records read from a file, each remembering where it sits there (`where(i)`: "line 7", "record 3")."""

    def __init__(self, rows: list[dict], lines: list[int] | None = None):
        super().__init__(rows)
        self.lines = lines

    def where(self, index: int) -> str:
        if self.lines is not None:
            return f"line {self.lines[index]}"
        return f"record {index + 1}"


def _read_jsonl(path: Path) -> Rows:
    rows, lines = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ConfigError(f"data file {path}, line {number}: not valid JSON ({err.msg} at column "
                              f"{err.colno}); fix or remove that line") from None
        if not isinstance(rows[-1], dict):
            raise ConfigError(f"data file {path}, line {number}: a record must be a JSON object, got "
                              f"{type(rows[-1]).__name__}")
        lines.append(number)
    return Rows(rows, lines)


def _read_csv(path: Path) -> Rows:
    rows, lines = [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)  # the line the record ends on (a quoted cell may span lines)
    return Rows(rows, lines)


def read_rows(path: Path) -> Rows:
    """Return the records of a .jsonl, .json, .csv or .parquet file, or raise ConfigError naming it (and the line)."""
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            data = json.loads(path.read_text())
            return Rows(data if isinstance(data, list) else [data])
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            import pyarrow.parquet  # plain Python values: lists stay lists, nulls are None

            return Rows(pyarrow.parquet.read_table(path).to_pylist())
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError(f"data file {path} cannot be read: {err}") from None
    raise ConfigError(f"data file {path}: unsupported type {suffix!r}; use .jsonl, .json, .csv or .parquet")


def where_in(rows: list[dict], index: int) -> str:
    """Return where record `index` sits in its file ("line 7"), or its ordinal for records read otherwise."""
    return rows.where(index) if isinstance(rows, Rows) else f"record {index + 1}"
