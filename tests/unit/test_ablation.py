"""Interventions on massive activations: exact targets, mean as a fixed bias, perplexity (the
library, in memory), and rule ablate through its command line: the layers spec and non-finite
perplexities (issue #12, defects 1 and 2)."""

import math
from contextlib import contextmanager

import pytest
import torch

import massive
from massive.core import hooks
from massive.core.errors import MassiveError, NonFiniteError
from massive.core.models import byte_tokenizer
from massive.intervene import interventions
from massive.measure.capture import capture
from massive.measure.detect import detect
from massive.measure.perplexity import Perplexity, perplexity

import tiny
from topics.ablation import DIM, LAYER, planted


@contextmanager
def recording(model, seen: dict):
    """Keep a copy of every block's output (blocks.L.hook_resid_post) in seen[L]."""
    keep = lambda h, name: seen.__setitem__(hooks.layer_of(name), h.clone())  # noqa: E731
    with hooks.hooked(model, {name: keep for name in hooks.names(model, "blocks.*.hook_resid_post")}):
        yield


def outputs(model, ids, name=None, means=None, layers=(LAYER,), seed=0):
    """Every block's output (and the logits), under intervention `name` (None: untouched)."""
    seen = {}
    ctx = interventions.Context(
        roles=torch.zeros_like(ids), means=means or {}, generator=torch.Generator().manual_seed(seed)
    )
    with torch.inference_mode():
        if name is None:
            with recording(model, seen):
                logits = model(ids).logits
        else:  # the recording hooks are registered after the intervention's, so they see its result
            with interventions.applied(model, name, list(layers), [DIM], 100.0, 1000.0, ctx), recording(model, seen):
                logits = model(ids).logits
    return seen, logits, ctx


# ---------------------------------------------------------------- the interventions, in memory
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


def test_top_zero_touches_no_massive_entry_and_as_many_as_zero():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    _, _, zero = outputs(model, ids, "zero")
    after, _, ctx = outputs(model, ids, "top_zero")
    changed = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert ctx.changed == zero.changed == 3 and len(changed) == 3  # one per sequence: the largest of the others
    assert all(not (t == 0 and d == DIM) for _, t, d in changed)
    for (
        b,
        t,
        d,
    ) in changed:  # matched in magnitude rank: the largest |a| of its sequence once the massive one is left out
        rest = before[LAYER][b].abs().clone()
        rest[0, DIM] = -1
        assert float(before[LAYER][b, t, d].abs()) == float(rest.max())


def test_top_zero_leaves_what_is_massive_in_any_dim_alone():
    h = torch.randn(1, 6, 8) * 0.01
    h[0, 0, 3], h[0, 2, 5], h[0, 4, 1] = 5000.0, -4000.0, 0.5  # dim 5 passes the rule too, but is not targeted
    mask = interventions.massive_mask(h, [3], 100.0, 1000.0)
    ctx = interventions.Context(min_abs=100.0, min_ratio=1000.0)
    interventions.INTERVENTIONS["top_zero"](h, mask, ctx)
    assert ctx.changed == 1 and h[0, 4, 1] == 0 and h[0, 0, 3] == 5000.0 and h[0, 2, 5] == -4000.0


def test_same_token_zero_zeroes_as_many_ordinary_dims_of_the_massive_tokens():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    after, _, ctx = outputs(model, ids, "same_token_zero", seed=2)
    changed = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert ctx.changed == 3 and 0 < len(changed) <= 3
    assert all(t == 0 and d != DIM for _, t, d in changed)
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


def test_unknown_intervention_is_a_massive_error():
    model, ids = planted(), tiny.sequences(1, 8)
    with pytest.raises(MassiveError, match="unknown intervention 'halve'"):
        with interventions.applied(model, "halve", [0], [DIM], 100, 1000, interventions.Context(0, ids)):
            pass
    with pytest.raises(MassiveError, match="unknown intervention 'halve'"):
        with massive.intervene(model, interventions.Targets([0], [DIM], {}), "halve"):
            pass


def test_parse_layers():
    assert interventions.parse_layers("emerge", 3, 10) == [3]
    assert interventions.parse_layers("emerge", None, 10) == []
    assert interventions.parse_layers("all", 3, 4) == [0, 1, 2, 3]
    assert interventions.parse_layers([2, 5], 3, 10) == [2, 5]
    assert interventions.parse_layers(4, 3, 10) == [4]
    with pytest.raises(MassiveError, match="ablate layer 12 is out of range: the model has blocks 0..9"):
        interventions.parse_layers([12], 3, 10)
    assert interventions.parse_layers("from_emerge", 3, 6) == [3, 4, 5]
    assert interventions.parse_layers("from_emerge", None, 6) == []
    for bad in ("2_5", "12", [], [1.5], [True], "from_emerg"):
        with pytest.raises(MassiveError, match="not 'emerge', 'from_emerge', 'all' or a list of block indices"):
            interventions.parse_layers(bad, 3, 10)


def test_position_means_is_the_mean_block_input():
    model, ids = planted(), tiny.sequences(4, 12)
    means = interventions.position_means(model, ids.split(3), lambda b: model(b), [0, 5])
    with torch.inference_mode(), hooks.cache(model, hooks.names(model, "blocks.*.hook_resid_pre")) as store:
        model(ids)
    assert sorted(means) == list(range(tiny.L))
    for layer, m in means.items():
        torch.testing.assert_close(m, store[hooks.resid_pre(layer)][:, [0, 5]].mean(0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the high-level API, in memory
def test_intervene_on_a_detection_in_memory():
    model, tok = planted(), byte_tokenizer()
    ids = tiny.sequences(4, 20)
    found = detect(capture(model, ids, k=8, tok=tok), min_abs=100, min_ratio=1000)
    assert found.dims == [DIM] and found.emerge_layer == LAYER

    base = perplexity(model, ids, batch_size=2)
    with massive.intervene(model, found, "zero", layers="emerge", tokenizer=tok, seed=1) as ctx:
        zero = perplexity(model, ids, batch_size=2)
    assert ctx.changed == 4 and zero.value != pytest.approx(base.value, rel=1e-3)
    with massive.intervene(model, found, "mean", tokenizer=tok) as ctx:  # position 0 is the same in every sequence
        mean = perplexity(model, ids, batch_size=2)
    assert ctx.changed == 4 and mean.value == pytest.approx(base.value, rel=1e-5)
    with massive.intervene(
        model, found, "zero", layers=[2, 3]
    ) as ctx:  # zeroed after block 2, and kept at 0 after block 3
        perplexity(model, ids)
    assert ctx.changed == 8
    with massive.intervene(
        model, found, "mean", layers="all", tokenizer=tok
    ) as ctx:  # blocks 1..3 hold it, block 0 not
        perplexity(model, ids)
    assert ctx.changed == 12
    with pytest.raises(MassiveError, match="'mean' needs the token roles"):
        with massive.intervene(model, found, "mean"):
            pass
    with pytest.raises(MassiveError, match="ablate layer 9 is out of range: the model has blocks 0..3"):
        with massive.intervene(model, found, "zero", layers=[9]):
            pass


def test_perplexity_matches_an_independent_reference():
    model, ids = planted(), tiny.sequences(3, 16, seed=2)
    ppl = perplexity(model, ids, batch_size=2, device=torch.device("cpu"))
    with torch.inference_mode():
        losses = [model(ids[i : i + 1], labels=ids[i : i + 1]).loss.item() for i in range(3)]  # HF's own shift and mean
    assert isinstance(ppl, Perplexity) and ppl.n_tokens == 3 * 15
    value, n = ppl
    assert value == float(ppl) == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_float16_overflow_is_a_non_finite_error_naming_where_and_the_dtype():
    model = planted(gain=2000.0)  # the planted activation is about 127,000 > 65,504
    ids = tiny.sequences(2, 16)
    assert math.isfinite(perplexity(model, ids).value)
    with pytest.raises(
        NonFiniteError,
        match=r"^ablate: intervention 'none': the cross-entropy .* is nan "
        r"\(dtype float16; run the model in float32 or bfloat16",
    ):
        perplexity(model.half(), ids, where="ablate: intervention 'none'")


# ---------------------------------------------------------------- regrowth, intervals, verdicts (issue #15)
def test_bootstrap_interval_equals_an_independent_computation():
    import numpy as np

    from massive.intervene.comparison import ratio_interval

    rng = np.random.default_rng(0)
    base = rng.normal(3.5, 0.3, 12)
    nll = base + 0.05 + rng.normal(0, 0.02, 12)
    ci = ratio_interval(nll, base, resamples=500, seed=7)
    draws = np.random.default_rng(7).integers(0, 12, (500, 12))  # chunk indices, the same for both
    ratios = [math.exp(nll[i].mean() - base[i].mean()) for i in draws]
    ppls = [math.exp(nll[i].mean()) for i in draws]
    assert (ci.ratio_lo, ci.ratio_hi) == pytest.approx(tuple(np.percentile(ratios, [2.5, 97.5])), rel=1e-12)
    assert (ci.ppl_lo, ci.ppl_hi) == pytest.approx(tuple(np.percentile(ppls, [2.5, 97.5])), rel=1e-12)
    assert ci.ratio == pytest.approx(math.exp(nll.mean() - base.mean())) and ci.n_chunks == 12
    assert ratio_interval(nll, base, resamples=500, seed=8).ratio_lo != ci.ratio_lo  # the seed matters
    with pytest.raises(MassiveError, match="at least 2 perplexity chunks"):
        ratio_interval(nll[:1], base[:1], resamples=500, seed=7)


def test_verdict_reads_the_interval():
    from massive.intervene.comparison import verdict

    assert verdict(2.1, 9.0, 2.0, 1.1) == "harmful"
    assert verdict(0.97, 1.09, 2.0, 1.1) == "harmless"
    assert verdict(1.05, 2.5, 2.0, 1.1) == verdict(1.5, 1.9, 2.0, 1.1) == "inconclusive"  # straddles, or between
