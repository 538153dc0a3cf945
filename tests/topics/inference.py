"""What tests/unit/test_inference.py and tests/rules/test_inference_rule.py share: a tiny model whose planted
activation has a given value."""

import torch
from torch import nn

from massive.core import hooks

import tiny

LAYER, DIM = 1, 7  # tiny.plant: dim 7 massive at the first token from block 1's output on


def planted(family: str, value: float = 1e5) -> nn.Module:
    """A tiny model whose planted activation is `value` after block LAYER (the gain is linear in it)."""
    probe = tiny.plant(tiny.build(family), LAYER, DIM, gain=1.0)
    with torch.no_grad(), hooks.cache(probe, [hooks.resid_post(LAYER)]) as store:
        probe(tiny.sequences(1, 8))
    return tiny.plant(tiny.build(family), LAYER, DIM, gain=value / float(store[hooks.resid_post(LAYER)][0, 0, DIM]))
