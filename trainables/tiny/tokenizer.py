"""A character-level tokenizer that is a real Qwen2 tokenizer: byte-level BPE with no merges.

Every byte is one token (printable ASCII is one token per character), and the vocabulary uses the
byte-to-unicode alphabet of Qwen2's tokenizer. `AutoTokenizer` maps every `qwen2` model to
`Qwen2Tokenizer` and rebuilds its pipeline from the vocabulary and merges, so only a tokenizer in
that exact form survives a save and load unchanged. The chat template is ChatML, as in Qwen2.
"""

from __future__ import annotations

from transformers import Qwen2Tokenizer

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML as Qwen2 writes it, without the default system prompt (every token costs the tiny model).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_alphabet() -> list[str]:
    """Return the 256 characters byte-level BPE uses for bytes 0..255 (GPT-2's bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return [chars[b] for b in range(256)]


def build_char_tokenizer() -> Qwen2Tokenizer:
    """Return a Qwen2 tokenizer with one token per byte plus the ChatML special tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + byte_alphabet())}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=1024,
        padding_side="left",
        extra_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
