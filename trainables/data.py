"""Safety and reasoning data: every supported dataset shape becomes a list of `Example`s.

A `DataSource` names a Hub dataset, a local .json/.jsonl/.csv/.parquet file or a `tiny://` path, and
the shape of its rows (`format`). Files are checked (exists, readable, has the columns) before any
training starts, so a typo in a config fails in seconds with the field and the fix in the message.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from trainables.formats import DIRECT_REFUSAL_THINKING, FORMATS, Example
from trainables.locations import data_kind, resolve_data
from trainables.schema import ConfigError, Strict
from trainables.tables import read_rows

# The local file types data may come in, and what each is read as (`trainables.tables`).
LOCAL_KINDS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}

# s1K releases name their columns differently; the first column present of each kind is used.
S1K_PROMPT_COLUMNS = ("question", "problem")
S1K_THINKING_COLUMNS = ("deepseek_thinking_trajectory", "thinking_trajectories", "thinking")
S1K_ANSWER_COLUMNS = ("deepseek_attempt", "attempt", "solution")

# (opening marker, closing marker) of the reasoning styles a reply in training data may carry, R1's first.
REPLY_MARKERS = tuple(FORMATS[name].markers for name in ("r1", "s1"))


class DataSource(Strict):
    """Where alignment or reasoning data comes from and how its rows read."""

    path: str = Field(description="Hub dataset id (owner/name), a local .json/.jsonl/.csv/.parquet file, "
                                  "or tiny://NAME for the embedded default's generated data.")
    format: Literal["directrefusal", "safechain", "pairs", "chat", "s1k"] = Field(
        description="Row shape: directrefusal (`text` in ChatML or `refusal` as 'Question: …\\nAnswer: …'), "
                    "safechain (instruction, response with </think>, label), pairs (prompt and response "
                    "columns), chat (`messages` list of role/content), s1k (s1K / s1K-1.1 columns).")
    split: str = Field("train", description="Split of a Hub dataset (slices like train[:1000] work); "
                                           "a local file is read as one split.")
    prompt_column: str = Field("prompt", description="pairs: column holding the user prompt.")
    response_column: str = Field("response", description="pairs: column holding the answer or refusal.")
    thinking_column: str | None = Field(None, description="pairs: column holding the thinking part; "
                                                          "unset uses `thinking` for every row.")
    thinking: str = Field(DIRECT_REFUSAL_THINKING, description="pairs without thinking_column: the fixed "
                                                               "thinking text of every example.")
    label: str | None = Field("vanilla_harmful", description="safechain: keep only rows with this label "
                                                             "(the paper's choice); null keeps all rows.")
    size: int | None = Field(None, ge=1, description="Alignment data size N: how many rows to keep after "
                                                     "filtering; null keeps all.")
    selection: Literal["first", "random"] = Field("first", description="Which N rows: the first N, or a "
                                                                      "random N drawn with `seed`.")
    seed: int = Field(0, description="Seed of the random selection; the same seed gives the same rows.")


def load_examples(source: DataSource) -> list[Example]:
    """Return the examples of `source`, filtered and cut to `source.size`; raise ConfigError on bad input."""
    path = resolve_data(source.path)
    dataset, where = _open(path, source.split)
    parse_row = ROW_PARSERS[source.format](dataset.column_names, source, where)

    indices = list(range(len(dataset)))
    kept = ""
    if source.format == "safechain" and source.label is not None:
        indices = [i for i, label in enumerate(dataset["label"]) if label == source.label]
        kept = f" with label {source.label!r}"
    if source.size is not None:
        if source.size > len(indices):
            raise ConfigError(f"data.size: {source.size} rows asked for, but {where} has only "
                              f"{len(indices)} rows{kept}; lower data.size or use more data")
        if source.selection == "first":
            indices = indices[:source.size]
        else:
            indices = random.Random(source.seed).sample(indices, source.size)

    examples = []
    for index, row in zip(indices, dataset.select(indices)):
        try:
            examples.append(parse_row(row))
        except ValueError as err:
            raise ConfigError(f"data: row {index} of {where} cannot be read as {source.format}: {err}") from None
    return examples


def training_examples(data: DataSource, reasoning_data: DataSource | None, mix: float, seed: int) -> list[Example]:
    """Return what a run trains on: `data`'s examples with `mix` of `reasoning_data`'s mixed in; ConfigError on bad input.

    Entry points call it on their inputs before a tiny LRM build, and `align.prepare_run` before Ray starts.
    """
    examples = load_examples(data)
    if mix > 0:
        examples = mix_reasoning(examples, load_examples(reasoning_data), mix, seed)
    return examples


def mix_reasoning(safety: list[Example], reasoning: list[Example], fraction: float, seed: int) -> list[Example]:
    """Return the safety examples plus enough reasoning examples to make up `fraction` of the result, shuffled.

    Mixing reasoning data into stage 2 is the knob the sweep turns to pay less Safety Tax.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"reasoning_mix must be in [0, 1), got {fraction}")
    if fraction == 0:
        return safety
    needed = round(fraction * len(safety) / (1 - fraction))
    if needed > len(reasoning):
        raise ConfigError(f"reasoning_mix={fraction} with {len(safety)} safety examples needs {needed} reasoning "
                          f"examples, but only {len(reasoning)} are available; lower reasoning_mix or "
                          f"add reasoning data")
    rng = random.Random(seed)
    mixed = list(safety) + rng.sample(reasoning, needed)
    rng.shuffle(mixed)
    return mixed


class Table:
    """A local file's records (`trainables.tables`) with the part of a Hub `datasets.Dataset`'s interface that
    `load_examples` reads: `column_names`, `len`, a column by name, and `select(indices)`."""

    def __init__(self, rows: list[dict], columns: list[str]):
        # A record lacking a column holds None there, as a Hub dataset's does.
        self.column_names = columns
        self.rows = [{column: row.get(column) for column in columns} for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list:
        return [row[column] for row in self.rows]

    def select(self, indices: list[int]) -> list[dict]:
        return [self.rows[i] for i in indices]


def _open(path: str, split: str):
    """Return (the records at `path`, a phrase naming them for messages); raise ConfigError if they cannot be read.

    A Hub dataset stays a `datasets.Dataset`, read lazily: only the selected rows become Python values."""
    file = Path(path).expanduser()
    if data_kind(path) == "hub":
        import datasets  # slow import: only for a Hub dataset

        try:
            dataset = datasets.load_dataset(path, split=split)
        except (OSError, ValueError) as err:  # offline, unknown id, unknown split, missing config
            raise ConfigError(f"data.path: cannot load Hub dataset {path!r} split {split!r}: {err}. Without "
                              f"Hub access, point data.path at a local .json/.jsonl/.csv/.parquet file") from None
        return dataset, f"Hub dataset {path} (split {split})"
    where = f"file {file}"
    if not file.exists():
        raise ConfigError(f"data.path: file {file} does not exist")
    if file.is_dir():
        raise ConfigError(f"data.path: {file} is a folder; give one .json, .jsonl, .csv or .parquet file")
    kind = LOCAL_KINDS.get(file.suffix.lower())
    if kind is None:
        raise ConfigError(f"data.path: {file} has the unsupported extension {file.suffix!r}; "
                          f"supported: {', '.join(LOCAL_KINDS)}")
    if file.stat().st_size == 0:
        raise ConfigError(f"data.path: {file} is empty")
    try:
        rows = read_rows(file)
    except ConfigError as err:
        raise ConfigError(f"data.path: cannot read {file} as {kind}: {err}") from None
    columns = list(dict.fromkeys(column for row in rows for column in row))
    return Table(rows, columns), where


def _require(columns: list[str], needed: list[str], where: str, fix: str = "") -> None:
    """Raise ConfigError naming the first column of `needed` missing from `columns`."""
    for column in needed:
        if column not in columns:
            raise ConfigError(f"data: column {column!r} not found in {where}; columns found: "
                              f"{', '.join(columns) or '(none)'}{fix}")


def _first_present(columns: list[str], candidates: tuple[str, ...], where: str) -> str:
    """Return the first of `candidates` present in `columns`, or raise ConfigError listing them."""
    for column in candidates:
        if column in columns:
            return column
    raise ConfigError(f"data: none of the columns {', '.join(map(repr, candidates))} found in {where}; "
                      f"columns found: {', '.join(columns) or '(none)'}")


def _text(row: dict[str, Any], column: str) -> str:
    """Return the string in `row[column]`, or raise ValueError naming the column."""
    value = row[column]
    if not isinstance(value, str):
        raise ValueError(f"column {column!r} holds {type(value).__name__}, not text")
    return value


def split_reply(text: str) -> tuple[str | None, str]:
    """Return (thinking, answer) of an assistant reply with R1 or s1 markers; thinking is None without them."""
    for open_marker, close_marker in REPLY_MARKERS:
        head, sep, tail = text.partition(close_marker)
        if sep:
            head = head.strip()
            return head.removeprefix(open_marker).strip(), tail.strip()
        if text.lstrip().startswith(open_marker):
            raise ValueError(f"reply opens {open_marker} but never writes {close_marker}")
    return None, text.strip()


def _directrefusal(columns: list[str], source: DataSource, where: str) -> Callable[[dict], Example]:
    # The Hub release holds both the templated `text` the paper trained on and the raw `refusal`.
    if "text" in columns:
        return lambda row: _parse_chatml(_text(row, "text"))
    if "refusal" in columns:
        return lambda row: _parse_refusal(_text(row, "refusal"))
    raise ConfigError(f"data: {where} has neither a 'text' column (ChatML) nor a 'refusal' column "
                      f"('Question: …\\nAnswer: …'); columns found: {', '.join(columns) or '(none)'}")


def _parse_chatml(text: str) -> Example:
    """Return the last user turn and the assistant reply after it of a ChatML conversation."""
    user_start = text.rfind("<|im_start|>user\n")
    assistant_start = text.find("<|im_start|>assistant\n", user_start)
    if user_start < 0 or assistant_start < 0:
        raise ValueError("'text' is not ChatML with a user turn followed by an assistant turn")
    prompt = text[user_start + len("<|im_start|>user\n"):assistant_start].strip().removesuffix("<|im_end|>")
    reply = text[assistant_start + len("<|im_start|>assistant\n"):].split("<|im_end|>")[0]
    thinking, answer = split_reply(reply)
    return Example(prompt.strip(), thinking or "", answer)


def _parse_refusal(text: str) -> Example:
    """Return the question, DirectRefusal's fixed thinking and the `Answer: …` of a raw refusal row."""
    question, sep, answer = text.partition("\nAnswer:")
    if not sep:
        raise ValueError("'refusal' does not read 'Question: …\\nAnswer: …'")
    return Example(question.strip().removeprefix("Question:").strip(), DIRECT_REFUSAL_THINKING,
                   "Answer: " + answer.strip())


def _safechain(columns: list[str], source: DataSource, where: str) -> Callable[[dict], Example]:
    _require(columns, ["instruction", "response"], where)
    if source.label is not None:
        _require(columns, ["label"], where, "; set data.label: null to keep rows of every label")

    def parse(row: dict) -> Example:
        thinking, answer = split_reply(_text(row, "response"))
        if thinking is None:
            raise ValueError("'response' has no </think> separating the thinking from the answer")
        return Example(_text(row, "instruction").strip(), thinking, answer)

    return parse


def _pairs(columns: list[str], source: DataSource, where: str) -> Callable[[dict], Example]:
    needed = [source.prompt_column, source.response_column]
    if source.thinking_column:
        needed.append(source.thinking_column)
    _require(columns, needed, where, "; set data.prompt_column / data.response_column / data.thinking_column")

    def parse(row: dict) -> Example:
        thinking = _text(row, source.thinking_column).strip() if source.thinking_column else source.thinking
        answer = _text(row, source.response_column).strip()
        return Example(_text(row, source.prompt_column).strip(), thinking, answer)

    return parse


def _chat(columns: list[str], source: DataSource, where: str) -> Callable[[dict], Example]:
    _require(columns, ["messages"], where)
    return _parse_messages


def _parse_messages(row: dict) -> Example:
    """Return the final assistant turn of a `messages` row and the last user turn before it."""
    messages = row["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' is not a list of {role, content} objects")
    roles = [m.get("role") for m in messages]
    if "assistant" not in roles:
        raise ValueError("'messages' has no assistant turn")
    reply_at = len(roles) - 1 - roles[::-1].index("assistant")
    if "user" not in roles[:reply_at]:
        raise ValueError("'messages' has no user turn before the final assistant turn")
    prompt_at = reply_at - 1 - roles[:reply_at][::-1].index("user")
    prompt, reply = messages[prompt_at].get("content"), messages[reply_at].get("content")
    if not isinstance(prompt, str) or not isinstance(reply, str):
        raise ValueError("a message's 'content' is not text")
    thinking, answer = split_reply(reply)
    return Example(prompt.strip(), thinking or "", answer)


def _s1k(columns: list[str], source: DataSource, where: str) -> Callable[[dict], Example]:
    prompt_column = _first_present(columns, S1K_PROMPT_COLUMNS, where)
    answer_column = _first_present(columns, S1K_ANSWER_COLUMNS, where)
    thinking_column = next((c for c in S1K_THINKING_COLUMNS if c in columns), None)

    def parse(row: dict) -> Example:
        thinking = (row[thinking_column] if thinking_column else "") or ""
        if isinstance(thinking, list):  # s1K keeps its trajectories as a list of strings
            thinking = "\n\n".join(thinking)
        if not isinstance(thinking, str):
            raise ValueError(f"column {thinking_column!r} holds {type(thinking).__name__}, not text")
        return Example(_text(row, prompt_column).strip(), thinking.strip(), _text(row, answer_column).strip())

    return parse


ROW_PARSERS: dict[str, Callable[[list[str], DataSource, str], Callable[[dict], Example]]] = {
    "directrefusal": _directrefusal,
    "safechain": _safechain,
    "pairs": _pairs,
    "chat": _chat,
    "s1k": _s1k,
}
