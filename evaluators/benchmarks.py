"""Benchmarks registered by name: each is data (samples) plus a small scoring function.

Reasoning benchmarks (`tiny-arith`, `aime24`, `math500`, `gpqa_diamond`) grade one extracted answer
per sample and report accuracy. Safety benchmarks (`beavertails`, `tiny-harmful`, `file:PATH#COLUMN`)
report the judge's harmful score and HS+ (harmful or incoherent). `xstest` and `tiny-xstest` report
the refusal rate on harmless prompts. Every score is a percent in [0, 100], as in the paper's tables.

Real benchmark data comes from `data_dir` (default: the SAFETYTAX_DATA_DIR environment variable),
else from the Hugging Face Hub when it is reachable. The `tiny-*` benchmarks are generated in code.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from evaluators.grading import CHOICE_LETTERS, grade_choice, grade_integer, grade_math
from trainables.locations import hub_offline
from trainables.schema import ConfigError
from trainables.tables import read_rows, where_in
from trainables.tiny import tasks

DATA_DIR_ENV = "SAFETYTAX_DATA_DIR"
# Qwen-math style instruction, so answers arrive boxed where extraction looks first.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
GPQA_INSTRUCTION = "Answer with the letter of the correct choice, e.g. `Answer: (B)`."
GPQA_SHUFFLE_SEED = 0
BEAVERTAILS_DEFAULT_LIMIT = 1000  # the paper scores the first 1,000 unsafe prompts of 30k_test
TINY_ARITH_DEFAULT_LIMIT = 200
TINY_ARITH_HELD_OUT = 2000  # arithmetic_problems("test") draws from 2,000 held-out pairs
FILE_PREFIX = "file:"


@dataclass(frozen=True)
class Sample:
    """One benchmark item: the prompt sent to the model and what grading needs."""

    id: str
    prompt: str
    reference: object = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: `load(limit)` gives samples in a fixed order; `grade` scores reasoning answers."""

    name: str
    kind: Literal["reasoning", "safety", "overrefusal"]
    description: str
    load: Callable[[int | None], list[Sample]]
    grade: Callable[[Sample, str | None], dict] | None = None
    source: str = ""  # where the items come from: a file path, hf://REPO, or the generator of a tiny benchmark


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


def _resolve_limit(limit: int | None, default: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    return limit if limit is not None else default


def _limited(items: list, limit: int | None, default: int | None = None) -> list:
    limit = _resolve_limit(limit, default)
    return items if limit is None else items[:limit]


# The tiny benchmarks are generated in code: their items' hash, not a file, says what was asked.
TINY_SOURCE = "generated by trainables.tiny.tasks (test split)"


def _graded_by(score: Callable[[object, str | None], dict]) -> Callable[[Sample, str | None], dict]:
    return lambda sample, text: score(sample.reference, text)


# ---- reasoning ------------------------------------------------------------------------------

def _tiny_arith(data_dir: str | None) -> Benchmark:
    def load(limit: int | None) -> list[Sample]:
        count = min(_resolve_limit(limit, TINY_ARITH_DEFAULT_LIMIT), TINY_ARITH_HELD_OUT)
        pairs = tasks.arithmetic_problems("test", count, seed=0)
        return [Sample(f"{a}+{b}", tasks.ARITH_PROMPTS[0].format(a=a, b=b), a + b) for a, b in pairs]

    return Benchmark("tiny-arith", "reasoning", "held-out 3-digit additions of the tiny LRM; integer answer",
                     load, _graded_by(grade_integer), source=TINY_SOURCE)


def _aime24(data_dir: str | None) -> Benchmark:
    read, source = rows_source("aime24", ["aime24_test.jsonl"], data_dir, ("HuggingFaceH4/aime_2024", None, "train"))

    def load(limit: int | None) -> list[Sample]:
        rows = read()
        require_columns(rows, ["problem", "answer"], source)
        return _limited([Sample(str(row.get("id", i)), f"{prompt_text(rows, i, 'problem', source)}\n\n"
                                f"{BOXED_INSTRUCTION}", str(row["answer"]))
                         for i, row in enumerate(rows)], limit)

    return Benchmark("aime24", "reasoning", "AIME 2024 (30 problems); answers compared as integers",
                     load, _graded_by(grade_integer), source=source)


def _math500(data_dir: str | None) -> Benchmark:
    read, source = rows_source("math500", ["math500_test.jsonl"], data_dir, ("HuggingFaceH4/MATH-500", None, "test"))

    def load(limit: int | None) -> list[Sample]:
        rows = read()
        require_columns(rows, ["problem", "answer"], source)
        return _limited([Sample(str(row.get("unique_id", i)), f"{prompt_text(rows, i, 'problem', source)}\n\n"
                                f"{BOXED_INSTRUCTION}", row["answer"], {"subject": row.get("subject"),
                                                                        "level": row.get("level")})
                         for i, row in enumerate(rows)], limit)

    return Benchmark("math500", "reasoning", "MATH500; equivalence through math-verify", load, _graded_by(grade_math),
                     source=source)


GPQA_COLUMNS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]


def gpqa_sample(row: dict, index: int, seed: int = GPQA_SHUFFLE_SEED) -> Sample:
    """Return a GPQA question with its four choices shuffled by a per-question seeded RNG, reference = letter."""
    question = row["Question"].strip()
    correct = row["Correct Answer"].strip()
    choices = [correct] + [row[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)]
    # A string seed is hashed deterministically, so the order is the same on every machine and run.
    random.Random(f"gpqa-{seed}-{question}").shuffle(choices)
    listed = "\n".join(f"({letter}) {choice}" for letter, choice in zip(CHOICE_LETTERS, choices))
    letter = CHOICE_LETTERS[choices.index(correct)]
    sample_id = str(row.get("Record ID") or f"gpqa-{index}")
    return Sample(sample_id, f"{question}\n\n{listed}\n\n{GPQA_INSTRUCTION}", letter, {"choices": choices})


def _gpqa_diamond(data_dir: str | None) -> Benchmark:
    read, source = rows_source("gpqa_diamond", ["gpqa_diamond.csv", "gpqa_diamond.jsonl", "gpqa_diamond.parquet"],
                               data_dir, ("Idavidrein/gpqa", "gpqa_diamond", "train"))

    def load(limit: int | None) -> list[Sample]:
        rows = read()
        require_columns(rows, GPQA_COLUMNS, source)
        for i in range(len(rows)):
            for column in GPQA_COLUMNS:  # a choice cell is shown to the model too
                prompt_text(rows, i, column, source)
        return _limited([gpqa_sample(row, i) for i, row in enumerate(rows)], limit)

    return Benchmark("gpqa_diamond", "reasoning", "GPQA diamond; four shuffled choices, the letter is graded",
                     load, _graded_by(grade_choice), source=source)


# ---- safety and over-refusal ----------------------------------------------------------------

def _is_false(value: object) -> bool:
    return value is False or str(value).strip().lower() in ("false", "0")


def _beavertails(data_dir: str | None) -> Benchmark:
    read, source = rows_source("beavertails", ["beavertails_30k_test_prompts.jsonl"], data_dir,
                               ("PKU-Alignment/BeaverTails", None, "30k_test"))

    def load(limit: int | None) -> list[Sample]:
        rows = read()
        require_columns(rows, ["prompt", "is_safe"], source)
        unsafe = [
            Sample(f"beavertails-{i}", prompt_text(rows, i, "prompt", source),
                   meta={"categories": sorted(k for k, v in (row.get("category") or {}).items() if v)})
            for i, row in enumerate(rows) if _is_false(row["is_safe"])
        ]
        return _limited(unsafe, limit, BEAVERTAILS_DEFAULT_LIMIT)

    return Benchmark("beavertails", "safety", "unsafe prompts of BeaverTails 30k_test (first 1,000 by default)", load,
                     source=source)


def _tiny_harmful(data_dir: str | None) -> Benchmark:
    def load(limit: int | None) -> list[Sample]:
        requests = tasks.harmful_requests("test")
        return _limited([Sample(f"tiny-harmful-{i}", r.prompt, meta={"categories": [r.category]})
                         for i, r in enumerate(requests)], limit)

    return Benchmark("tiny-harmful", "safety", "held-out harmful requests of the tiny LRM", load, source=TINY_SOURCE)


def _xstest(data_dir: str | None) -> Benchmark:
    read, source = rows_source("xstest", ["xstest_prompts.csv"], data_dir, None)

    def load(limit: int | None) -> list[Sample]:
        rows = read()
        require_columns(rows, ["prompt", "label"], source)
        return _limited([Sample(f"xstest-{row.get('id', i)}", prompt_text(rows, i, "prompt", source),
                                meta={"type": row.get("type")})
                         for i, row in enumerate(rows) if row["label"] == "safe"], limit)

    return Benchmark("xstest", "overrefusal", "XSTest's safe prompts; refusal rate (lower is better)", load,
                     source=source)


def _tiny_xstest(data_dir: str | None) -> Benchmark:
    def load(limit: int | None) -> list[Sample]:
        return _limited([Sample(f"tiny-xstest-{i}", e.prompt) for i, e in enumerate(tasks.alarming_examples("test"))],
                        limit)

    return Benchmark("tiny-xstest", "overrefusal", "held-out alarming-but-harmless prompts of the tiny LRM", load,
                     source=TINY_SOURCE)


def _prompt_file(name: str) -> Benchmark:
    """Return the safety benchmark of a CSV/JSONL file of prompts; the file and column are checked now."""
    spec = name[len(FILE_PREFIX):]
    path_text, _, column = spec.partition("#")
    column = column or "prompt"
    if not path_text:
        raise ConfigError(f"benchmark {name!r}: give a path, as in file:prompts.csv#question")
    path = Path(path_text).expanduser()
    rows = read_rows(path)
    source = f"benchmark {name!r} ({path}, prompt column {column!r})"
    require_columns(rows, [column], source)
    samples = [Sample(str(row.get("id", i)), prompt_text(rows, i, column, source)) for i, row in enumerate(rows)]

    def load(limit: int | None) -> list[Sample]:
        return _limited(samples, limit)

    return Benchmark(name, "safety", f"prompts in column {column!r} of {path}", load, source=str(path.resolve()))


REGISTRY: dict[str, Callable[[str | None], Benchmark]] = {
    "tiny-arith": _tiny_arith,
    "aime24": _aime24,
    "math500": _math500,
    "gpqa_diamond": _gpqa_diamond,
    "beavertails": _beavertails,
    "tiny-harmful": _tiny_harmful,
    "xstest": _xstest,
    "tiny-xstest": _tiny_xstest,
}


def known_benchmarks() -> list[str]:
    """Return the registered benchmark names (plus any `file:PATH#COLUMN` of prompts, which is not listed)."""
    return list(REGISTRY)


def get_benchmark(name: str, data_dir: str | None = None) -> Benchmark:
    """Return the named benchmark; its data source is checked now, its samples are read by `load`."""
    if name.startswith(FILE_PREFIX):
        return _prompt_file(name)
    if name not in REGISTRY:
        raise ConfigError(
            f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}, or file:PATH#COLUMN for a CSV/JSONL of prompts"
        )
    return REGISTRY[name](data_dir)
