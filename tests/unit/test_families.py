"""Every family researchers use: hook points mean what the residual stream receives
(resid_pre + attn_out + mlp_out == resid_post at every block), and the coverage of every
causal-LM model_type of the installed transformers (massive.core.families)."""

import os
import re

import pandas as pd
import pytest
import torch

from massive.core import arch, families, hooks

from topics.families import DIM, planted_family

# the families the library promises (tests/tiny.py's five plus issue 26's), one structure each at least:
# pre-norm, post-norm (sandwich), parallel, residual inside the modules, MoE, MLA, hybrid, learned sinks
NAMED = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "mixtral",
    "gemma2",
    "gemma3_text",
    "olmo2",
    "olmo3",
    "gpt_neox",
    "phi3",
    "phi",
    "gptj",
    "falcon",
    "bloom",
    "deepseek_v3",
    "gpt_oss",
    "qwen3_next",
    "gpt2",
    "granite",
]


def _config(family):
    config = families.tiny_config(family)
    if family == "granite":
        config.residual_multiplier = 0.3  # its default, 1.0, would hide a missing multiplier
    return config


@pytest.mark.parametrize("family", NAMED)
def test_sublayer_writes_add_up_to_each_block(family):
    model = families.build(family, config=_config(family))
    ids = torch.randint(2, families.VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    n = arch.num_layers(model.config)
    names = [f(L) for L in range(n) for f in (hooks.resid_pre, hooks.attn_out, hooks.mlp_out, hooks.resid_post)]
    with torch.no_grad(), hooks.cache(model, names) as store:
        model(ids, use_cache=False)
    for L in range(n):
        total = store[hooks.resid_pre(L)] + store[hooks.attn_out(L)] + store[hooks.mlp_out(L)]
        post = store[hooks.resid_post(L)]
        assert torch.allclose(total, post, rtol=1e-5, atol=1e-5 * float(post.abs().max())), (family, L)
    assert hooks.decomposition_note(model) is None


def test_post_norms_and_multipliers_are_inside_the_hook():
    gemma = families.build("gemma2")
    w = hooks.writers(gemma)[0]
    assert w["attn"].chain == ("post_attention_layernorm",) and w["mlp"].chain == ("post_feedforward_layernorm",)
    granite = families.build("granite", config=_config("granite"))
    assert hooks.writers(granite)[1]["mlp"].scale == pytest.approx(0.3)
    bloom = families.build("bloom")
    assert hooks.writers(bloom)[0]["attn"].residual
    for family, parallel in (("gpt_neox", True), ("falcon", True), ("gptj", True), ("llama", False), ("olmo2", False)):
        model = families.build(family)  # Pythia's two norms both read the block's input: parallel all the same
        hooks.writers(model)
        assert arch.is_parallel(arch.find_parts(model).blocks[0]) == parallel, family


def test_replacing_a_transformed_write_changes_what_the_stream_receives():
    """Zeroing hook_mlp_out removes the MLP's write exactly, where the hook sees an output minus the
    residual (BLOOM) or times a multiplier (Granite), in place or by replacement."""
    for family in ("bloom", "granite"):
        model = families.build(family, config=_config(family))
        ids = torch.randint(2, families.VOCAB, (1, 6))
        with (
            torch.no_grad(),
            hooks.cache(model, [hooks.resid_pre(0), hooks.attn_out(0), hooks.resid_post(0)]) as a,
            hooks.hooked(model, {hooks.mlp_out(0): lambda h, n: h.zero_()}),
        ):
            model(ids, use_cache=False)
        assert torch.allclose(a[hooks.resid_pre(0)] + a[hooks.attn_out(0)], a[hooks.resid_post(0)], atol=1e-5), family
        with (
            torch.no_grad(),
            hooks.cache(model, [hooks.resid_pre(0), hooks.attn_out(0), hooks.resid_post(0)]) as b,
            hooks.hooked(model, {hooks.mlp_out(0): lambda h, n: torch.zeros_like(h)}),
        ):
            model(ids, use_cache=False)
        assert torch.allclose(b[hooks.resid_post(0)], a[hooks.resid_post(0)], atol=1e-5), family


def test_attention_is_found_by_what_it_is_not_by_its_name():
    for family in ("gpt_neox", "phi3"):  # post_attention_dropout / resid_attn_dropout hold no weights
        parts = arch.find_parts(families.build(family))
        assert all("Attention" in type(a).__name__ for a in parts.attentions), family


def test_a_residual_added_after_the_norm_is_named_in_one_line():
    config = families.tiny_config("bloom")
    config.apply_residual_connection_post_layernorm = True
    note = hooks.decomposition_note(families.build("bloom", config=config))
    assert "apply_residual_connection_post_layernorm" in note and "\n" not in note


# ---------------------------------------------------------------- attention on every family
def _analyse(model, seq=10):
    from massive.measure import attention

    ids = torch.randint(2, families.VOCAB, (2, seq), generator=torch.Generator().manual_seed(1))
    marked = torch.zeros(ids.shape, dtype=torch.bool)
    marked[:, 0] = True
    return attention.analyse(model, ids, marked, emerge=0), ids


@pytest.mark.parametrize("family", ["falcon", "gptj", "bloom"])
def test_attention_outside_the_interface_is_recorded_as_the_model_computes_it(family):
    """The recorder sees the probabilities the model returns (output_attentions), and its replace
    modes change the output, while mode off leaves it bit for bit."""
    from massive.measure import attention

    model = families.build(family)
    res, ids = _analyse(model)
    rec = attention.Recorder(model)
    with torch.no_grad():
        ref = model(ids, output_attentions=True, use_cache=False)
        with rec.active("off", keep=True):
            kept = model(ids, use_cache=False).logits
    assert torch.equal(kept, ref.logits)
    for layer, probs in enumerate(ref.attentions):
        assert torch.allclose(rec.kept[layer]["probs"], probs, atol=1e-6), layer
        assert torch.allclose(rec.kept[layer]["logits"].softmax(-1), probs, atol=1e-5), layer
    assert set(res.heads["layer"]) == {0, 1}
    with torch.no_grad(), res.recorder.active("replace_massive_with_zero"):
        zeroed = model(ids, use_cache=False).logits
    assert not torch.allclose(zeroed, ref.logits)


def test_hybrid_linear_attention_layers_are_skipped_by_name():
    res, _ = _analyse(families.build("qwen3_next"))
    skipped = res.summary["skipped_layers"]
    assert list(skipped) == [0] and "linear_attn" in skipped[0] and "skipped" in skipped[0]
    assert set(res.heads["layer"]) == {1}


def test_latent_attention_with_wider_queries_than_values():
    model = families.build("deepseek_v3")
    c = model.config
    assert c.qk_nope_head_dim + c.qk_rope_head_dim != c.v_head_dim
    res, _ = _analyse(model)
    assert len(res.heads) == c.num_hidden_layers * c.num_attention_heads


def test_learned_sinks_have_a_column_of_their_own():
    model = families.build("gpt_oss")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.fill_(3.0)  # a sink that takes a visible share
    res, _ = _analyse(model)
    h = res.heads
    assert res.summary["explicit_sink"] and (h["mass_sink"] > 0.05).all()
    assert torch.allclose(
        torch.tensor((h["mass_massive"] + h["mass_sink"] + h["mass_other"]).values),
        torch.ones(len(h), dtype=torch.float64),
    )
    assert res.summary["mass_sink_mean"] == pytest.approx(float(h["mass_sink"].mean()))
    plain, _ = _analyse(families.build("llama"))
    assert not plain.summary["explicit_sink"] and (plain.heads["mass_sink"] == 0).all()


# ---------------------------------------------------------------- planted massive activations
PLANTED = [
    "llama",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "gemma2",
    "gemma3_text",
    "olmo2",
    "gpt_neox",
    "phi3",
    "mistral",
    "mixtral",
    "deepseek_v3",
    "gpt_oss",
    "falcon",
    "gptj",
    "bloom",
]


@pytest.mark.parametrize("family", PLANTED)
def test_planted_activation_is_found_zeroed_and_traced(family):
    from massive.intervene.interventions import intervene
    from massive.measure import origins
    from massive.measure.capture import capture
    from massive.measure.detect import detect
    from massive.measure.perplexity import perplexity

    import tiny

    model, layer = planted_family(family)
    ids = tiny.sequences(4, 16)
    found = detect(capture(model, ids, k=16))
    assert found.dims == [DIM] and found.emerge_layer == layer, (found.dims, found.emerge_layer)
    at = found.massive[found.massive["layer"] == layer]
    assert set(at["position"]) == {0} and set(at["dim"]) == {DIM}
    base = perplexity(model, ids).value
    with intervene(model, found, "zero", layers="emerge"):
        zeroed = perplexity(model, ids).value
    assert abs(zeroed / base - 1) > 1e-3, (base, zeroed)
    o = origins.find(model, ids, found)
    assert o.note is None
    writes = o.sublayers[o.sublayers["writes"]]
    assert writes[["dim", "block", "part"]].values.tolist() == [[DIM, layer, "mlp"]]
    assert writes["share"].iloc[0] == pytest.approx(1.0, abs=0.02)
    other = o.contributions[(o.contributions["part"] == "other")]["share"].abs()
    assert (other < 1e-3).all()  # attn_out + mlp_out explain the whole update: nothing left in "other"
    sw = o.primary.iloc[0]
    w = arch.down_weights(arch.find_parts(model).mlps[layer], arch.hidden_size(model.config))
    assert sw["param"] == w.name(model) and sw["channel"] == 0 and sw["block"] == layer
    assert sw["weight"] == 200.0 and sw["abs_rank"] == 1
    assert pd.isna(sw["expert"]) != bool(w.experts)  # a mixture of experts names its expert


# ---------------------------------------------------------------- the coverage table (docs/families.md)
def test_the_coverage_table_lists_every_causal_lm_family():
    """docs/families.md (scripts/families.py) is current for the installed transformers, and every
    family the library promises is supported there."""
    import transformers

    from helpers import REPO

    text = (REPO / "docs/families.md").read_text()
    assert f"transformers {transformers.__version__}" in text
    rows = dict(re.findall(r"^\| `([^`]+)` \| (supported|refused) \|", text, re.M))
    assert sorted(rows) == families.causal_lm_types()
    assert all(rows[f] == "supported" for f in NAMED), [f for f in NAMED if rows[f] != "supported"]
    counts = re.search(r"\*\*(\d+) supported, (\d+) refused, of (\d+) causal-LM model types", text)
    assert counts and int(counts.group(1)) == sum(v == "supported" for v in rows.values())


# families.check agrees with the table for every causal-LM model_type (each well under a second), but for the
# slow tail: families whose tiny model takes over 5 s (linear-attention and state-space hybrids, run by torch's
# reference kernels; 75 s of the 118 s all 189 took on a loaded 2-core machine), run with MASSIVE_ALL_FAMILIES=1
SLOW_TAIL = ["falcon_h1", "kimi_linear", "bailing_hybrid", "afmoe"]
TAIL = pytest.mark.skipif(
    os.environ.get("MASSIVE_ALL_FAMILIES") != "1",
    reason="the slow tail of the coverage table's families: MASSIVE_ALL_FAMILIES=1 runs them",
)


def _table() -> dict[str, tuple[str, str]]:
    from helpers import REPO

    rows = re.findall(
        r"^\| `([^`]+)` \| (supported|refused) \| ([^|]*) \|", (REPO / "docs/families.md").read_text(), re.M
    )
    return {family: (status, structure.strip()) for family, status, structure in rows}


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=TAIL) if f in SLOW_TAIL else f for f in families.causal_lm_types()]
)
def test_each_family_is_what_the_coverage_table_says(family):
    """The table is measured, not typed: the family's tiny planted model ends as the table says (supported,
    with its structure; or refused in one line), with the installed transformers."""
    row = families.check(family)
    status, structure = _table()[family]
    assert row["status"] == status, row["why"]
    assert "\n" not in row["why"] and "Traceback" not in row["why"]
    if status == "supported":
        assert row["structure"] == structure and not row["why"]


@pytest.mark.parametrize("family", ["bart", "mamba"])
def test_families_without_a_decoder_stack_of_attention_are_refused_in_one_line(family):
    row = families.check(family)
    assert row["status"] == "refused" and family in row["why"] and "\n" not in row["why"]
    assert ("encoder-decoder" if family == "bart" else "no attention") in row["why"]
