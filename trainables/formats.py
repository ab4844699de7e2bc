"""Reasoning formats: how a thinking part and an answer part become one assistant turn, and back.

The paper's models (s1.1) write `<|im_start|>think\n…<|im_start|>answer\n…`; R1-style models write
`<think>\n…\n</think>\n\n…`. Training renders with these markers, and evaluation prefills the thinking
marker, forces the answer marker when the thinking budget runs out, and reads the answer after it.
"""

from __future__ import annotations

from dataclasses import dataclass

# DirectRefusal's fixed thinking part, from the paper's released data.
DIRECT_REFUSAL_THINKING = "I should not answer this question!"


@dataclass(frozen=True)
class Example:
    """One training example: a user prompt and an assistant reply split into thinking and answer."""

    prompt: str
    thinking: str
    answer: str


@dataclass(frozen=True)
class ReasoningFormat:
    """Markers of one reasoning style. `think_prefill` is what generation starts the reply with."""

    name: str
    think_open: str
    think_close: str  # text that ends the thinking and opens the answer

    @property
    def think_prefill(self) -> str:
        return self.think_open

    @property
    def markers(self) -> tuple[str, str]:
        """Return (opening, closing) marker of the thinking part, without the whitespace around them."""
        return self.think_open.strip(), self.think_close.strip()

    def render_response(self, thinking: str, answer: str) -> str:
        """Return the assistant turn's text for a thinking part and an answer part."""
        return f"{self.think_open}{thinking}{self.think_close}{answer}"

    def split(self, generated: str) -> tuple[str, str | None]:
        """Return (thinking, answer) of a generated reply; answer is None when no marker was written."""
        text = generated
        if text.startswith(self.think_open):
            text = text[len(self.think_open):]
        head, sep, tail = text.partition(self.think_close.strip())
        if not sep:
            return text, None
        return head, tail.strip()


FORMATS: dict[str, ReasoningFormat] = {
    "s1": ReasoningFormat("s1", think_open="<|im_start|>think\n", think_close="<|im_start|>answer\n"),
    "r1": ReasoningFormat("r1", think_open="<think>\n", think_close="\n</think>\n\n"),
}


def get_format(name: str) -> ReasoningFormat:
    """Return the named reasoning format, or raise ValueError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown reasoning format {name!r}; known: {', '.join(FORMATS)}") from None


def prompt_text(tokenizer, prompt: str) -> str:
    """Return the chat-templated user turn followed by the assistant header, as generation sees it."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def render(tokenizer, example: Example, fmt: ReasoningFormat) -> tuple[str, str]:
    """Return (prompt part, completion part) of one example rendered with the model's chat template.

    The completion part runs from the assistant's first token to the end of its turn, so the
    end-of-turn token is learned. Templates that rewrite the assistant turn (some strip thinking)
    fall back to the prompt plus the reply plus the EOS token.
    """
    head = prompt_text(tokenizer, example.prompt)
    response = fmt.render_response(example.thinking, example.answer)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": response}],
        tokenize=False,
    )
    if full.startswith(head) and response in full[len(head):]:
        completion = full[len(head):]
        # Drop trailing whitespace after the end-of-turn token; generation stops at that token.
        return head, completion.rstrip("\n")
    return head, response + (tokenizer.eos_token or "")


IGNORE_INDEX = -100


def tokenize_example(tokenizer, example: Example, fmt: ReasoningFormat, max_length: int) -> dict[str, list[int]]:
    """Return input_ids and labels for one example; prompt tokens get IGNORE_INDEX so only the reply is learned.

    The two parts are tokenized separately and joined, so the mask boundary is exact for any tokenizer.
    """
    head, completion = render(tokenizer, example, fmt)
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}
