"""Where massive activations come from (massive.measure.origins, rule origins): a planted super weight in a
tiny model of each family is found at its exact coordinate, part and block (GPT-2's transposed
Conv1D weight and the right Mixtral expert included); zeroing it removes the massive activation
and the control does not; every weight intervention restores the weights bit for bit, even when
its block raises; an MLP the arch module does not know is one clear line; and the rule end to end."""

import pandas as pd
import pytest
import torch
from torch import nn

from massive.core import hooks
from massive.core.errors import MassiveError
from massive.intervene.interventions import massive_mask
from massive.measure import origins
from massive.measure.capture import capture
from massive.measure.detect import detect

import tiny
from topics.origins import DIM, EXPERT, LAYER, planted

EXPECTED = {  # family -> (parameter, its own index of W[dim, channel])
    "llama": ("model.layers.1.mlp.down_proj.weight", [DIM, 0]),
    "mistral": ("model.layers.1.mlp.down_proj.weight", [DIM, 0]),
    "phi": ("model.layers.1.mlp.fc2.weight", [DIM, 0]),
    "gpt2": ("transformer.h.1.mlp.c_proj.weight", [0, DIM]),  # Conv1D: [d_mlp, d_model]
    "mixtral": ("model.layers.1.mlp.experts.down_proj", [EXPERT, DIM, 0]),
}


def found_in(model, n=4, seq_len=16):
    ids = tiny.sequences(n, seq_len)
    return ids, detect(capture(model, ids, k=16))


def value_at(model, ids) -> torch.Tensor:
    with torch.no_grad(), hooks.cache(model, [hooks.resid_post(LAYER)]) as store:
        model(ids)
    return store[hooks.resid_post(LAYER)]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_planted_super_weight_is_found(family):
    model = planted(family)
    ids, found = found_in(model)
    assert found.dims == [DIM] and found.emerge_layer == LAYER
    o = origins.find(model, ids, found)
    writes = o.sublayers[o.sublayers["writes"]]
    assert writes[["dim", "role", "block", "part"]].values.tolist() == [[DIM, "first", LAYER, "mlp"]]
    assert writes["share"].iloc[0] == pytest.approx(1.0, abs=0.01)
    assert o.sublayers["parallel"].all() == (family == "phi")
    sw = o.primary
    param, coordinate = EXPECTED[family]
    assert len(sw) == 1, sw
    r = sw.iloc[0]
    assert (r["param"], r["coordinate"], r["channel"], r["block"]) == (param, str(coordinate), 0, LAYER)
    assert r["weight"] == 200.0 and r["abs_rank"] == 1 and r["share"] == pytest.approx(1.0, abs=0.01)
    assert r["input_ratio"] > 50  # the down projection's input spikes at that channel and token
    assert r["orientation"] == ("in_out" if family == "gpt2" else "out_in")
    assert dict(model.named_parameters())[param][tuple(coordinate)] == 200.0
    if family == "mixtral":
        assert r["expert"] == EXPERT and r["n_tokens"] == len(ids)
    else:
        assert pd.isna(r["expert"])


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_zeroing_it_removes_the_massive_activation_and_the_control_does_not(family):
    model = planted(family)
    ids, found = found_in(model)
    o = origins.find(model, ids, found)
    massive = lambda h: int(massive_mask(h, [DIM], 100.0, 1000.0).sum())  # noqa: E731
    assert massive(value_at(model, ids)) == len(ids)
    seen = {}
    for name in ("zero_super_weight", "random_weight", "zero_channel"):
        ctx = origins.Context(generator=torch.Generator().manual_seed(1))
        with origins.ablated(model, o, name, ctx):
            seen[name] = massive(value_at(model, ids))
        assert ctx.changed_weights == (tiny.D if name == "zero_channel" else 1)
    assert seen == {"zero_super_weight": 0, "random_weight": len(ids), "zero_channel": 0}, seen


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def assert_bit_identical(model, before) -> None:
    for k, p in model.named_parameters():
        assert torch.equal(p.detach().view(torch.int32), before[k].view(torch.int32)), k


@pytest.mark.parametrize("family", ["llama", "gpt2", "mixtral"])
def test_every_weight_intervention_restores_the_weights_bit_for_bit(family):
    model = planted(family)
    ids, found = found_in(model)
    o = origins.find(model, ids, found)
    before = snapshot(model)
    base = model(ids).logits.detach()
    ctx = origins.Context(generator=torch.Generator().manual_seed(1))
    with origins.recording(model, o, ctx):
        model(ids)
    assert len(ctx.recorded) == 1 and len(ctx.recorded[0][LAYER][0]) == len(ids)
    for name in origins.INTERVENTIONS:
        run = origins.Context(generator=torch.Generator().manual_seed(1), recorded=ctx.recorded)
        with origins.ablated(model, o, name, run):
            changed = model(ids).logits.detach()
        assert_bit_identical(model, before)
        assert torch.equal(changed, base) or name != "none"
        with pytest.raises(RuntimeError, match="inside"):
            with origins.ablated(
                model, o, name, origins.Context(generator=torch.Generator().manual_seed(1), recorded=ctx.recorded)
            ):
                model(ids)
                raise RuntimeError("inside the block")
        assert_bit_identical(model, before)
        assert torch.equal(model(ids).logits.detach(), base)


def test_perplexities_of_the_weight_interventions():
    model = planted("llama")
    ids, found = found_in(model)
    o = origins.find(model, ids, found)
    before = snapshot(model)
    table = origins.perplexities(model, o, tiny.sequences(4, 16, seed=3), seed=1, batch_size=2)
    assert table["intervention"].tolist() == origins.INTERVENTIONS
    r = dict(zip(table["intervention"], table["ratio"]))
    assert r["zero_super_weight_restore"] == pytest.approx(1.0, abs=1e-4)  # the activation at its mean is all it does
    assert r["zero_activation"] == pytest.approx(r["zero_super_weight"], rel=1e-2)
    assert table.loc[table.intervention == "zero_super_weight", "edited"].iloc[0] == f"[{DIM}, 0]"
    assert table.loc[table.intervention == "zero_activation", "entries_changed"].iloc[0] == 4
    assert_bit_identical(model, before)
    with pytest.raises(MassiveError, match="start with 'none'"):
        origins.perplexities(model, o, ids, ["zero_super_weight"])


class WeirdMLP(nn.Module):
    """An MLP whose projections massive.core.arch cannot see (the real one hidden in a list)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = [inner]

    def forward(self, x):
        return self.inner[0](x)


def test_an_mlp_without_a_known_down_projection_is_one_clear_line():
    model = planted("llama")
    ids, found = found_in(model)
    model.model.layers[LAYER].mlp = WeirdMLP(model.model.layers[LAYER].mlp)
    with pytest.raises(MassiveError) as err:
        origins.find(model, ids, found)
    assert "WeirdMLP" in str(err.value) and "\n" not in str(err.value)
