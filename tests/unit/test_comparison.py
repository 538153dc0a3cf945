"""massive.compare: per-chunk NLL under each condition, the ratio to the baseline with its paired
bootstrap interval, the verdict; and the one NLL loop (perplexity is exp of chunk_nll's mean)."""

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

import massive
from massive.core.errors import MassiveError, NonFiniteError
from massive.inference.window import Windowed
from massive.intervene.comparison import COLUMNS, compare, ratio_interval, summarise, verdict
from massive.intervene.interventions import intervene
from massive.measure.capture import capture
from massive.measure.detect import detect
from massive.measure.perplexity import chunk_nll, perplexity

import tiny

LAYER, DIM = 1, 7


@pytest.fixture(scope="module")
def planted():
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, gain=200.0)
    found = detect(capture(model, tiny.sequences(4, 32), k=16))
    return model, found, tiny.sequences(6, 24, seed=4)


def test_perplexity_is_exp_of_the_mean_chunk_nll(planted):
    model, _, chunks = planted
    nll = chunk_nll(model, chunks, batch_size=4)
    ppl = perplexity(model, chunks, batch_size=2)
    assert nll.shape == (6,) and nll.dtype == np.float64
    assert ppl.value == pytest.approx(math.exp(nll.mean()), rel=1e-12) and ppl.n_tokens == 6 * 23
    np.testing.assert_allclose(chunk_nll(model, chunks, batch_size=1), nll, rtol=1e-6)  # the batch size does not matter


def test_compare_runs_each_condition_against_the_baseline(planted):
    model, found, chunks = planted
    order = []

    @contextmanager
    def noted(name, inner=None):
        order.append(name)
        with inner() if inner else intervene(model, found, "none") as ctx:
            yield ctx

    cmp = compare(
        model,
        chunks,
        {
            "zero": lambda: noted("zero", lambda: intervene(model, found, "zero")),
            "none": lambda: noted("none"),
            "random_zero": lambda: noted("random_zero", lambda: intervene(model, found, "random_zero")),
        },
        baseline="none",
        resamples=300,
        seed=3,
    )
    assert order == ["none", "zero", "random_zero"]  # the baseline first, then in order
    t = cmp.table
    assert t["condition"].tolist() == ["zero", "none", "random_zero"] and list(t.columns) == [
        "condition",
        *COLUMNS,
        "note",
    ]
    ci = ratio_interval(cmp.nll["zero"], cmp.nll["none"], resamples=300, seed=3)
    z = cmp.row("zero")
    assert (z["ratio"], z["ratio_lo"], z["ratio_hi"]) == (ci.ratio, ci.ratio_lo, ci.ratio_hi)
    assert z["verdict"] == verdict(ci.ratio_lo, ci.ratio_hi) and z["ratio"] != 1.0
    assert cmp.row("none")["ratio"] == 1.0 and cmp.row("none")["verdict"] == "harmless"
    assert z["n_chunks"] == 6 and z["n_tokens"] == 6 * 23 and z["bootstrap"] == 300
    assert cmp.contexts["zero"].changed > 0 and cmp.contexts["none"].changed == 0  # what each context yielded
    assert massive.compare is compare  # the public API


def test_known_nll_is_not_run_again_and_a_yielded_module_runs_instead(planted):
    model, _, chunks = planted
    full = chunk_nll(model, chunks)
    ran = []

    @contextmanager
    def windowed():
        ran.append("w")
        yield Windowed(model, 4, 1)

    cmp = compare(model, chunks, {"full": None, "w4": windowed}, baseline="full", resamples=100, known={"full": full})
    assert ran == ["w"] and np.array_equal(cmp.nll["full"], full)
    np.testing.assert_allclose(cmp.nll["w4"], chunk_nll(Windowed(model, 4, 1), chunks), rtol=1e-12)
    assert cmp.row("w4")["ratio"] != 1.0  # a window of 4 tokens changes every prediction after the 5th


def test_non_finite_losses_are_errors_unless_tolerated(planted):
    model, _, chunks = planted

    @contextmanager
    def broken():
        with torch.no_grad():
            saved = model.lm_head.weight[3, 0].item()
            model.lm_head.weight[3, 0] = float("inf")
        try:
            yield
        finally:
            with torch.no_grad():
                model.lm_head.weight[3, 0] = saved

    with pytest.raises(NonFiniteError, match="test: condition 'bad' at"):
        compare(model, chunks, {"none": None, "bad": broken}, resamples=10, where="test: condition {} at")
    cmp = compare(model, chunks, {"none": None, "bad": broken}, resamples=10, tolerate=lambda name: True)
    bad = cmp.row("bad")
    assert cmp.nll["bad"] is None and math.isnan(bad["perplexity"]) and pd.isna(bad["verdict"])
    assert "'bad'" in bad["note"] and ("nan" in bad["note"] or "inf" in bad["note"])
    with pytest.raises(NonFiniteError):  # the baseline is never tolerated
        compare(model, chunks, {"none": broken, "x": None}, baseline="none", resamples=10, tolerate=lambda name: True)


def test_bad_arguments_fail_before_any_pass(planted):
    model, _, chunks = planted
    with pytest.raises(MassiveError, match="at least 2 perplexity chunks"):
        compare(model, chunks[:1], {"none": None})
    with pytest.raises(MassiveError, match="baseline 'none' is not one of"):
        compare(model, chunks, {"a": None})
    with pytest.raises(MassiveError, match="harmless factor"):
        compare(model, chunks, {"none": None}, harmful_factor=1.0, harmless_factor=1.5)
    with pytest.raises(MassiveError, match="at least 1 resample"):
        summarise({"none": np.ones(3)}, "none", resamples=0)
