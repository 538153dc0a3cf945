"""Attention analysis on tiny random models: exact eager attention, the decomposition, sinks,
the mean-replacement intervention (massive.measure.attention, in memory) and the rule end to end."""

import json

import pandas as pd
import pytest
import torch

from massive.core.arch import find_parts
from massive.core.errors import MassiveError, NonFiniteError
from massive.measure import attention
from massive.measure.perplexity import perplexity

import tiny
from topics.attention import DIM, LAYER, build, wire_sink

FAMILIES = tiny.FAMILIES + ["gemma", "gemma2"]


def recorder(model, ids, massive=(0,), random=(3,)):
    rec = attention.Recorder(model)
    rec.massive = torch.zeros(ids.shape, dtype=torch.bool)
    rec.massive[:, list(massive)] = True
    rec.random = torch.zeros(ids.shape, dtype=torch.bool)
    rec.random[:, list(random)] = True
    return rec


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_attention_is_eager_attention(family):
    model, ids = build(family), tiny.sequences(2, 16)
    with torch.inference_mode():
        ref = model(ids, output_attentions=True)
    attention.use_recording_attention(model)
    rec = recorder(model, ids)
    with torch.inference_mode(), rec.active("record", keep=True):
        logits = model(ids).logits
    assert torch.equal(logits, ref.logits)  # the model's output is untouched, bit for bit
    assert sorted(rec.kept) == list(range(tiny.L))
    for layer, k in rec.kept.items():
        probs, lg, visible = k["probs"], k["logits"], k["visible"]
        assert probs.shape == (2, tiny.H, 16, 16)  # every query head, grouped-query keys repeated
        assert k["values"].shape == (2, tiny.H, 16, tiny.D // tiny.H)
        torch.testing.assert_close(probs, ref.attentions[layer], rtol=0, atol=0)
        torch.testing.assert_close(torch.softmax(lg, dim=-1), probs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, tiny.H, 16))
        assert torch.all(probs[~visible] == 0) and torch.all(lg[~visible] == float("-inf"))
        causal = torch.ones(16, 16, dtype=torch.bool).tril()
        if family == "gemma2" and layer % 2 == 0:  # gemma2's even layers see a sliding window of 8 keys
            causal &= ~torch.ones(16, 16, dtype=torch.bool).tril(-8)
        assert torch.equal(visible[0, 0], causal)
        assert torch.isfinite(lg[visible]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_decomposition_reconstructs_the_output(family):
    model, ids = attention.use_recording_attention(tiny.plant(build(family), LAYER, DIM)), tiny.sequences(2, 12)
    rec = recorder(model, ids, massive=(0, 5))
    with torch.inference_mode(), rec.active("record", keep=True):
        model(ids)
    for k in rec.kept.values():
        parts = k["parts"]
        torch.testing.assert_close(parts["massive"] + parts["other"], k["output"], rtol=1e-5, atol=1e-6)
        direct = k["probs"][..., [0]] @ k["values"][:, :, [0]] + k["probs"][..., [5]] @ k["values"][:, :, [5]]
        torch.testing.assert_close(parts["massive"], direct, rtol=1e-5, atol=1e-6)


def first_token_mass(model, ids) -> list[float]:
    rec = recorder(attention.use_recording_attention(model), ids)
    with torch.inference_mode(), rec.active("record"):
        model(ids)
    return attention.layer_table(attention.head_table(rec, 0.3), LAYER, None)["mass_first"].tolist()


@pytest.mark.parametrize("family", ["llama", "mistral", "phi"])
def test_planted_massive_activation_draws_attention(family):
    ids = tiny.sequences(3, 32)
    without = first_token_mass(wire_sink(build(family)), ids)
    with_plant = first_token_mass(wire_sink(tiny.plant(build(family), LAYER, DIM)), ids)
    uniform = sum(1 / (q + 1) for q in range(1, 32)) / 31  # mean attention on key 0 when every key is equal
    for layer in range(tiny.L):
        if layer > LAYER:  # reads the planted activation
            assert with_plant[layer] > 0.95 and without[layer] < 0.5, (layer, with_plant, without)
        else:
            assert abs(with_plant[layer] - uniform) < 0.03 and abs(without[layer] - uniform) < 0.03
    # tiny.plant alone: random-init attention is near uniform, which is why wire_sink is needed
    assert max(first_token_mass(tiny.plant(build(family), LAYER, DIM), ids)) < 0.15


def calibrated(model, ids):
    rec = recorder(model, ids)
    with torch.inference_mode(), rec.active("record"):
        model(ids)
    rec.finish_means()
    return rec


def test_mean_replacement_with_one_input_is_exact():
    model = attention.use_recording_attention(wire_sink(tiny.plant(build("llama"), LAYER, DIM)))
    ids = tiny.sequences(1, 24)
    rec = calibrated(model, ids)
    with torch.inference_mode():
        plain = model(ids).logits
        for mode in ("replace_massive_with_mean", "replace_random_with_mean", "replace_other_with_mean"):
            with rec.active(mode):
                assert torch.equal(model(ids).logits, plain), mode
        with rec.active("replace_massive_with_zero"):
            assert not torch.equal(model(ids).logits, plain)


def test_massive_part_is_a_bias_and_the_random_part_is_not():
    """With the planted sink, the massive token's part is constant across inputs: replacing it by
    its mean barely moves the logits, while the same for an ordinary token does."""
    model = attention.use_recording_attention(wire_sink(tiny.plant(build("llama"), LAYER, DIM)))
    ids = tiny.sequences(4, 24, seed=5)
    rec = calibrated(model, ids)
    decomp = attention.decomposition(rec)
    late = decomp[decomp["layer"] > LAYER].groupby("part")[["rel_std", "cos_to_mean"]].median()
    assert late.loc["massive", "rel_std"] < 0.05 < late.loc["random", "rel_std"]
    assert late.loc["massive", "cos_to_mean"] > 0.99 > late.loc["random", "cos_to_mean"]
    with torch.inference_mode():
        plain = model(ids).logits
        change = {}
        for mode in ("replace_massive_with_mean", "replace_random_with_mean"):
            with rec.active(mode):
                change[mode] = (model(ids).logits - plain).abs().max().item()
    assert change["replace_massive_with_mean"] < 0.1 * change["replace_random_with_mean"], change


def massive_table(n: int, positions=(0,)) -> pd.DataFrame:
    """detect's massive table, as much of it as the attention analysis reads: seq_id, position."""
    return pd.DataFrame([{"seq_id": i, "position": p} for i in range(n) for p in positions])


def test_analyse_in_memory():
    """The whole calibration analysis from a model and token ids, no files: the planted sink is found."""
    model = wire_sink(tiny.plant(build("llama"), LAYER, DIM))
    ids = tiny.sequences(3, 32)
    res = attention.analyse(model, ids, massive_table(3), emerge=LAYER, seed=1, batch_size=2)
    assert len(res.heads) == tiny.L * tiny.H and len(res.decomposition) == tiny.L * tiny.H * 3
    assert res.concentration == LAYER + 1 == res.summary["concentration_layer"]
    assert res.layers["massive_in_input"].tolist() == [layer > LAYER for layer in range(tiny.L)]
    assert res.summary["sink_1_share_massive_in_input"] == 1.0 and res.summary["emerge_layer"] == LAYER
    assert set(res.summary["decomposition_median"]) == set(attention.PARTS)
    assert res.random_positions == res.summary["random_positions"] and 0 < res.random_positions[0] < 16
    # a bool mask gives the same tables as detect's table
    mask = attention.calibration_tokens(massive_table(3), [0, 1, 2], 32)
    same = attention.analyse(model, ids, mask, emerge=LAYER, seed=1, batch_size=3)
    pd.testing.assert_frame_equal(same.heads, res.heads)
    json.dumps(res.summary)  # JSON-ready

    chunks = tiny.sequences(4, 32, seed=3)
    ppl = attention.intervention_perplexities(
        model, chunks, res, dims=[DIM], min_abs=10.0, min_ratio=10.0, batch_size=2
    )
    assert ppl["variant"].tolist() == list(attention.VARIANTS) and ppl["intervened_layers"].iloc[0] == "2,3"
    r = dict(zip(ppl["variant"], ppl["ratio"]))
    assert r["none"] == 1.0 and abs(r["massive_mean"] - 1) < 1e-3 < abs(r["massive_zero"] - 1), r
    assert attention.perplexity_summary(ppl)["perplexity_ratio"] == r
    every = attention.intervention_perplexities(model, chunks, res, [DIM], 10.0, 10.0, intervene_layers="all")
    assert every["intervened_layers"].iloc[0] == "0,1,2,3"
    with pytest.raises(MassiveError, match="longer than the calibration"):
        attention.intervention_perplexities(model, tiny.sequences(2, 40), res, [DIM], 10.0, 10.0)
    with pytest.raises(MassiveError, match="intervene_layers"):
        attention.intervention_perplexities(model, chunks, res, [DIM], 10.0, 10.0, intervene_layers="some")


def test_finding_tokens_finds_the_planted_token():
    model = attention.use_recording_attention(tiny.plant(build("llama"), LAYER, DIM))
    chunks = tiny.sequences(3, 16, seed=2)
    with attention.finding_tokens(model, chunks, [DIM], 10.0, 10.0) as found:
        ppl = perplexity(model, chunks, batch_size=2)
    assert torch.equal(found, chunks == 0) and found[:, 0].all()  # tiny.plant: token id 0 carries DIM
    assert ppl.n_tokens == 3 * 15 and ppl.value > 1
    with attention.finding_tokens(model, chunks, [], 10.0, 10.0) as none:
        perplexity(model, chunks, batch_size=2)
    assert none[:, 0].all() and none.sum() == 3  # no dims: the first token stands in
    with pytest.raises(RuntimeError, match="unexpected batch"), attention.following(model, chunks, lambda *_: None):
        model(chunks[1:2])


def test_heatmap_layers_and_prompt_logits():
    assert attention.heatmap_layers(None, 4) == [0, 2, 3]
    assert attention.heatmap_layers(1, 4) == [1, 2]
    assert attention.heatmap_layers(1, 4, [3, 0]) == [3, 0]
    with pytest.raises(MassiveError, match="outside 0..3"):
        attention.heatmap_layers(1, 4, [4])
    model = build("llama")
    kept = attention.prompt_logits(model, tiny.sequences(1, 6))
    assert sorted(kept) == list(range(tiny.L)) and kept[0]["logits"].shape == (1, tiny.H, 6, 6)


def test_non_finite_attention_names_the_layer():
    model = build("llama")
    with torch.no_grad():
        find_parts(model).attentions[2].q_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"layer 2.*float32"):
        attention.analyse(model, tiny.sequences(2, 16), massive_table(2))


def test_non_finite_perplexity_is_an_error():
    model = build("llama")
    res = attention.analyse(model, tiny.sequences(2, 16), massive_table(2))
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="attention: variant 'none'"):
        attention.intervention_perplexities(model, tiny.sequences(2, 16, seed=1), res, [DIM], 10.0, 10.0)


def test_user_errors():
    model, ids = build("llama"), tiny.sequences(2, 16)
    with pytest.raises(MassiveError, match="no massive token"):
        attention.analyse(model, ids, torch.zeros(ids.shape, dtype=torch.bool))
    with pytest.raises(MassiveError, match="shape"):
        attention.analyse(model, ids, torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(MassiveError, match="random control"):
        attention.random_tokens(torch.ones(2, 4, dtype=torch.bool), seed=0)
    with pytest.raises(MassiveError, match="unknown recorder mode"), attention.Recorder(model).active("bogus"):
        pass
