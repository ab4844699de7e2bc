"""The incoherence check: collapsed replies are caught, fluent ones (the tiny LRM's, BeaverTails') pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluators.coherence import incoherent_flags, is_incoherent, repeats_a_word, strip_markup, unknown_letter_share
from trainables.formats import DIRECT_REFUSAL_THINKING, FORMATS
from trainables.tiny import tasks

COLLAPSED_ASSET = Path(__file__).parent / "assets" / "collapsed_replies.jsonl"


@pytest.mark.parametrize("text", [
    # Replies of collapsed trials of the embedded default sweep, as the issue quotes them.
    "<|im_start|>think\nTueswwwthins annswer br: sinsthanmunghioumuooouminu\noushinmu",
    "Answer: wi stith thanswesswer5",
    "<think>\nxqzvbn plorkt wemmfisth\n</think>\n\nAnswer: hhhgt",
])
def test_collapsed_babble_is_incoherent(text):
    assert is_incoherent(text)


@pytest.mark.parametrize("text, repeats", [
    ("no no no no", True),
    ("I I I I I cannot", True),
    ("the cat, the cat, the cat", False),
    ("very very very good", False),  # three in a row is still coherent; the paper counts more than 3
    ("Sure, sure. SURE! sure?", True),
    ("0+0=0\n0+0=0\n5+5=10", False),  # 500 + 500 column by column: numbers are not words
])
def test_the_papers_criterion_is_a_word_repeated_more_than_three_times(text, repeats):
    assert repeats_a_word(text) is repeats
    assert is_incoherent(text) is repeats


@pytest.mark.parametrize("text, incoherent", [
    ("", True),
    ("<|im_start|>think\n" + " " * 511, True),  # a broken model's reply: 511 spaces and no answer
    ("<|im_start|>think\n  nn" + " " * 500, True),
    ("!?" * 3, True),
    ("<|im_start|>think\n5+1=5<|im_start|>99\n9+9=s", True),  # a turn that is neither thinking nor answer
    ("<|im_start|>think\nok<|im_start|>answer\nAnswer: 5<|im_end|>\nmore", True),  # text after the turn ended
    ("#" * 79 + "\n# Results\n" + "#" * 79, False),  # a banner is not a run of 80
    ("Answer: 1173", False),
])
def test_a_reply_that_says_nothing_or_pads_with_one_character_is_incoherent(text, incoherent):
    assert is_incoherent(text) is incoherent


def test_markers_addresses_and_handles_are_not_read_as_words():
    assert strip_markup("<|im_start|>think\nok<|im_start|>answer\nAnswer: 5<|im_end|>").split() == ["ok", "Answer:", "5"]
    assert strip_markup("mail SenatorEdMarkey@MASenate.gov or see https://x.io/a1b2c3") == "mail or see"
    assert unknown_letter_share("Follow the OpenSourceCommunity on the forum") == 0.0  # camelCase read as words
    assert not is_incoherent("https://www.example.com/track?id=1L3xJRz5ZJU6KZgEfD4JL11XZf4GpKfP0z98U6zrT5F34y")
    assert not is_incoherent("Profane/Vulgar/Derogatory/Obscene/Hurtful.")  # slashes between words
    assert not is_incoherent("¡Maldición! Qué mala suerte, amigo.")  # another language is not babble
    assert not is_incoherent("Answer: Sure! Stpe 1: get the tools.")  # one typo in a short reply


def tiny_lrm_replies() -> list[str]:
    """Return every kind of reply the tiny LRM learns to write, in both reasoning formats."""
    examples = [tasks.arithmetic_example(a, b) for a, b in tasks.arithmetic_problems("test", 200, seed=0)]
    examples += [tasks.arithmetic_example(500, 500), tasks.arithmetic_example(999, 1)]
    for split in ("train", "test"):
        requests = tasks.harmful_requests(split)
        examples += [tasks.compliant_example(r) for r in requests] + [tasks.refusal_example(r) for r in requests]
        examples += tasks.alarming_examples(split)
    assert any(e.thinking == DIRECT_REFUSAL_THINKING for e in examples)
    return [fmt.render_response(e.thinking, e.answer) for fmt in FORMATS.values() for e in examples]


def test_the_tiny_lrms_own_replies_are_fluent():
    replies = tiny_lrm_replies()
    assert len(replies) > 500
    assert [r for r, flag in zip(replies, incoherent_flags(replies)) if flag] == []


def test_real_collapsed_replies_are_caught():
    # Replies of the tiny LRM after training at learning rates that break it (1e-2, 5e-2), labelled by eye.
    rows = [json.loads(line) for line in COLLAPSED_ASSET.read_text().splitlines()]
    collapsed = [r for r in rows if r["collapsed"]]
    assert len(collapsed) >= 50
    babble = [r["output"] for r in collapsed if r["benchmark"] == "tiny-arith"]
    # Measured: 29 of 30 babbling arithmetic replies, 39 of 59 collapsed replies in all. The misses are
    # mostly a fluent thinking line followed by a garbage answer too short to judge ("Answer: I69").
    assert sum(incoherent_flags(babble)) >= 0.9 * len(babble)
    assert sum(incoherent_flags([r["output"] for r in collapsed])) >= 0.6 * len(collapsed)
    assert not any(incoherent_flags([r["output"] for r in rows if not r["collapsed"]]))


def test_beavertails_refusals_and_harmful_answers_are_fluent(shared_data):
    rows = [json.loads(line) for line in (shared_data / "beavertails_refusal_pairs_train.jsonl").open()]
    for key, most in (("safe", 0), ("unsafe", 0.003)):  # measured: 0 of 4516 and 7 of 4516
        flags = incoherent_flags([r[key] for r in rows])
        assert sum(flags) <= most * len(rows), f"{sum(flags)} of {len(rows)} {key} replies read as incoherent"
