"""How token sequences are made: the one protocol, for every measure.

The paper's protocol for statistics (Sun et al. 2024): sample documents with a seed, join them
with blank lines, tokenise the whole text once, cut the token stream into consecutive chunks of
`seq_len` tokens and keep the first `n`. For perplexity: the documents in their order, joined
the same way, cut into non-overlapping `seq_len` chunks (the first `max_chunks`). A prompt (the
paper's Fig. 1 "Summer is warm. Winter is cold.") is tokenised the same way.

How a sequence begins is the model's `Protocol` (`resolve(tok, bos)`, bos: auto | always |
never): with a BOS, every sequence is the tokenizer's BOS token followed by seq_len - 1 text
tokens (every chunk, not only the first of the joined text); without, seq_len text tokens (the
paper's protocol). `auto` is what the model's own tokenizer does by default
(`tok(text)` with its special tokens). The text itself is always tokenised without special
tokens, and `make` is the one function that turns a text into sequences: `sequences`,
`perplexity_chunks` and `encode_prompt` all call it, so no measure can be made in another
regime than the others.

    >>> protocol = resolve(tok, "auto")                  # Protocol(bos=False, ...) for SmolLM2
    >>> ids = sequences(tok, docs, seq_len=256, n=16, seed=1, protocol=protocol)   # LongTensor [16, 256]
    >>> chunks = perplexity_chunks(tok, docs, seq_len=256, max_chunks=16, protocol=protocol)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the annotations only: torch is imported where tensors are made (make)
    import torch

from massive.core.errors import MassiveError

SEPARATOR = "\n\n"
BOS_MODES = ("auto", "always", "never")
PROTOCOLS = {"bos": "always", "no_bos": "never"}  # a protocol's name -> the model.bos that gives it


@dataclass(frozen=True)
class Protocol:
    """How every sequence of a run begins.

    bos                 every sequence begins with bos_token_id (then seq_len - 1 text tokens)
    requested           the model.bos it was resolved from: auto | always | never
    tokenizer_adds_bos  whether the model's tokenizer adds a BOS by default
    bos_token_id, bos_token  the tokenizer's BOS (None: it has none)
    """

    bos: bool = False
    requested: str = "never"
    tokenizer_adds_bos: bool = False
    bos_token_id: int | None = None
    bos_token: str | None = None

    @property
    def name(self) -> str:
        """ "bos" or "no_bos": the protocol's name in tables, paths and the report."""
        return "bos" if self.bos else "no_bos"

    @property
    def warning(self) -> str | None:
        """A sentence when the tokenizer adds a BOS by default but this run has none (else None)."""
        if self.tokenizer_adds_bos and not self.bos:
            return (
                f"the tokenizer adds a BOS ({self.bos_token!r}) by default, but this run has none "
                f"(model.bos={self.requested}): the model is measured outside its usual regime"
            )
        return None

    def record(self) -> dict:
        """The protocol as plain values (summary JSON files, provenance)."""
        return {"protocol": self.name, **asdict(self), "warning": self.warning}


NO_BOS = Protocol()  # the paper's protocol


def tokenizer_adds_bos(tok) -> bool:
    """Whether `tok(text)` (its default special tokens) begins with the tokenizer's BOS token.

    >>> tokenizer_adds_bos(byte_tokenizer()), tokenizer_adds_bos(byte_tokenizer(add_bos=True))
    (False, True)
    """
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return False
    ids = tok("a")["input_ids"]
    return bool(ids) and ids[0] == bos and tok("a", add_special_tokens=False)["input_ids"][:1] != [bos]


@dataclass(frozen=True)
class BosFacts:
    """What `resolve` reads from a tokenizer: its BOS token (None: it has none) and whether it adds it
    by default. Recorded once (pipeline/fetch_model.py), so a run resolves its protocol without loading
    the tokenizer.

        >>> BosFacts.of(byte_tokenizer(add_bos=True))
        BosFacts(bos_token_id=0, bos_token='<s>', adds_bos=True)
    """

    bos_token_id: int | None = None
    bos_token: str | None = None
    adds_bos: bool = False

    @classmethod
    def of(cls, tok) -> "BosFacts":
        token_id = getattr(tok, "bos_token_id", None)
        return cls(
            bos_token_id=token_id,
            bos_token=getattr(tok, "bos_token", None) if token_id is not None else None,
            adds_bos=tokenizer_adds_bos(tok),
        )


def resolve(tok, bos: str = "auto", name: str | None = None) -> Protocol:
    """The Protocol of model.bos=`bos` (auto | always | never) for tokenizer `tok` (or its BosFacts).
    `always` for a tokenizer without a BOS token is a MassiveError naming the model (`name`).

        >>> resolve(byte_tokenizer(), "auto").name, resolve(byte_tokenizer(add_bos=True), "auto").name
        ('no_bos', 'bos')
    """
    bos = getattr(bos, "value", bos)
    if bos not in BOS_MODES:
        raise MassiveError(f"model.bos={bos!r} is not one of {', '.join(BOS_MODES)}")
    facts = tok if isinstance(tok, BosFacts) else BosFacts.of(tok)
    token_id, adds = facts.bos_token_id, facts.adds_bos
    if bos == "always" and token_id is None:
        raise MassiveError(
            f"model.bos=always, but the tokenizer of {name or 'the model'} has no BOS token "
            "(use model.bos=never or auto)"
        )
    on = bos == "always" or (bos == "auto" and adds)
    return Protocol(
        bos=on,
        requested=bos,
        tokenizer_adds_bos=adds,
        bos_token_id=token_id,
        bos_token=facts.bos_token,
    )


def sample_text(docs: list[str], num_documents: int, seed: int, separator: str = SEPARATOR) -> str:
    """`num_documents` documents drawn without replacement with `seed`, joined by `separator`."""
    order = np.random.default_rng(seed).permutation(len(docs))[:num_documents]
    return separator.join(docs[i] for i in order)


def chunk(ids: list[int], seq_len: int, count: int) -> list[list[int]]:
    """The first `count` consecutive, non-overlapping chunks of `seq_len` ids (fewer if the stream is short)."""
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(min(count, len(ids) // seq_len))]


def encode(tok, text: str) -> list[int]:
    """The token ids of `text` as one stream of text tokens (no special tokens: the protocol adds the BOS)."""
    return tok(text, add_special_tokens=False)["input_ids"]


def make(tok, text: str, seq_len: int | None, count: int, protocol: Protocol = NO_BOS) -> torch.Tensor:
    """LongTensor [count', seq_len] (count' <= count): `text` tokenised once and cut into
    consecutive chunks, each beginning as `protocol` says (with a BOS: the BOS then seq_len - 1
    text tokens). seq_len None: one sequence of the whole text (a prompt). The one function that
    makes the sequences of every measure.

        >>> make(byte_tokenizer(), "abcdef", seq_len=4, count=2, protocol=resolve(byte_tokenizer(), "always"))
        tensor([[ 0, 66, 67, 68], [ 0, 69, 70, 71]])
    """
    import torch  # here, not at the top: the config reads BOS_MODES and PROTOCOLS without torch

    ids = encode(tok, text)
    head = [protocol.bos_token_id] if protocol.bos else []
    if protocol.bos and protocol.bos_token_id is None:
        raise MassiveError("the protocol has a BOS but no bos_token_id")
    if seq_len is None:
        return torch.tensor([head + ids], dtype=torch.long)
    if seq_len <= len(head):
        raise MassiveError(f"seq_len={seq_len} leaves no text token after the BOS")
    seqs = [head + c for c in chunk(ids, seq_len - len(head), count)]
    return torch.tensor(seqs, dtype=torch.long).view(len(seqs), seq_len)


def sequences(
    tok,
    docs: list[str],
    seq_len: int,
    n: int,
    seed: int,
    num_documents: int = 500,
    separator: str = SEPARATOR,
    protocol: Protocol = NO_BOS,
) -> torch.Tensor:
    """LongTensor [n', seq_len] (n' <= n: fewer when the sample has fewer tokens) of the paper's
    statistics protocol, each sequence beginning as `protocol` says. Fewer than one sequence is an error.

        >>> sequences(tok, ["a short text"] * 100, seq_len=8, n=2, seed=1).shape
        torch.Size([2, 8])
    """
    if not docs:
        raise MassiveError("no documents to make sequences of")
    seqs = make(tok, sample_text(docs, num_documents, seed, separator), seq_len, n, protocol)
    if not len(seqs):
        raise MassiveError(f"the sampled documents give fewer tokens than one sequence of seq_len={seq_len}")
    return seqs


def perplexity_chunks(
    tok, docs: list[str], seq_len: int, max_chunks: int, separator: str = SEPARATOR, protocol: Protocol = NO_BOS
) -> torch.Tensor:
    """LongTensor [chunks, seq_len]: the documents in order, joined, cut into the first
    `max_chunks` non-overlapping chunks (the paper's perplexity protocol), each beginning as
    `protocol` says (a BOS is the input of the first prediction, never a predicted token).

        >>> perplexity_chunks(tok, docs, seq_len=256, max_chunks=16).shape
        torch.Size([16, 256])
    """
    seqs = make(tok, separator.join(docs), seq_len, max_chunks, protocol)
    if not len(seqs):
        raise MassiveError(f"the documents have fewer tokens than seq_len={seq_len}: no perplexity chunk")
    return seqs


def encode_prompt(tok, prompt: str, protocol: Protocol = NO_BOS) -> torch.Tensor:
    """LongTensor [1, tokens] of one prompt, tokenised as the sequences are (`make`).

    >>> encode_prompt(tok, "Summer is warm. Winter is cold.").shape
    torch.Size([1, 8])
    """
    return make(tok, prompt, None, 1, protocol)
