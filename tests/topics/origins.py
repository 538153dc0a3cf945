"""What tests/unit/test_origins.py and tests/rules/test_origins_rule.py share: a planted super weight in a tiny
model of each family (in Mixtral, in one expert the router sends the first token to)."""

import torch
from torch import nn

from massive.core import arch

import tiny

LAYER, DIM = 1, 7  # tiny.plant: dim 7 massive at the first token (id 0) from block 1's output on; hidden unit 0
EXPERT = 2  # the one Mixtral expert that keeps the planted weight, and that the router sends token 0 to


@torch.no_grad()
def planted(family: str) -> nn.Module:
    model = tiny.plant(tiny.build(family), LAYER, DIM)
    if family == "mixtral":  # only EXPERT writes it, and the router sends the first token there
        moe = arch.find_parts(model).mlps[LAYER]
        keep = moe.experts.down_proj[EXPERT, DIM, 0].clone()
        moe.experts.down_proj[:, DIM, 0] = 0.0
        moe.experts.down_proj[EXPERT, DIM, 0] = keep
        moe.gate.weight[EXPERT, (DIM + 1) % tiny.D] = 50.0  # the carrier dim: nonzero at token 0 only
    return model
