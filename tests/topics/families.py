"""What tests/unit/test_families.py and tests/rules/test_families_rule.py share: a tiny model of a family with
an activation planted in its MLP (in an MoE block where there is one)."""

from massive.core import arch, families

DIM = 7


def planted_family(family):
    import tiny

    model = families.build(family)
    parts = arch.find_parts(model)
    d = arch.hidden_size(model.config)
    layer = next(
        (i for i, m in enumerate(parts.mlps) if arch.down_weights(m, d).experts), 0
    )  # an MoE block where there is one
    return tiny.plant_family(model, layer, DIM), layer
