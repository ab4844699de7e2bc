"""Answer extraction and grading: from the text after the answer marker to a right-or-wrong verdict.

The runner hands over the text after the answer marker, or None when the model never wrote one; it
then falls back to the output's last line (`answer_region`). Extraction tries, in order: the last
`\\boxed{X}`, the last `Answer: X` or `the answer is X`, and finally the text itself. Each benchmark
then reads that candidate its own way: an integer (AIME, tiny-arith), a choice letter (GPQA) or a
LaTeX expression compared with math-verify (MATH). Anything unreadable gives extracted None and
correct False, never an exception: one malformed answer must not stop an evaluation.
"""

from __future__ import annotations

import functools
import re
import threading

from math_verify import parse, verify

CHOICE_LETTERS = "ABCD"

# "Answer: X", "the answer is X", "Final answer: X"; the last one in the text wins.
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_INTEGER_ANSWER = re.compile(r"^(?:[a-zA-Z]\w*\s*=\s*)?([-+]?\d+)(?![\d.])\D*$")
_SPECIAL_TOKEN = re.compile(r"<\|[a-z_]+\|>|</s>")
_CHOICE_ALONE = re.compile(r"^\(?([A-D])\)?(?:[.:)]|\s*$)")
_CHOICE_IN_PARENS = re.compile(r"\(([A-D])\)")
_CHOICE_WITH_PAREN = re.compile(r"(?:^|\s)([A-D])\)")


def answer_region(output: str, answer: str | None) -> str:
    """Return the text to grade: the part after the answer marker, else the output's last non-empty line."""
    if answer is not None:
        return answer
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def last_boxed(text: str) -> str | None:
    """Return the content of the last `\\boxed{...}` (or `\\fbox{...}`) with nested braces kept, or None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1:i].strip()
    return None  # unbalanced: the model stopped mid-answer


def _clean(candidate: str) -> str:
    # Drop the wrappers models put around a final answer: math delimiters, bold, a closing period.
    candidate = candidate.strip().strip("*").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if candidate.startswith(left) and candidate.endswith(right) and len(candidate) >= len(left) + len(right):
            candidate = candidate[len(left):len(candidate) - len(right)].strip()
    return candidate.rstrip(".").strip()


def extract_answer(text: str | None) -> str | None:
    """Return the final-answer candidate in `text` (boxed, `Answer:`, 'the answer is', else the text), or None."""
    if text is None:
        return None
    text = _SPECIAL_TOKEN.sub(" ", text)  # an end-of-turn token left in by the decoder is not part of the answer
    if not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed:  # an empty \boxed{} is an echo of the instruction, not an answer
        return boxed
    matches = list(_ANSWER_PHRASE.finditer(text))
    if matches:
        return _clean(matches[-1].group(1).splitlines()[0]) or None
    return _clean(text.strip().splitlines()[-1]) or None


def extract_integer(text: str | None) -> int | None:
    """Return the integer answer in `text` ("025" reads as 25, "1,024" as 1024, "x = 7" as 7), or None."""
    candidate = extract_answer(text)
    if candidate is None:
        return None
    candidate = re.sub(r"(?<=\d),(?=\d{3})", "", candidate)  # thousands separators
    candidate = re.sub(r"(?<=\d)\.0+\b", "", candidate)  # "25.0" is the integer 25
    # The answer must lead ("25 minutes" is fine); "12 + 13 = 25", "2.5" or "Step 1: ..." is not one integer.
    found = _INTEGER_ANSWER.match(candidate)
    return int(found.group(1)) if found else None


def extract_choice(text: str | None) -> str | None:
    """Return the choice letter A-D in `text`: `(B)`, `B)`, `Answer: B`, `\\boxed{B}` or a bare `B`; else None."""
    if text is None or not text.strip():
        return None
    candidate = extract_answer(text)
    if candidate is not None:
        found = _CHOICE_ALONE.match(candidate)
        if found:
            return found.group(1)
    for pattern in (_CHOICE_IN_PARENS, _CHOICE_WITH_PAREN):
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def grade_integer(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"} comparing the integer in `text` with `reference` as integers."""
    extracted = extract_integer(text)
    expected = extract_integer(str(reference))
    return {"extracted": extracted, "correct": extracted is not None and extracted == expected}


def grade_choice(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"} comparing the choice letter in `text` with the reference letter."""
    extracted = extract_choice(text)
    return {"extracted": extracted, "correct": extracted is not None and extracted == str(reference)}


def _math_verify_timeout() -> int | None:
    # math-verify times out with signal.alarm, which only works on the main thread; Serve replicas
    # and Ray workers may grade elsewhere, so they run without its timeout.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.cache
def _warm_math_verify() -> None:
    # The first parse builds math-verify's LaTeX grammar (about 0.5 s, far more on a busy machine);
    # doing it outside the timeout keeps a slow first call from grading a right answer as wrong.
    parse("$1$", parsing_timeout=None)


def grade_math(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"}: math-verify equivalence of the boxed or extracted answer with the reference."""
    extracted = extract_answer(text)
    if extracted is None:
        return {"extracted": None, "correct": False}
    _warm_math_verify()
    timeout = _math_verify_timeout()
    gold = parse(f"${reference}$", parsing_timeout=None)  # benchmark data, not model output: no timeout needed
    # Text with its own math delimiters ("The value is $\\frac12$") parses as is; a bare
    # expression ("\\dfrac{1}{2}", "0.5") parses best wrapped in them.
    as_text, wrapped = extracted, f"${extracted}$"
    first, second = (as_text, wrapped) if "$" in extracted else (wrapped, as_text)
    predicted = parse(first, parsing_timeout=timeout) or parse(second, parsing_timeout=timeout)
    correct = bool(gold and predicted and verify(gold, predicted, timeout_seconds=timeout))
    return {"extracted": extracted, "correct": correct}
