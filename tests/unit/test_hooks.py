"""massive.core.hooks: every name resolves on every family, reads what the model computes, and edits
change the forward pass exactly where they act."""

import pytest
import torch

from massive.core import arch, hooks
from massive.core.errors import MassiveError

import tiny


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_resid_post_is_the_hidden_state_after_each_block(family):
    model = tiny.build(family)
    ids = tiny.sequences(2, 16)
    with torch.no_grad(), hooks.cache(model, hooks.names(model, "blocks.*.hook_resid_post")) as store:
        out = model(ids, output_hidden_states=True)
    n = arch.num_layers(model.config)
    assert sorted(store) == sorted(hooks.resid_post(layer) for layer in range(n))
    for layer in range(n - 1):  # the last hidden state is after the final norm
        assert torch.equal(store[hooks.resid_post(layer)], out.hidden_states[layer + 1])


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_every_point_resolves_and_reads_a_tensor(family):
    model = tiny.build(family)
    ids = tiny.sequences(1, 8)
    wanted = [n for n in hooks.names(model) if family != "mixtral" or not n.endswith("mlp.hook_post")]
    with torch.no_grad(), hooks.cache(model, wanted) as store:
        model(ids)
    assert sorted(store) == sorted(wanted)
    d = arch.hidden_size(model.config)
    assert store["hook_tokens"].shape == (1, 8)
    assert store[hooks.resid_pre(1)].shape == store[hooks.attn_out(1)].shape == (1, 8, d)
    assert store[hooks.pattern(2)].shape == (1, tiny.H, 8, 8)  # eager attention returns the probabilities
    assert torch.allclose(store[hooks.pattern(2)].sum(-1), torch.ones(1, tiny.H, 8))
    if family != "mixtral":
        assert store[hooks.mlp_post(0)].shape == (1, 8, tiny.I)
        # resid_post = resid_pre + attn_out + mlp_out (sequential blocks) or attn_out + mlp_out + resid_pre (parallel)
        total = store[hooks.resid_pre(0)] + store[hooks.attn_out(0)] + store[hooks.mlp_out(0)]
        assert torch.allclose(total, store[hooks.resid_post(0)], atol=1e-5)


def test_mixture_of_experts_has_no_single_down_projection():
    model = tiny.build("mixtral")
    with pytest.raises(MassiveError, match="projections to the residual width"):
        with hooks.hooked(model, {hooks.mlp_post(0): lambda h, n: None}):
            pass


def test_replacing_and_editing_in_place_change_the_output():
    model = tiny.build("llama")
    ids = tiny.sequences(2, 8)
    with torch.no_grad():
        base = model(ids).logits
        with hooks.hooked(model, {hooks.resid_post(1): lambda h, n: h}):  # identity replacement
            same = model(ids).logits
        with hooks.hooked(model, {hooks.resid_post(1): lambda h, n: torch.zeros_like(h)}):
            zeroed = model(ids).logits
        with hooks.hooked(model, {hooks.resid_pre(2): lambda h, n: h.zero_()}):  # in place, at the next block's input
            in_place = model(ids).logits
    assert torch.equal(base, same)
    assert not torch.allclose(base, zeroed)
    assert torch.allclose(zeroed, in_place, atol=1e-6)


def test_hooks_are_removed_after_the_block():
    model = tiny.build("gpt2")
    ids = tiny.sequences(1, 8)
    calls = []
    with hooks.hooked(model, [(name, lambda h, n: calls.append(n)) for name in hooks.names(model, "blocks.0.*")]):
        model(ids)
    first = len(calls)
    model(ids)
    assert first == len(hooks.names(model, "blocks.0.*")) and len(calls) == first


@pytest.mark.parametrize("family", tiny.VIT_FAMILIES)
def test_vision_blocks_resolve(family):
    model = tiny.build_vit(family)
    pixels = torch.randn(1, 3, tiny.IMAGE, tiny.IMAGE)
    with torch.no_grad(), hooks.cache(model, [hooks.resid_post(0), hooks.attn_out(0), "hook_tokens"]) as store:
        model(**arch.forward_kwargs(model, pixels))
    n_tokens = (tiny.IMAGE // tiny.PATCH) ** 2 + 1 + (tiny.REGISTERS if family == "dinov2_with_registers" else 0)
    assert store[hooks.resid_post(0)].shape == (1, n_tokens, tiny.D)
    assert arch.layout(model.config, pixels.shape, n_tokens).n_registers == (
        tiny.REGISTERS if "registers" in family else 0
    )


def test_bad_names_fail_with_a_clear_message():
    model = tiny.build("llama")
    with pytest.raises(MassiveError, match="not a block hook name"):
        hooks.resolve(model, "blocks.0.hook_nope")
    with pytest.raises(MassiveError, match="blocks 0..3"):
        hooks.resolve(model, hooks.resid_post(9))


def test_final_norm_output():
    model = tiny.build("llama")
    ids = tiny.sequences(1, 8)
    with torch.no_grad(), hooks.cache(model, [hooks.FINAL_NORM]) as store:
        out = model(ids, output_hidden_states=True)
    assert torch.equal(store[hooks.FINAL_NORM], out.hidden_states[-1])
