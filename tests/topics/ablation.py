"""What tests/unit/test_ablation.py and tests/rules/test_ablation_rule.py share: a tiny model with an activation
planted at LAYER, DIM."""

import tiny

LAYER, DIM = 1, 7


def planted(family="llama", **kwargs):
    return tiny.plant(tiny.build(family), layer=LAYER, dim=DIM, **kwargs)
