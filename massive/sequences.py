"""How token sequences are made: the one protocol, for every measure.

The paper's protocol for statistics (Sun et al. 2024): sample documents with a seed, join them
with blank lines, tokenise the whole text once, cut the token stream into consecutive chunks of
`seq_len` tokens and keep the first `n`. For perplexity: the documents in their order, joined
the same way, cut into non-overlapping `seq_len` chunks (the first `max_chunks`). A prompt (the
paper's Fig. 1 "Summer is warm. Winter is cold.") is tokenised the same way.

Whether the tokenizer's special tokens (a BOS) are added is one argument of every function
here, `add_special_tokens`, so a measure can never be made in another regime than the others.

    >>> ids = sequences(tok, docs, seq_len=256, n=16, seed=1)      # LongTensor [16, 256]
    >>> chunks = perplexity_chunks(tok, docs, seq_len=256, max_chunks=16)
"""

from __future__ import annotations

import numpy as np
import torch

from massive.errors import MassiveError

SEPARATOR = "\n\n"


def sample_text(docs: list[str], num_documents: int, seed: int, separator: str = SEPARATOR) -> str:
    """`num_documents` documents drawn without replacement with `seed`, joined by `separator`."""
    order = np.random.default_rng(seed).permutation(len(docs))[:num_documents]
    return separator.join(docs[i] for i in order)


def chunk(ids: list[int], seq_len: int, count: int) -> list[list[int]]:
    """The first `count` consecutive, non-overlapping chunks of `seq_len` ids (fewer if the stream is short)."""
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(min(count, len(ids) // seq_len))]


def encode(tok, text: str, add_special_tokens: bool = False) -> list[int]:
    """The token ids of `text` as one stream."""
    return tok(text, add_special_tokens=add_special_tokens)["input_ids"]


def sequences(tok, docs: list[str], seq_len: int, n: int, seed: int, num_documents: int = 500,
              separator: str = SEPARATOR, add_special_tokens: bool = False) -> torch.Tensor:
    """LongTensor [n', seq_len] (n' <= n: fewer when the sample has fewer tokens) of the paper's
    statistics protocol. Fewer than one sequence is an error.

        >>> sequences(tok, ["a short text"] * 100, seq_len=8, n=2, seed=1).shape
        torch.Size([2, 8])
    """
    if not docs:
        raise MassiveError("no documents to make sequences of")
    ids = encode(tok, sample_text(docs, num_documents, seed, separator), add_special_tokens)
    seqs = chunk(ids, seq_len, n)
    if not seqs:
        raise MassiveError(f"the sampled documents give {len(ids)} tokens, fewer than one sequence of seq_len={seq_len}")
    return torch.tensor(seqs, dtype=torch.long)


def perplexity_chunks(tok, docs: list[str], seq_len: int, max_chunks: int, separator: str = SEPARATOR,
                      add_special_tokens: bool = False) -> torch.Tensor:
    """LongTensor [chunks, seq_len]: the documents in order, joined, cut into the first
    `max_chunks` non-overlapping chunks (the paper's perplexity protocol).

        >>> perplexity_chunks(tok, docs, seq_len=256, max_chunks=16).shape
        torch.Size([16, 256])
    """
    ids = encode(tok, separator.join(docs), add_special_tokens)
    n = min(len(ids) // seq_len, max_chunks)
    if n == 0:
        raise MassiveError(f"the documents have {len(ids)} tokens, fewer than seq_len={seq_len}: no perplexity chunk")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def encode_prompt(tok, prompt: str, add_special_tokens: bool = False) -> torch.Tensor:
    """LongTensor [1, tokens] of one prompt, tokenised as the sequences are.

        >>> encode_prompt(tok, "Summer is warm. Winter is cold.").shape
        torch.Size([1, 8])
    """
    return tok(prompt, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]
