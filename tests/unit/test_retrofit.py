"""Retrofitting an explicit attention bias (massive.retrain.retrofit): exact at its initial state, trains
only its own parameters, resumes bit for bit, and recovers a planted sink that the ablation breaks."""

from __future__ import annotations

import pytest
import torch

import massive
from massive.core.errors import MassiveError
from massive.measure.perplexity import chunk_nll
from massive.retrain import retrofit as R

import tiny
import topics.retrofit
from topics.retrofit import SINK_DIM

sink = topics.retrofit.sink  # the fixture of tests/topics/retrofit.py


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_initial_state_is_the_unmodified_model(family):
    model = tiny.plant(tiny.build(family), 1, 7)
    ids = tiny.sequences(2, 16)
    with torch.no_grad():
        base = model(input_ids=ids).logits
    for variant in R.VARIANTS:
        rf = R.Retrofit(model.config, variant)
        if variant == "sink_logit":
            rf.logit.data.fill_(float("-inf"))
        with torch.no_grad(), R.applied(model, rf):
            out = model(input_ids=ids).logits
        if variant == "softmax_plus_one":
            assert (out - base).abs().max() > 1e-3  # it has no neutral state
        else:
            torch.testing.assert_close(out, base, msg=f"{family} {variant}")
    assert model.config._attn_implementation == "eager"  # restored


def test_softmax_plus_one_is_one_extra_zero_logit():
    model = tiny.build("llama")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 16, generator=g) for _ in range(3))
    mask = torch.triu(torch.full((6, 6), float("-inf")), 1)[None, None]
    rf = R.Retrofit(model.config, "softmax_plus_one")
    out, probs = rf.attention(0, None, q, k, v, mask, scaling=0.25)
    logits = torch.cat([q @ k.transpose(2, 3) * 0.25 + mask, torch.zeros(2, 4, 6, 1)], -1)
    ref = logits.softmax(-1)[..., :6] @ v
    torch.testing.assert_close(out, ref.transpose(1, 2))
    assert (probs.sum(-1) < 1).all()  # the zero logit takes its share


def test_fit_trains_only_the_new_parameters(sink):
    model, train, _, _ = sink
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rf = R.Retrofit(model.config, "attn_bias")
    start = {k: v.clone() for k, v in rf.state_dict().items()}
    state = R.fit(model, rf, train, R.RetrofitConfig(steps=3, batch_size=4), progress=False)
    assert state.step == 3 and len(state.losses) == 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a base weight changed"
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not torch.equal(start[k], v) for k, v in rf.state_dict().items()), "a new parameter did not move"


def test_retrofit_recovers_the_planted_sink(sink):
    model, train, held, found = sink
    assert found.emerge_layer == 0 and SINK_DIM in set(found.massive["dim"])
    ablate = lambda: massive.intervene(model, found, "zero", layers="from_emerge")  # noqa: E731
    intact = chunk_nll(model, held).mean()
    with ablate():
        broken = chunk_nll(model, held).mean()
    assert broken > intact + 0.1  # zeroing the sink's massive entry hurts
    cfg = R.RetrofitConfig(steps=30, batch_size=8, logit_lr=1.0)
    recovered = {}
    for variant in ("attn_bias", "sink_logit"):
        rf = R.Retrofit(model.config, variant)
        R.fit(model, rf, train, cfg, ablation=ablate, progress=False)
        with R.applied(model, rf), ablate():
            recovered[variant] = (broken - chunk_nll(model, held).mean()) / (broken - intact)
        if variant == "attn_bias":
            with R.applied(model, rf):
                kept = chunk_nll(model, held).mean()
            assert abs(kept - intact) < 0.05  # with the massive activation back, the slot stays out of the way
    # the planted sink carries a value (its token's v): mass and value recover more than mass alone
    assert recovered["attn_bias"] > 0.3 and recovered["attn_bias"] > recovered["sink_logit"] + 0.1, recovered


def test_resume_after_a_kill_gives_the_same_result(sink, tmp_path):
    model, train, _, _ = sink
    cfg = R.RetrofitConfig(steps=6, batch_size=4, eval_every=2)
    whole = R.Retrofit(model.config, "value_bias")
    R.fit(model, whole, train, cfg, progress=False)

    class Killed(Exception):
        pass

    def kill_at_4(step):
        if step == 4:
            raise Killed

    ckpt = tmp_path / "rf.pt"
    first = R.Retrofit(model.config, "value_bias")
    with pytest.raises(Killed):
        R.fit(model, first, train, cfg, checkpoint=ckpt, on_eval=kill_at_4, progress=False)
    resumed = R.Retrofit(model.config, "value_bias")
    state = R.fit(model, resumed, train, cfg, checkpoint=ckpt, progress=False)
    assert state.step == 6
    assert torch.equal(resumed.value, whole.value)


def test_unknown_variant_is_one_line():
    with pytest.raises(MassiveError, match="unknown retrofit variant 'halve'"):
        R.Retrofit(tiny.config("llama"), "halve")
