"""Answer extraction and grading: from a model's reply to a right-or-wrong verdict, as lm-eval and Qwen2.5-Math grade.

The runner hands over the text after the answer marker, or the whole reply when the model never wrote
one (`answer_region`). Reading an answer goes from the most explicit statement to the least:

1. the stated answer (`extract_answer`): lm-eval's Minerva sentence (`The final answer is $X$. I hope
   it is correct.`), else the last `\\boxed{X}` (both harnesses look there first; boxes side by side are
   one answer split over them, as math-verify reads them), else the last `the answer is X` or
   `Answer: X` (a sentence there states the one number it names), else the last `**X**`; thousands
   grouped by spaces joined; cleaned of delimiters, wrappers and trailing
   punctuation and parsed by math-verify. This reads what math-verify's own anchors miss
   (`The answer is \\sqrt{2}.`, `\\boxed{104.}`), as Qwen2.5-Math's `extract_answer` does;
2. math-verify's anchored LaTeX extraction (`answer ... $X$`);
3. math-verify without an anchor: the last LaTeX span or number in the text.

Integer benchmarks (AIME, tiny-arith) take the value read that way as an integer (`m+n=25` reads as
25); MATH compares it with the reference through math-verify; GPQA reads the stated choice letter with
math-verify's string extraction. Anything unreadable gives extracted None and correct False, never an
exception: one malformed answer must not stop an evaluation.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Callable

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

log = logging.getLogger(__name__)

CHOICE_LETTERS = "ABCD"

# Boxed first, as lm-eval's and Qwen2.5-Math's extractors look there first (math-verify's default is 50).
_ANCHORED_LATEX = (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),)
_ANY_MATH = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_STATED_CHOICE = (StringExtractionConfig(strings=tuple(CHOICE_LETTERS), try_extract_without_anchor=False,
                                         lowercase=False),)

_SPECIAL_TOKEN = re.compile(r"<\|[a-z_]+\|>|</s>")
_MINERVA = re.compile(r"final answer is:?\s*(.+?)\.?\s*I hope it is correct", re.IGNORECASE | re.DOTALL)
# "The answer is X", "the final answer is X", "Answer: X"; the last one in the text wins.
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SENTENCE_END = re.compile(r"(?<!\\)[.;!]\s")
# "The answer is \\sqrt{2}, since $x^2 = 2$": the reason after the answer is not part of it.
_REASON = re.compile(r",?\s+(?:since|because|as|so|which|where|given)\s")
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathbf|mathrm|textrm|mathit|textit|emph)\s*\{([^{}]*)\}")
_MATH_DELIMITER = re.compile(r"\$+|\\[()\[\]]")
_WRAPPER_OPEN = re.compile(r"\\(?:text|textbf|mathbf|mathrm|textrm|boldsymbol|bm)\s*\{")
# One math span: $$…$$, $…$ (an escaped \\$ is a dollar sign inside it), \\(…\\) or \\[…\\].
_MATH_SPAN = re.compile(r"\$\$([^$]+)\$\$|\$((?:\\\$|[^$])+?)(?<!\\)\$|\\\(((?:(?!\\\)).)+)\\\)|\\\[((?:(?!\\\]).)+)\\\]",
                        re.DOTALL)
_SPAN_LIST = re.compile(r"\s*(?:,?\s*(?:and|or)\b|,)\s*(?:\$|\\\()")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
# Content that is mathematics, not words: a wrapper around it is formatting ("\textbf{25}").
_MATH_CONTENT = re.compile(r"[\\\d^_=+*/<>-]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DIGITS_ONLY = re.compile(r"[\s(]*([-+]?\d+)(?:\.0*)?[\s).]*")
_CHOICE_IN_PARENS = re.compile(r"\(([A-D])\)")
_CHOICE_ALONE = re.compile(r"^\(?([A-D])\)?(?:[.:)]|\s*$)")
# A lowercase letter alone, in a reply that is only the letter or on an answer line: "b", "Answer: (c)."
_LOWERCASE_CHOICE = re.compile(r"(?:^\s*|\banswer\s*(?:is|:)\s*:?\s*)\(?([a-d])\)?\s*[.)]?\s*$", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_LETTER_WORD = re.compile(r"(?<![\w'’-])([A-D])(?![\w'’-])")
_ARTICLE_USE = re.compile(r"\s+(?!(?:is|was|seems|must|should|would|could|can|fits|holds|works|matches|remains|"
                          r"gives|follows|satisfies|agrees|looks)\b)[a-z]")
_RULED_OUT = re.compile(r"\b(?:not|wrong|incorrect|isn't|cannot|can't|eliminat\w*|rule[sd]? out|false|fails?)\b",
                        re.IGNORECASE)
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may sit between the boxes of one answer: a comma, "and", "or", and the next unknown ("y =").
_BOX_LIST_GAP = re.compile(r"(?:,|;|\band\b|\bor\b|\\quad|\\text\s*\{\s*(?:and|or)\s*\}|\s)*"
                           r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*)?")
# Thousands grouped by a space or a thin space inside a stated number: "1 000", "1\\,000", "1\\ 000 000".
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\s|\\[,;! ]|~)\d{3})+(?![\d.])")
_GROUP_SPACE = re.compile(r"\s|\\[,;! ]|~")
# A stated answer in words ("She needs 3 more"): a word of three letters or more outside LaTeX.
_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:/\d+)?(?![\w.]|\.\d)")


def answer_region(output: str, answer: str | None) -> str:
    """Return the text to grade: the part after the answer marker, else the whole output."""
    return output if answer is None else answer


def _never_raises(grade: Callable[[object, str | None], dict]) -> Callable[[object, str | None], dict]:
    # A reply that trips sympy or math-verify in a way they do not catch is an unreadable answer.
    @functools.wraps(grade)
    def guarded(reference: object, text: str | None) -> dict:
        try:
            return grade(reference, text)
        except Exception:  # noqa: BLE001 - any failure to read one reply grades that reply wrong
            log.warning("could not grade a reply against %r; graded wrong", reference, exc_info=True)
            return {"extracted": None, "correct": False}

    return guarded


def _prepared(text: object) -> str | None:
    # An end-of-turn token left in by the decoder is not part of the answer.
    if text is None:
        return None
    text = _SPECIAL_TOKEN.sub("\n", str(text))
    return text if text.strip() else None


def _closing_brace(text: str, open_at: int) -> int | None:
    # Index of the brace that closes the one at `open_at`, or None when the text stops first.
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    # Every \boxed{...} or \fbox{...} as (start, end, content); content None when the model stopped mid-box.
    found = []
    for match in _BOX_OPEN.finditer(text):
        open_at = match.end() - 1
        close_at = _closing_brace(text, open_at)
        found.append((match.start(), len(text) if close_at is None else close_at + 1,
                      None if close_at is None else text[open_at + 1:close_at].strip()))
    return found


def last_boxed(text: str) -> str | None:
    """Return the content of the last `\\boxed{...}` (or `\\fbox{...}`) with nested braces kept, or None."""
    boxes = _boxes(text)
    return boxes[-1][2] if boxes else None


def boxed_run(text: str) -> list[str]:
    """Return the contents of the last run of boxes: `\\boxed{1}, \\boxed{2}` or `$x = \\boxed{1}$ and $x = \\boxed{-2}$`.

    An answer split over several boxes (a pair, a list, a system's solutions) is one answer, as
    math-verify reads it; boxes apart in the text ("\\boxed{3} at first, then \\boxed{4}") are a revision,
    and only the last counts. [] when there is no box, or the last one is unfinished.
    """
    boxes = _boxes(text)
    if not boxes or boxes[-1][2] is None:
        return []
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = _MATH_DELIMITER.sub(" ", text[box[1]:run[0][0]])
        if box[2] is None or len(gap) > 40 or not _BOX_LIST_GAP.fullmatch(gap):
            break
        run.insert(0, box)
    return [content for _, _, content in run]


def _clean(candidate: str) -> str:
    # Drop what models put around a final answer: bold, one enclosing math span, a closing period.
    while True:
        before = candidate
        candidate = candidate.strip().strip("*").strip().rstrip(".,;!").strip()
        span = _MATH_SPAN.fullmatch(candidate)
        if span:
            candidate = _span_content(span)
        if candidate == before:
            return candidate


def _unwrapped(candidate: str) -> str:
    # "\\mathbf{127}" and "\\text{p - q}" state 127 and p - q; "\\text{Evelyn}" stays text for math-verify.
    while True:
        candidate = candidate.strip()
        wrapper = _WRAPPER_OPEN.match(candidate)
        if not wrapper or _closing_brace(candidate, wrapper.end() - 1) != len(candidate) - 1:
            return candidate
        content = candidate[wrapper.end():-1]
        if not _MATH_CONTENT.search(content):
            return candidate
        candidate = content


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line[:end.start()] if (end := _SENTENCE_END.search(line + " ")) else line
    return line[:reason.start()] if (reason := _REASON.search(line)) else line


def extract_answer(text: str | None) -> str | None:
    """Return the stated final answer in `text` (Minerva sentence, boxed, `the answer is`, `Answer:`, bold), or None."""
    text = _prepared(text)
    if text is None:
        return None
    minerva = list(_MINERVA.finditer(text))
    if minerva:
        return _clean(minerva[-1].group(1)) or None
    boxed = [_clean(content) for content in boxed_run(text)]
    if boxed and all(boxed):  # an empty \boxed{} is an echo of the instruction, not an answer
        return _grouped_thousands(", ".join(boxed))
    for pattern in (_ANSWER_PHRASE, _BOLD):
        matches = list(pattern.finditer(text))
        if matches:
            stated = _clean(_first_sentence(matches[-1].group(1)))
            if stated:
                return _grouped_thousands(_number_in_prose(stated))
    return None


def _grouped_thousands(stated: str) -> str:
    # "1 000" and "1\\,000" are one thousand, not a product: join the groups before math-verify reads them.
    return _SPACED_THOUSANDS.sub(lambda number: _GROUP_SPACE.sub("", number.group(0)), stated)


def _number_in_prose(stated: str) -> str:
    # "Answer: She needs 3 more." states 3, as lm-eval's number extraction and Qwen2.5-Math read it; a
    # sentence naming two different numbers states neither, and stays as written (and grades wrong).
    plain = _MATH_DELIMITER.sub(" ", stated)
    if "\\" in plain or not _PROSE_WORD.search(plain):
        return stated
    numbers = {number.replace(",", "") for number in _NUMBER.findall(_THOUSANDS.sub("", plain))}
    return numbers.pop() if len(numbers) == 1 else stated


def _math_verify_timeout() -> int | None:
    # math-verify times out with signal.alarm, which only works on the main thread; Serve replicas
    # and Ray workers may grade elsewhere, so they run without its timeout.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.cache
def _warm_math_verify() -> None:
    # The first parse builds math-verify's LaTeX grammar (about 0.5 s, far more on a busy machine);
    # doing it outside the timeout keeps a slow first call from grading a right answer as wrong.
    parse("$1$", parsing_timeout=None)


def _parse(text: str, targets: tuple) -> list:
    _warm_math_verify()
    return parse(text, list(targets), parsing_timeout=_math_verify_timeout())


def _parsed(found: list) -> bool:
    return bool(found) and not isinstance(found[0], str)


def _span_content(span: re.Match) -> str:
    return next(group for group in span.groups() if group is not None)


def _stated_math(stated: str) -> str:
    # An answer that opens with a math span is that span ("$x = 5$, since $y = 2$" states x = 5) unless
    # a list of spans follows ("$1$ and $2$"); a bare expression ("\\dfrac{1}{2}") parses best wrapped.
    span = _MATH_SPAN.match(stated)
    if span and not _SPAN_LIST.match(stated, span.end()):
        return f"${_unwrapped(_span_content(span))}$"
    return stated if _UNESCAPED_DOLLAR.search(stated) else f"${_unwrapped(stated)}$"


def read_math(text: str | None) -> list:
    """Return math-verify's reading of the final answer in `text` ([value, as written]), or [] when there is none."""
    text = _prepared(text)
    if text is None:
        return []
    stated = extract_answer(text)
    if stated is not None:
        found = _parse(_stated_math(stated), _ANY_MATH)
        if _parsed(found):
            return found
    for targets in (_ANCHORED_LATEX, _ANY_MATH):
        found = _parse(text, targets)
        if _parsed(found):
            return found
    return [stated] if stated else []


def extract_math(text: str | None) -> str | None:
    """Return the final answer in `text` as written (normalised by math-verify), or None."""
    found = read_math(text)
    return found[-1] if found else None


def _as_integer(value: object) -> int | None:
    # "m+n=25" states 25; "\text{(113) }" reads as a symbol named 113; "25.0" is the integer 25.
    if isinstance(value, sympy.core.relational.Relational):
        value = value.rhs
    if isinstance(value, sympy.Basic) and value.is_number:
        try:
            return int(value) if value == sympy.Integer(int(value)) else None
        except (TypeError, ValueError, OverflowError):
            return None
    found = _DIGITS_ONLY.fullmatch(str(value))
    return int(found.group(1)) if found else None


def extract_integer(text: str | None) -> int | None:
    """Return the integer answer in `text` ("025" reads as 25, "1,024" as 1024, "x = 7" as 7), or None."""
    text = _prepared(text)
    if text is None:
        return None
    for value in read_math(_THOUSANDS.sub("", text)):
        as_int = _as_integer(value)
        if as_int is not None:
            return as_int
    return None


def _flatten_choice_marks(text: str) -> str:
    # "\boxed{\text{B}}", "$B$", "\textbf{(B)}", "(B)" all state the letter B; math-verify's string
    # extraction reads a letter between spaces, so reduce each to one.
    while True:
        unwrapped = _LATEX_WRAPPER.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    text = re.sub(r"\\boxed\s*\{([^{}]*)\}", r" \1 ", text)
    text = _MATH_DELIMITER.sub(" ", text)
    return _CHOICE_IN_PARENS.sub(r" \1 ", text)


def extract_choice(text: str | None) -> str | None:
    """Return the stated choice letter A-D in `text` (boxed, `The answer is B`, `Answer: (B)`, a bare `B`), or None.

    A letter after an answer statement wins over letters elsewhere (`The answer is B because (A) is
    wrong.` is B); a reply that states none is read from its last sentence (`…so I think it's B`), and
    only then from its last parenthesised letter.
    """
    text = _prepared(text)
    if text is None:
        return None
    boxed = last_boxed(text)
    if boxed:
        alone = _CHOICE_ALONE.match(_flatten_choice_marks(boxed).strip())
        if alone:
            return alone.group(1)
    flat = _flatten_choice_marks(text)
    stated = _parse(flat, _STATED_CHOICE)
    if stated:
        return str(stated[0]).upper()
    alone = _CHOICE_ALONE.match(flat.strip()) or _CHOICE_ALONE.match(text.strip())
    if alone:
        return alone.group(1)
    lowercase = _LOWERCASE_CHOICE.search(flat)
    if lowercase:
        return lowercase.group(1).upper()
    concluded = _concluded_choice(flat)
    if concluded:
        return concluded
    in_parens = _CHOICE_IN_PARENS.findall(text)
    return in_parens[-1] if in_parens else None


def _concluded_choice(flat: str) -> str | None:
    # "...so I think it's B" or "Because B is valid": the one letter the last sentence names, as lm-eval's
    # flexible extraction reads a letter standing alone. A sentence naming two letters, or ruling one out
    # ("B is wrong"), concludes nothing; "A" before a noun is the article.
    sentences = [s for s in _SENTENCE_BREAK.split(flat) if s.strip()]
    if not sentences or _RULED_OUT.search(sentences[-1]):
        return None
    letters = {m.group(1) for m in _LETTER_WORD.finditer(sentences[-1])
               if m.group(1) != "A" or not _ARTICLE_USE.match(sentences[-1], m.end())}
    return letters.pop() if len(letters) == 1 else None


@_never_raises
def grade_integer(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"} comparing the integer in `text` with `reference` as integers."""
    extracted = extract_integer(text)
    expected = _reference_integer(str(reference))
    return {"extracted": extracted, "correct": extracted is not None and extracted == expected}


@functools.lru_cache(maxsize=4096)
def _reference_integer(reference: str) -> int | None:
    found = _DIGITS_ONLY.fullmatch(reference.strip())
    return int(found.group(1)) if found else extract_integer(reference)


@_never_raises
def grade_choice(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"} comparing the choice letter in `text` with the reference letter."""
    extracted = extract_choice(text)
    return {"extracted": extracted, "correct": extracted is not None and extracted == str(reference).strip()}


@functools.lru_cache(maxsize=4096)
def _gold(reference: str) -> tuple:
    # Benchmark data, not model output: parsed once per reference, without a timeout.
    _warm_math_verify()
    return tuple(parse(f"${reference}$", parsing_timeout=None))


def _equivalent(reference: str, predicted: tuple) -> bool:
    gold = list(_gold(reference))
    return bool(gold) and bool(verify(gold, list(predicted), timeout_seconds=_math_verify_timeout()))


# sympy's simplify dominates grading time, and replies repeat answers (a sweep grades the same
# benchmark in every trial), so each (reference, reading) pair is verified once.
_equivalent_cached = functools.lru_cache(maxsize=16384)(_equivalent)


def _verdict(reference: str, predicted: list) -> bool:
    try:
        return _equivalent_cached(reference, tuple(predicted))
    except TypeError:  # a mutable reading (a sympy Matrix) cannot be a cache key
        return _equivalent(reference, tuple(predicted))


@_never_raises
def grade_math(reference: object, text: str | None) -> dict:
    """Return {"extracted", "correct"}: math-verify equivalence of the answer read from `text` with the reference."""
    predicted = read_math(text)
    if not predicted:
        return {"extracted": None, "correct": False}
    return {"extracted": predicted[-1], "correct": _verdict(str(reference), predicted)}
