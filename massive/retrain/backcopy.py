"""Bigram-Backcopy (Guo et al. 2024): a synthetic language on which tiny transformers grow sinks.

Every sequence starts with the start token. After it, tokens follow a fixed random bigram
table (each row drawn from Dirichlet(alpha)), except after a trigger token: the token that
follows a trigger copies the token just before the trigger. Two switches set how a sequence
begins (`BackcopySpec`): `start` makes the start token id 0 of the vocabulary (`inside`) or an
extra id, vocab_size, outside it (`outside`, as Guo et al.'s code: one more embedding row and
logit; the language, ids 1 .. vocab_size - 1, stays exactly the same, id 0 is then unused);
`after_start` draws position 1 from the start token's own bigram row
(`bigram`: a Dirichlet row, so nearly always the same few tokens) or uniformly from the
non-trigger tokens (`uniform`); `loss_on_first=False` leaves the start token's own prediction
(of position 1) out of the loss, so nothing asks the start token's state to encode that
distribution. Predicting a bigram needs only the
current token; predicting a copy needs attention to the previous token. Heads that have nothing
to do on bigram positions learn to rest on the start token: an attention sink, and with it a
large hidden state at the start token.

The task (bigram table and triggers) is fixed by `task_seed`; a batch is a pure function of
(seed, split, step), so a resumed training run sees exactly the batches it would have seen.

    >>> from massive.retrain.backcopy import Backcopy, BackcopySpec
    >>> task = Backcopy(BackcopySpec(vocab_size=64, n_triggers=3, alpha=0.2, task_seed=0))
    >>> x, y = task.batch("train", step=0, batch_size=8, block_size=64, seed=1)
    >>> x.shape, int(x[0, 0])   # every sequence starts with the start token
    (torch.Size([8, 64]), 0)
    >>> outside = Backcopy(BackcopySpec(start="outside", after_start="uniform"))
    >>> outside.start, outside.n_ids   # the model needs vocab_size >= n_ids
    (64, 65)
"""

from __future__ import annotations

import torch

from massive.core.errors import MassiveError
from massive.retrain.train_spec import AFTER_START, STARTS, BackcopySpec  # noqa: F401 - also importable from here

START = 0  # the start token inside the vocabulary, at position 0 of every sequence and nowhere else
SPLITS = {"train": 0, "val": 1, "probe": 2}  # probe: the fixed batch of the emergence metrics


class Backcopy:
    """The task fixed by `spec`: its bigram table, its triggers, and seeded batches.

    >>> task = Backcopy(BackcopySpec())
    >>> task.triggers.tolist(), round(task.optimal_loss(), 2)   # doctest: +SKIP
    """

    def __init__(self, spec: BackcopySpec):
        if spec.vocab_size < spec.n_triggers + 3:
            raise MassiveError(f"vocab_size={spec.vocab_size} is too small for {spec.n_triggers} triggers")
        self.spec = spec
        g = torch.Generator().manual_seed(spec.task_seed)
        # ordinary tokens: 1 .. vocab_size - 1; the start token is id 0 (inside) or id vocab_size (outside),
        # the language the same either way: the same bigram table, triggers and distribution after the start
        self.start = START if spec.start == "inside" else spec.vocab_size
        self.n_ids = spec.n_ids
        n = spec.vocab_size - 1
        # row i: the distribution of the token after token i; the start token never follows anything
        probs = torch.zeros(self.n_ids, self.n_ids, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):  # Dirichlet takes no generator: seed a forked global RNG
            torch.manual_seed(spec.task_seed)
            rows = torch.distributions.Dirichlet(torch.full((n,), float(spec.alpha), dtype=torch.float64))
            probs[: spec.vocab_size, 1 : spec.vocab_size] = rows.sample((spec.vocab_size,))
        if self.start != START:  # the start token takes row 0's distribution; id 0 never occurs (column 0 is 0)
            probs[self.start] = probs[START]
        self.triggers = 1 + torch.randperm(n, generator=g)[: spec.n_triggers]
        if spec.after_start == "uniform":
            probs[self.start, 1 : spec.vocab_size] = 1.0
        probs[self.start, self.triggers] = 0.0  # the first token is never a trigger (nothing to copy yet)
        self.bigram = probs / probs.sum(dim=1, keepdim=True)
        self.is_trigger = torch.zeros(self.n_ids, dtype=torch.bool)
        self.is_trigger[self.triggers] = True

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, length) token ids: start token, then bigram steps and backcopies."""
        x = torch.empty(batch_size, length, dtype=torch.long)
        x[:, 0] = self.start
        for t in range(1, length):
            prev = x[:, t - 1]
            nxt = torch.multinomial(self.bigram[prev], 1, generator=generator).squeeze(1)
            if t >= 2:
                copy = self.is_trigger[prev]
                nxt = torch.where(copy, x[:, t - 2], nxt)
            x[:, t] = nxt
        return x

    def batch(self, split: str, step: int, batch_size: int, block_size: int, seed: int = 0):
        """Inputs and next-token targets, each (batch_size, block_size), seeded by (seed, split, step)."""
        g = torch.Generator().manual_seed(((seed * 1_000_003 + SPLITS[split]) * 1_000_003 + step) % (2**63))
        seq = self.sample(batch_size, block_size + 1, g)
        x, y = seq[:, :-1], seq[:, 1:].clone()
        if not self.spec.loss_on_first:  # the start token's own prediction is not trained (ignore_index -1)
            y[:, 0] = -1
        return x, y

    def optimal_loss(self, n: int = 256, length: int = 65) -> float:
        """Cross-entropy of the true process (bigram entropy; copies are free), for reference."""
        g = torch.Generator().manual_seed(12345)
        seq = self.sample(n, length, g)
        prev, nxt = seq[:, :-1], seq[:, 1:]
        p = self.bigram[prev, nxt]
        copy = torch.zeros_like(prev, dtype=torch.bool)
        copy[:, 1:] = self.is_trigger[prev[:, 1:]]
        nll = torch.where(copy, torch.zeros_like(p), -torch.log(p))
        return float(nll.mean())
