"""What tests/unit/test_train.py and tests/rules/test_train_rule.py share: a tiny GPT of each variant."""

from __future__ import annotations

import torch

from massive.retrain.gpt import GPT, GPTConfig

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny(variant: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY, variant=variant)).eval()
