"""Interventions on massive activations: exact targets, mean as a fixed bias, perplexity."""

import math

import pandas as pd
import pytest
import torch

import tiny
from conftest import assert_one_line_error, run_module
from pipeline import ablate, interventions
from pipeline.capture import block_hooks

LAYER, DIM = 1, 7


def planted(family="llama"):
    return tiny.plant(tiny.build(family), layer=LAYER, dim=DIM)


def outputs(model, ids, name=None, means=None, layers=(LAYER,), seed=0):
    """Every block's output (and the logits), under intervention `name` (None: untouched)."""
    seen = {}
    ctx = interventions.Context(layer=-1, roles=torch.zeros_like(ids), means=means or {},
                                generator=torch.Generator().manual_seed(seed))
    record = lambda layer, h: seen.__setitem__(layer, h.clone())  # noqa: E731
    with torch.inference_mode():
        if name is None:
            with block_hooks(model, record):
                logits = model(ids).logits
        else:  # the recording hooks are registered after the intervention's, so they see its result
            with interventions.applied(model, name, list(layers), [DIM], 100.0, 1000.0, ctx), block_hooks(model, record):
                logits = model(ids).logits
    return seen, logits, ctx


def test_zero_changes_exactly_the_massive_entries():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    after, _, ctx = outputs(model, ids, "zero")
    diff = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert sorted(diff) == [[b, 0, DIM] for b in range(3)]
    assert ctx.changed == 3
    assert torch.all(after[LAYER][:, 0, DIM] == 0)
    for layer in range(LAYER):
        assert torch.equal(before[layer], after[layer])


def test_random_control_touches_no_massive_entry_and_as_many_others():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    after, _, ctx = outputs(model, ids, "random_zero", seed=3)
    changed = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert ctx.changed == 3 and len(changed) <= 3  # an entry that was already 0 stays "unchanged"
    assert all(not (t == 0 and d == DIM) for _, t, d in changed)
    assert torch.all(after[LAYER][:, 0, DIM] == before[LAYER][:, 0, DIM])


def test_mean_with_the_observed_value_reproduces_the_logits():
    model, ids = planted(), tiny.sequences(1, 20)
    before, logits, _ = outputs(model, ids)
    observed = float(before[LAYER][0, 0, DIM])
    _, logits_mean, ctx = outputs(model, ids, "mean", means={(LAYER, DIM, "first"): observed})
    assert ctx.changed == 1
    assert torch.equal(logits, logits_mean)


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi"])
def test_planted_bias_zero_breaks_mean_keeps(family):
    """The planted activation is constant across inputs: zero changes logits, mean does not."""
    model, ids = planted(family), tiny.sequences(4, 20, seed=1)
    before, logits, _ = outputs(model, ids)
    value = float(before[LAYER][:, 0, DIM].mean())
    _, zero_logits, _ = outputs(model, ids, "zero")
    _, mean_logits, _ = outputs(model, ids, "mean", means={(LAYER, DIM, "first"): value})
    assert (zero_logits - logits).abs().max() > 1e-2
    torch.testing.assert_close(mean_logits, logits, rtol=1e-4, atol=1e-4)


def test_perplexity_matches_an_independent_reference():
    model, ids = planted(), tiny.sequences(3, 16, seed=2)
    with torch.inference_mode():
        ppl, n = ablate.perplexity(model, ids, batch_size=2, device=torch.device("cpu"))
        losses = [model(ids[i : i + 1], labels=ids[i : i + 1]).loss.item() for i in range(3)]  # HF's own shift and mean
    assert n == 3 * 15
    assert ppl == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_unknown_intervention_is_rejected():
    model, ids = planted(), tiny.sequences(1, 8)
    with pytest.raises(ValueError, match="unknown intervention 'halve'"):
        with interventions.applied(model, "halve", [0], [DIM], 100, 1000, interventions.Context(0, ids)):
            pass


def test_layers_spec():
    assert ablate.parse_layers("emerge", 3, 10) == [3]
    assert ablate.parse_layers("all", 3, 4) == [0, 1, 2, 3]
    assert ablate.parse_layers("2_5", 3, 10) == [2, 5]
    with pytest.raises(Exception, match="ablate layer 12 is out of range: the model has blocks 0..9"):
        ablate.parse_layers("12", 3, 10)


def test_bad_inputs_fail_with_one_line(tmp_path):
    base = ["model=tiny_random", f"paths.root={tmp_path}"]
    assert_one_line_error(run_module("ablate", *base, "ablate.interventions=[none,halve]"), "halve")
    assert_one_line_error(run_module("ablate", *base, "ablate.max_chunks=0"), "ablate.max_chunks=0")
    assert_one_line_error(run_module("ablate", *base, "tokenize.num_sequences=0"), "tokenize.num_sequences=0")
