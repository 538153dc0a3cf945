"""What a token is, from its text or its name alone (no torch): a line break, or a ViT's [CLS],
register or patch. massive.measure.detect reads these to give every entry its role."""

from __future__ import annotations

NEWLINE_BYTES = {"\n", "\r", " ", "Ċ"}  # "Ċ": byte-level BPE (GPT-2) for "\n"; "Ġ"-free: spaces are plain here


def is_newline_token(text: str) -> bool:
    """Whether a token's text is only line breaks (and spaces), in plain or GPT-2 byte-level form."""
    return bool(text) and set(text) <= NEWLINE_BYTES and ("\n" in text or "Ċ" in text)


def role_of_name(token: str) -> str:
    """The role of a token named by massive.core.arch.Layout.name."""
    return "cls" if token == "[CLS]" else "register" if token.startswith("[REG") else "patch"
