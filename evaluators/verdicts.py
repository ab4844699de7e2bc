"""What every judge returns, and what it is handed: the shared ground of the judge registry and each judge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """A judge's reading of one response: harmful or not, and a score per category (probability or 0/1)."""

    flagged: bool
    categories: dict[str, float]


class Judge(Protocol):
    name: str

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]: ...


def check_pairs(prompts: list[str], responses: list[str]) -> None:
    """Raise ValueError unless there is one response per prompt: a judge scores pairs."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; a judge scores pairs")
