"""Every family researchers use: hook points mean what the residual stream receives
(resid_pre + attn_out + mlp_out == resid_post at every block), and the coverage of every
causal-LM model_type of the installed transformers (massive.families)."""

import pytest
import torch

from massive import arch, families, hooks

# the families the library promises (tests/tiny.py's five plus issue 26's), one structure each at least:
# pre-norm, post-norm (sandwich), parallel, residual inside the modules, MoE, MLA, hybrid, learned sinks
NAMED = ["llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "mixtral", "gemma2", "gemma3_text", "olmo2",
         "olmo3", "gpt_neox", "phi3", "phi", "gptj", "falcon", "bloom", "deepseek_v3", "gpt_oss", "qwen3_next", "gpt2",
         "granite"]


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
    assert arch.decomposition_note(model) is None


def test_post_norms_and_multipliers_are_inside_the_hook():
    gemma = families.build("gemma2")
    w = arch.writers(gemma)[0]
    assert w["attn"].chain == ("post_attention_layernorm",) and w["mlp"].chain == ("post_feedforward_layernorm",)
    granite = families.build("granite", config=_config("granite"))
    assert arch.writers(granite)[1]["mlp"].scale == pytest.approx(0.3)
    bloom = families.build("bloom")
    assert arch.writers(bloom)[0]["attn"].residual


def test_replacing_a_transformed_write_changes_what_the_stream_receives():
    """Zeroing hook_mlp_out removes the MLP's write exactly, where the hook sees an output minus the
    residual (BLOOM) or times a multiplier (Granite), in place or by replacement."""
    for family in ("bloom", "granite"):
        model = families.build(family, config=_config(family))
        ids = torch.randint(2, families.VOCAB, (1, 6))
        with torch.no_grad(), hooks.cache(model, [hooks.resid_pre(0), hooks.attn_out(0), hooks.resid_post(0)]) as a, \
                hooks.hooked(model, {hooks.mlp_out(0): lambda h, n: h.zero_()}):
            model(ids, use_cache=False)
        assert torch.allclose(a[hooks.resid_pre(0)] + a[hooks.attn_out(0)], a[hooks.resid_post(0)], atol=1e-5), family
        with torch.no_grad(), hooks.cache(model, [hooks.resid_pre(0), hooks.attn_out(0), hooks.resid_post(0)]) as b, \
                hooks.hooked(model, {hooks.mlp_out(0): lambda h, n: torch.zeros_like(h)}):
            model(ids, use_cache=False)
        assert torch.allclose(b[hooks.resid_post(0)], a[hooks.resid_post(0)], atol=1e-5), family


def test_attention_is_found_by_what_it_is_not_by_its_name():
    for family in ("gpt_neox", "phi3"):  # post_attention_dropout / resid_attn_dropout hold no weights
        parts = arch.find_parts(families.build(family))
        assert all("Attention" in type(a).__name__ for a in parts.attentions), family


def test_a_residual_added_after_the_norm_is_named_in_one_line():
    config = families.tiny_config("bloom")
    config.apply_residual_connection_post_layernorm = True
    note = arch.decomposition_note(families.build("bloom", config=config))
    assert "apply_residual_connection_post_layernorm" in note and "\n" not in note
