"""How one reply is generated: the prompt, the thinking prefill, and s1's budget forcing.

Both backends speak OpenAI-style completions: a request is a plain dict
`{model, prompt, max_tokens, temperature, top_p, stop, seed}` and a response holds
`choices[0].{text, finish_reason, stop_reason}` and `usage.completion_tokens`. A reply takes one request,
or two under a thinking budget: the thinking request stops at the answer marker or at the budget, the
marker is then written into the prompt and a second request generates the answer (s1's budget forcing).
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluators.config import GenerationSettings
from trainables.formats import ReasoningFormat, get_format, prompt_text

# The ChatML end of turn; backends also stop at the model's own EOS token.
END_OF_TURN = "<|im_end|>"


@dataclass(frozen=True)
class Completion:
    """One backend response: the text (stop string excluded), why it ended, and its length in tokens."""

    text: str
    finish_reason: str  # "stop" or "length"
    stop_reason: str | int | None  # the stop string or token id matched; None at EOS or length
    completion_tokens: int

    @classmethod
    def from_openai(cls, response: dict) -> Completion:
        """Return the first choice of an OpenAI-style completion response."""
        choice = response["choices"][0]
        return cls(
            text=choice["text"],
            finish_reason=choice.get("finish_reason") or "stop",
            stop_reason=choice.get("stop_reason"),
            completion_tokens=int(response.get("usage", {}).get("completion_tokens", 0)),
        )


def completion_response(model: str | None, completion: Completion, prompt_tokens: int) -> dict:
    """Return `completion` as an OpenAI-style completion response dict."""
    return {
        "object": "text_completion",
        "model": model,
        "choices": [{
            "index": 0,
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "stop_reason": completion.stop_reason,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion.completion_tokens},
    }


@dataclass
class Reply:
    """A reply being generated: the templated prompt, the text so far, and the tokens spent."""

    prompt: str
    prefill: str
    model: str | None
    generated: str = ""
    tokens_used: int = 0
    thinking_done: bool = False

    @property
    def output(self) -> str:
        """The whole assistant turn as the model wrote it, prefill included."""
        return self.prefill + self.generated


class ReplyPlanner:
    """Turns prompts into completion requests and responses into replies, for one set of settings."""

    def __init__(self, settings: GenerationSettings, tokenizer) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.format: ReasoningFormat = get_format(settings.reasoning_format)
        self.answer_stop = self.format.think_close.strip()

    def start(self, prompt: str, model: str | None) -> tuple[Reply, dict]:
        """Return a new reply for a user prompt and its first request."""
        prefill = self.format.think_prefill if self.settings.thinking_prefill else ""
        reply = Reply(prompt=prompt_text(self.tokenizer, prompt) + prefill, prefill=prefill, model=model)
        if self.settings.thinking_budget is None:
            reply.thinking_done = True
            return reply, self._request(reply, self.settings.max_new_tokens)
        budget = min(self.settings.thinking_budget, self.settings.max_new_tokens)
        return reply, self._request(reply, budget, extra_stop=[self.answer_stop])

    def advance(self, reply: Reply, completion: Completion) -> dict | None:
        """Record a response in `reply`; return the next request, or None when the reply is complete."""
        reply.generated += completion.text
        reply.tokens_used += completion.completion_tokens
        if reply.thinking_done:
            return None
        reply.thinking_done = True
        # As in s1, the thinking phase ends the same way however it stopped (budget spent, answer
        # marker, end of turn): the answer marker is written and the answer generated after it.
        ended_by_marker = completion.finish_reason == "stop" and completion.stop_reason == self.answer_stop
        # A model that wrote the marker itself already wrote the whitespace before it.
        reply.generated += self.format.think_close.lstrip() if ended_by_marker else self.format.think_close
        remaining = self.settings.max_new_tokens - reply.tokens_used
        if remaining <= 0:
            return None
        return self._request(reply, remaining)

    def _request(self, reply: Reply, max_tokens: int, extra_stop: list[str] = ()) -> dict:
        return {
            "model": reply.model,
            "prompt": reply.prompt + reply.generated,
            "max_tokens": max_tokens,
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "stop": [*extra_stop, END_OF_TURN],
            "seed": self.settings.seed,
        }
