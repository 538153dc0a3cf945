"""What massive activations cost at inference (massive.inference.precision, massive.inference.quantize, massive.inference.window,
rule inference): the fake quantiser against an independent reference; a planted activation of 1e5
flagged as a float16 overflow at its block (and a float16 capture stopping there in one line);
the windowed mask with W >= seq_len giving full attention's logits exactly; keeping the planted
massive entries in float lowering per-tensor int8 error; bad input in one line; the rule end to end."""

import numpy as np
import pytest
import torch
from torch import nn

from massive.core.errors import MassiveError, NonFiniteError
from massive.inference import precision, quantize, window
from massive.intervene.interventions import ROLES
from massive.measure.capture import capture
from massive.measure.detect import detect

import tiny
from topics.inference import DIM, LAYER, planted


# ---------------------------------------------------------------- the fake quantiser
def reference(x: np.ndarray, bits: int, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric round-to-nearest per row, in float64 numpy, and where a value sits on a rounding tie."""
    q = 2 ** (bits - 1) - 1
    a = np.abs(np.where(keep, 0.0, x)) if keep is not None else np.abs(x)
    s = a.max(axis=1, keepdims=True) / q
    s = np.where(s > 0, s, 1.0)
    r = x / s
    out = np.clip(np.round(r), -q, q) * s
    tie = np.abs(np.abs(r - np.trunc(r)) - 0.5) < 1e-4
    return (np.where(keep, x, out) if keep is not None else out), tie


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_token", "per_channel"])
@pytest.mark.parametrize("with_keep", [False, True])
def test_the_fake_quantiser_equals_an_independent_reference(bits, granularity, with_keep):
    g = torch.Generator().manual_seed(bits + len(granularity))
    x = torch.randn(3, 20, 16, generator=g) * torch.rand(3, 1, 16, generator=g) * 5
    x[1, 0, 3] = 900.0  # a massive entry
    keep = None
    if with_keep:
        keep = torch.zeros(x.shape, dtype=torch.bool)
        keep[1, 0, 3] = keep[0, 2, 5] = True
    if granularity == "per_channel":
        x, keep = x.reshape(-1, 16), None if keep is None else keep.reshape(-1, 16)
    got = quantize.fake_quant(x, bits, granularity, keep)
    rows = {"per_tensor": (3, -1), "per_token": (-1, 16), "per_channel": (x.shape[0], -1)}[granularity]
    xs = x.double().numpy().reshape(rows)
    ks = None if keep is None else keep.numpy().reshape(rows)
    want, tie = reference(xs, bits, ks)
    got = got.double().numpy().reshape(rows)
    step = np.abs(xs).max() / (2 ** (bits - 1) - 1)
    close = np.abs(got - want) <= 1e-5 * np.abs(want) + 1e-6
    assert np.all(close | (tie & (np.abs(got - want) <= step * 1.0001)))  # only a rounding tie may go the other way
    assert close.mean() > 0.999
    if with_keep:
        assert np.array_equal(got[ks], xs[ks])  # the kept entries come back unchanged
        assert not np.array_equal(want, reference(xs, bits, None)[0])  # and keeping them changes the others' scale


def test_weight_quantization_keeps_the_super_weight_and_restores_bit_for_bit():
    model = planted("llama", 1e4)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    name = "model.layers.1.mlp.down_proj.weight"
    keep = {name: [(DIM, 0)]}
    s = quantize.scheme("w4_per_channel_keep_super")
    with quantize.weights(model, s, keep) as st:
        w = dict(model.named_parameters())[name]
        assert w[DIM, 0] == before[name][DIM, 0]  # kept in float
        row = w[DIM].detach()
        assert len(torch.unique(row[1:])) <= 15  # int4: 15 levels, the scale without the super weight
        assert not torch.equal(w, before[name]) and st.kept == 1 and st.tensors == tiny.L * 7
    for k, p in model.named_parameters():
        assert torch.equal(p.detach().view(torch.int32), before[k].view(torch.int32)), k
    with pytest.raises(RuntimeError, match="inside"), quantize.weights(model, quantize.scheme("w8_per_channel")):
        raise RuntimeError("inside the block")
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    conv = torch.randn(6, 4)  # GPT-2's Conv1D [in, out]: per output channel = per column
    q = quantize.quantised_weight(conv, 4, "in_out")
    assert torch.allclose(q, quantize.quantised_weight(conv.t().contiguous(), 4, "out_in").t())


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(MassiveError, match="unknown quantization scheme 'a3_per_row'.*a8_per_tensor"):
        quantize.scheme("a3_per_row")


# ---------------------------------------------------------------- keeping the massive entries
@pytest.mark.parametrize("family", ["llama", "gpt2", "phi"])
def test_keeping_the_planted_massive_entries_lowers_per_tensor_int8_error(family):
    model = planted(family, 3e4)
    ids = tiny.sequences(4, 32)
    found = detect(capture(model, ids, k=16))
    assert found.dims == [DIM]
    with torch.no_grad():
        full = model(ids).logits
        errors, kept = {}, {}
        for name in ("a8_per_tensor", "a8_per_tensor_keep_massive"):
            with quantize.activations(model, quantize.scheme(name), found.dims) as st:
                logits = model(ids).logits
            errors[name], kept[name] = (st.rel_error, float((logits - full).pow(2).mean())), st.kept
    per_block = {"llama": 5, "gpt2": 2, "phi": 4}[family]  # the inputs that read the normed stream: q, k, v, gate, up |
    # c_attn, c_fc | q, k, v, fc1 (one norm for both); not o_proj / c_proj / dense, nor the down projection
    assert kept["a8_per_tensor"] == 0 and kept["a8_per_tensor_keep_massive"] == len(ids) * per_block * (
        tiny.L - LAYER - 1
    )
    assert errors["a8_per_tensor_keep_massive"][0] < 0.8 * errors["a8_per_tensor"][0], errors  # at the linear inputs


def first_roles(ids: torch.Tensor) -> torch.Tensor:
    """Token roles of random byte sequences: the first token, then ordinary ones."""
    roles = torch.full(ids.shape, ROLES.index("other"), dtype=torch.long)
    roles[:, 0] = ROLES.index("first")
    return roles


def test_perplexities_table():
    model = planted("llama", 3e4)
    ids = tiny.sequences(4, 32)
    found = detect(capture(model, ids, k=16))
    t = quantize.perplexities(
        model,
        tiny.sequences(3, 32, seed=2),
        ["a8_per_tensor", "a8_per_tensor_keep_massive", "w8_per_channel"],
        found,
        roles_of=first_roles,
        batch_size=2,
    )
    assert t["scheme"].tolist() == ["float", "a8_per_tensor", "a8_per_tensor_keep_massive", "w8_per_channel"] * 2
    assert t["massive"].tolist() == ["as is"] * 4 + ["mean"] * 4
    assert t.loc[0, "ratio"] == 1.0 and t.loc[0, "verdict"] == "harmless" and t["perplexity"].notna().all()
    assert t.loc[2, "kept"] > 0 and t.loc[1, "kept"] == 0


# ---------------------------------------------------------------- headroom
def test_headroom_flags_the_float16_overflow_at_the_planted_block_and_capture_stops_there():
    model = planted("llama", 1e5)
    chunks = tiny.sequences(2, 16)
    ref = precision.measure(model, chunks, batch_size=2)
    fp16 = precision.measure(precision.cast(model, "float16"), chunks, batch_size=2)
    bf16 = precision.measure(precision.cast(model, "bfloat16"), chunks, batch_size=2)
    t = precision.headroom(ref, {"float16": fp16, "bfloat16": bf16})
    f16 = t[t["format"] == "float16"].set_index("layer")
    assert f16.loc[LAYER, "max_abs"] == pytest.approx(1e5, rel=1e-3) and f16.loc[LAYER, "dim"] == DIM
    assert f16["overflow"].tolist() == [layer >= LAYER for layer in range(tiny.L)]
    assert f16.loc[LAYER, "overflow_dims"] == str(DIM) and f16.loc[0, "overflow_dims"] == ""
    assert f16.loc[LAYER, "limit"] == 65504.0 and f16.loc[LAYER, "headroom"] == pytest.approx(0.655, rel=1e-2)
    assert fp16.first_nonfinite == LAYER and f16.loc[LAYER, "first_nonfinite"] and f16.loc[LAYER, "measured_inf"] == 2
    assert fp16.perplexity is None and "float16" in fp16.note  # recorded, not raised
    b16 = t[t["format"] == "bfloat16"].set_index("layer")
    assert not b16["overflow"].any() and bf16.first_nonfinite is None and bf16.perplexity is not None
    assert b16.loc[LAYER, "spacing"] == 512.0  # 1e5 lies in [65536, 131072): 2^16 / 2^7
    assert b16.loc[LAYER, "measured_max_abs"] == pytest.approx(1e5, rel=1e-2)
    with pytest.raises(NonFiniteError) as err:  # capture (and so detect) in float16 stops at the same block
        capture(model.half(), chunks, k=4)
    msg = str(err.value)
    assert f"block {LAYER}'s output" in msg and "float16" in msg and "\n" not in msg


def test_format_facts_come_from_torch():
    assert precision.limit("float16") == 65504.0 and precision.limit("bfloat16") == float(
        torch.finfo(torch.bfloat16).max
    )
    assert precision.spacing(24_000, "bfloat16") == 128.0 and precision.spacing(24_000, "float16") == 16.0
    assert precision.overflows(65_520, "float16") and not precision.overflows(65_519, "float16")
    assert precision.spacing(1e6, "float16") == float("inf")


# ---------------------------------------------------------------- windowed attention
def test_visible_is_causal_window_plus_sinks():
    v = window.visible(10, window=3, sinks=2)
    for q in range(10):
        for k in range(10):
            assert bool(v[q, k]) == (k <= q and (q - k < 3 or k < 2))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_a_window_as_long_as_the_sequence_reproduces_full_attention_exactly(family):
    model = tiny.build(family)  # eager attention
    ids = tiny.sequences(2, 24)
    with torch.no_grad():
        full = model(ids).logits
        assert torch.equal(window.Windowed(model, 24)(ids).logits, full)
        assert torch.equal(window.Windowed(model, 100, sinks=4)(ids).logits, full)
        short = window.Windowed(model, 4)(ids).logits
    assert torch.equal(short[:, :4], full[:, :4]) and not torch.allclose(short[:, 4:], full[:, 4:])
    assert window.probe(model, ids) is None


class NoMask(nn.Module):
    """A causal LM whose forward drops the attention mask it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.inner(input_ids, **kwargs)


def test_a_family_whose_attention_takes_no_4d_mask_is_skipped_with_one_line():
    reason = window.probe(NoMask(tiny.build("llama")), tiny.sequences(1, 16))
    assert "ignores a 4-D attention mask" in reason and "\n" not in reason


def test_window_perplexities_and_the_sink_interventions():
    model = planted("llama", 3e4)
    ids = tiny.sequences(4, 32)
    found = detect(capture(model, ids, k=16))
    chunks = tiny.sequences(2, 32, seed=5)
    t = window.perplexities(model, chunks, found, windows=[8], sinks=[1], batch_size=2)
    assert t["variant"].tolist() == [
        "full attention",
        "window",
        "window + sinks",
        "window + sinks, sink massive mean",
        "window + sinks, sink massive zero",
    ]
    assert t["entries_changed"].tolist() == [0, 0, 0, 2, 2]  # the planted entry at the sink of each chunk
    assert t.loc[0, "ratio"] == 1.0 and (t["perplexity"] > 0).all()
    with pytest.raises(MassiveError, match="W=0"):
        window.perplexities(model, chunks, found, windows=[0])
