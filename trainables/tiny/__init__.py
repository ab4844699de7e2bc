"""The embedded default's tiny reasoning model: tokenizer, architecture, generated tasks and stage 1."""
