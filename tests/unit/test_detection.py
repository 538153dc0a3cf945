"""Capture and detection on tiny random models of each paper family, with planted answers: the
library in memory (massive.capture, massive.detect) and the rules (pipeline.capture, .detect)."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from massive.core import hooks
from massive.core.errors import NonFiniteError
from massive.measure.capture import COUNTS, Capture, Reducer, capture, check_output, count_column, prompt
from massive.measure.detect import detect, role

import tiny
from helpers import DIM, LAYER, OVERFLOW


# ---------------------------------------------------------------- the library, in memory
@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_library_finds_the_planted_activation_in_memory(family):
    model = tiny.plant(tiny.build(family), layer=LAYER, dim=DIM)
    stats = capture(model, tiny.sequences(4, 32), k=16, batch_size=3)
    assert isinstance(stats, Capture) and stats.n_layers == tiny.L and stats.k == 16 and not stats.vision
    found = detect(stats, min_abs=100, min_ratio=1000)
    assert found.found and found.dims == [DIM] and found.emerge_layer == LAYER and not found.capped
    row = found.summary.iloc[0]
    assert (row["role"], row["n_sequences"], row["ratio_at_peak"] > 1000) == ("first", 4, True)
    assert pd.isna(row["fade_layer"])
    assert set(found.massive["position"]) == {0} and set(found.massive["token"]) == {"0"}  # no tokenizer: the id
    assert found.result["found"] and found.result["emerge_layer"] == LAYER and set(found.result) >= {"message", "dims"}
    per_layer = found.per_layer.set_index("layer")
    assert per_layer.loc[LAYER, "massive_per_sequence"] == 1.0 and per_layer.loc[0, "massive_at"] == ""
    assert per_layer.loc[LAYER, "massive_at"] == f"{DIM}: '0' (4)"


def test_library_tables_match_a_direct_computation():
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ids = tiny.sequences(4, 32)
    stats = capture(model, ids, k=16, batch_size=2, seq_ids=[10, 11, 12, 13])
    layer_stats, topk, dim_max = stats.layer_stats, stats.topk, stats.dim_max
    with torch.inference_mode():
        hidden = model(ids, output_hidden_states=True).hidden_states  # [embeddings, block 0, ..., final norm]
    for layer in range(tiny.L - 1):  # the last entry of hidden_states is after the final norm
        h = hidden[layer + 1].float()
        for s in range(len(ids)):
            row = layer_stats[(layer_stats.layer == layer) & (layer_stats.seq_id == 10 + s)].iloc[0]
            assert row.median_abs == pytest.approx(h[s].abs().median().item(), rel=1e-6)
            t = topk[(topk.layer == layer) & (topk.seq_id == 10 + s)].sort_values("rank")
            np.testing.assert_allclose(t.abs_value.to_numpy(), h[s].abs().flatten().topk(16).values.numpy(), rtol=1e-6)
            pos, dim = t.position.to_numpy().copy(), t.dim.to_numpy().copy()
            np.testing.assert_allclose(t.value.to_numpy(), h[s][pos, dim].numpy(), rtol=1e-6)
            assert (t.token_id.to_numpy() == ids[s][pos].numpy()).all()
            a, med = (
                h[s].abs(),
                np.float32(row.median_abs),
            )  # the exact counts at every pair of the ladders, by brute force
            for lo, r in itertools.product(COUNTS["min_abs"], COUNTS["min_ratio"]):
                assert row[count_column("n_massive", lo, r)] == int(
                    (a > max(np.float32(lo), np.float32(r) * med)).sum()
                )
        ref_dim_max = hidden[layer + 1].abs().amax(dim=(0, 1)).numpy()
        dm = dim_max[dim_max.layer == layer].sort_values("dim")
        np.testing.assert_allclose(dm.max_abs.to_numpy(), ref_dim_max, rtol=1e-6)
        med = torch.tensor(
            layer_stats[layer_stats.layer == layer].sort_values("seq_id").median_abs.to_numpy(), dtype=torch.float32
        )
        out_thr = torch.clamp(med * np.float32(9.0), min=6.0)[:, None, None]  # > 6 and > 9 x the median, per sequence
        assert (dm["n_outlier_6_9"].to_numpy() == (hidden[layer + 1].abs() > out_thr).sum(dim=(0, 1)).numpy()).all()
        for lo, r in ((50.0, 200.0), (100.0, 500.0), (200.0, 5000.0)):  # per dim, some pairs of the massive ladders
            thr = torch.clamp(med * np.float32(r), min=np.float32(lo))[:, None, None]
            assert (
                dm[count_column("n_massive", lo, r)].to_numpy()
                == (hidden[layer + 1].abs() > thr).sum(dim=(0, 1)).numpy()
            ).all()
        assert (dm.n_positions == len(ids) * ids.shape[1]).all()
    assert layer_stats.loc[layer_stats.layer >= LAYER, "n_massive_100_1000"].min() >= 1  # the planted one
    assert set(topk["hook"]) == {hooks.resid_post(i) for i in range(tiny.L)}
    grid = [(lo, r) for lo in COUNTS["min_abs"] for r in COUNTS["min_ratio"]]
    assert list(layer_stats.columns) == [
        "layer",
        "hook",
        "seq_id",
        "median_abs",
        "top1_abs",
        "top2_abs",
        "top3_abs",
        *(count_column("n_massive", lo, r) for lo, r in grid),
    ]
    assert list(topk.columns) == [
        "layer",
        "hook",
        "seq_id",
        "rank",
        "position",
        "dim",
        "token_id",
        "token",
        "value",
        "abs_value",
    ]
    assert list(dim_max.columns) == [
        "layer",
        "hook",
        "dim",
        "max_abs",
        "n_outlier_6_9",
        *(count_column("n_massive", lo, r) for lo, r in grid),
        "n_positions",
    ]
    at = stats.at(100, 500)  # detection's view: the counts at one pair, as n_massive and n_outlier
    assert (at.layer_stats["n_massive"] == layer_stats["n_massive_100_500"]).all() and at.thresholds["min_ratio"] == 500
    assert list(at.dim_max.columns) == ["layer", "hook", "dim", "max_abs", "n_outlier", "n_massive", "n_positions"]
    assert (topk.dtypes["value"], topk.dtypes["abs_value"], layer_stats.dtypes["median_abs"]) == (
        np.float32,
        np.float32,
        np.float64,
    )
    per_layer = stats.per_layer()
    assert per_layer["top1_over_median"].idxmax() >= LAYER and list(per_layer["layer"]) == list(range(tiny.L))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_hooks_leave_logits_bit_identical(family):
    model = tiny.plant(tiny.build(family), layer=LAYER, dim=DIM)
    ids = tiny.sequences(2, 24)
    reducer = Reducer(k=8, backend="torch")
    with torch.inference_mode():
        plain = model(ids).logits
        with hooks.hooked(model, reducer.hooks(model)):
            reducer.batch([0, 1], ids)
            hooked = model(ids).logits
        after = model(ids).logits  # the hooks are gone again
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    assert len(reducer.layer_rows) == 2 * tiny.L


def test_tokens_are_named_by_the_tokenizer_and_the_prompt_holds_every_position():
    from massive.core.models import byte_tokenizer

    tok = byte_tokenizer()
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ids = tiny.sequences(2, 16)
    stats = capture(model, ids, k=4, tok=tok)
    assert set(stats.topk["token"]) <= {tok.decode([int(i)]) for i in ids.unique()}
    table = prompt(model, ids[:1], tok)
    assert len(table) == tiny.L * 16 and list(table.columns) == [
        "layer",
        "hook",
        "position",
        "token_id",
        "token",
        "values",
    ]
    assert table["values"].iloc[0].shape == (tiny.D,) and table["token"].iloc[1] == tok.decode([int(ids[0, 1])])


def test_vit_tokens_are_named_by_the_layout():
    model = tiny.plant_vit(tiny.build_vit("dinov2_with_registers"), layer=LAYER, dim=DIM, register=2)
    pixels = tiny.image_processor()(images=tiny.photos(3), return_tensors="pt")["pixel_values"]
    stats = capture(model, pixels, k=8)
    assert stats.vision and set(stats.topk["token_id"]) <= set(range(1 + tiny.REGISTERS + 16))
    found = detect(stats)
    assert (
        found.dims == [DIM] and set(found.massive["token"]) == {"[REG2]"} and set(found.massive["role"]) == {"register"}
    )
    assert found.per_layer.set_index("layer").loc[LAYER, "massive_at"] == f"{DIM}: [REG2] (3)"  # layout names unquoted
    assert prompt(model, pixels[:1])["token"].iloc[0] == "[CLS]"


def test_detect_takes_tables_and_says_when_top_k_caps_the_count(caplog):
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    stats = capture(model, tiny.sequences(2, 16), k=1)
    found = detect(
        {"topk": stats.topk, "layer_stats": stats.layer_stats[["layer", "hook", "seq_id", "median_abs", "top1_abs"]]}
    )
    assert found.capped and found.k == 1 and "raise capture.top_k" in caplog.text  # no counts: k found may hide more
    assert "capped" not in found.result  # summary.json keeps its keys
    assert not detect(stats).capped  # the exact count: one massive entry per sequence, the top-1 holds it
    assert not detect(capture(tiny.build("llama"), tiny.sequences(2, 16), k=1)).capped


def test_more_massive_entries_than_top_k_are_saturated_with_the_exact_count():
    ids = tiny.sequences(3, 24)
    ids[:, 5:11] = 0  # the planted token at 7 positions of every sequence: 7 massive entries, top-4 keeps 4
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    found = detect(capture(model, ids, k=4))
    assert (
        found.capped
        and set(found.saturation["n_massive"]) == {7}
        and set(found.saturation["layer"]) == set(range(LAYER, tiny.L))
    )
    note = found.per_layer.set_index("layer").loc[LAYER, "saturated"]
    assert (
        note.startswith("saturated: up to 7 entries pass") and "top-k keeps 4" in note and "(3 of 3 sequences)" in note
    )
    assert found.per_layer.set_index("layer").loc[LAYER, "massive_per_sequence"] == 7.0  # exact, not the 4 kept
    assert found.per_layer.set_index("layer").loc[0, "saturated"] == ""
    assert found.result["saturated"] == {"n_pairs": 9, "max_count": 7, "k": 4, "layers": [1, 2, 3]}
    assert "saturated: up to 7 entries" in found.result["message"] and found.summary["saturated"].all()


def test_planted_outlier_feature_is_an_outlier_feature_not_massive():
    # dim 20 is 200 at every token (the planted massive one, at the first token, must beat it: gain 20000)
    model = tiny.plant_everywhere(tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, gain=2e4), dim=20, value=200.0)
    found = detect(capture(model, tiny.sequences(4, 32), k=16))
    assert found.dims == [DIM] and set(found.massive["dim"]) == {DIM}  # 20 is never called massive ...
    o = found.outliers.set_index("dim")
    assert 20 in o.index and o.loc[20, "criterion"] == "llm_int8 + dense_massive"  # ... but an outlier feature
    assert (
        o.loc[20, "token_share"] == 1.0 and o.loc[20, "layer_share"] == 1.0 and o.loc[20, "massive_token_share"] == 1.0
    )
    assert o.loc[20, "dense_layers"] == "0-3" and not o.loc[20, "also_massive"]
    assert "20 (100% of tokens)" in found.per_layer.set_index("layer").loc[0, "outlier_dims"]
    assert "20:" not in " ".join(found.per_layer["massive_at"])
    assert 20 in found.result["outlier_dims"] and "dim 20 (100% of tokens, blocks 0-3)" in found.result["message"]
    assert DIM not in found.result["outlier_dims"] and found.result["shared_dims"] == []
    # dim 20 passes both massive thresholds at all 32 tokens (33 entries with the planted one): more than the
    # top-16 holds, and the tables say so with the count
    assert found.capped and found.saturation.groupby("layer")["n_massive"].max().to_dict() == {
        0: 32,
        1: 33,
        2: 33,
        3: 33,
    }


def test_outlier_thresholds_are_dettmers_s():
    from massive.measure.detect import outlier_features

    dm = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3] * 2,
            "dim": [5] * 4 + [9] * 4,
            "max_abs": 10.0,
            "n_outlier": [7, 7, 0, 0, 5, 5, 5, 5],
            "n_massive": 0,
            "n_positions": 100,
        }
    )
    o = outlier_features(
        dm, n_layers=4
    )  # (n_outlier: the capture's counts above the outlier magnitude) dim 5: > 6 at 7% of the positions in 2 of 4 layers; dim 9: at 5%
    assert o["dim"].tolist() == [5] and o.iloc[0]["criterion"] == "llm_int8" and o.iloc[0]["layer_share"] == 0.5
    assert outlier_features(dm, n_layers=4, layer_share=0.75).empty and outlier_features(dm, 4, token_share=0.08).empty


def test_planted_massive_activation_at_the_bos_gets_role_bos():
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)  # at token 0: the byte tokenizer's BOS
    found = detect(capture(model, tiny.sequences(4, 32), k=16), bos=True)
    assert found.summary["role"].tolist() == ["bos"] and found.result["roles"] == ["bos"]
    assert detect(capture(model, tiny.sequences(4, 32), k=16)).summary["role"].tolist() == ["first"]


def test_detect_picks_its_thresholds_from_the_capture_s_ladders_and_refuses_others():
    """One capture serves every pair of its ladders exactly (here saturated: the counts, not the top-k,
    decide), as a capture made at that pair alone; a threshold off the ladders is one line, never a count
    at another one."""
    from massive.core.errors import MassiveError

    ids = tiny.sequences(3, 24)
    ids[:, 5:11] = 0  # 7 massive entries per sequence from block LAYER on: more than the top-4
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ladder, single = capture(model, ids, k=4), capture(model, ids, k=4, min_abs=50, min_ratio=500)
    a, b = detect(ladder, min_abs=50, min_ratio=500), detect(single, min_abs=50, min_ratio=500)
    for name in ("massive", "summary", "per_layer", "outliers", "saturation"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.result == b.result and a.capped and a.thresholds == b.thresholds
    with pytest.raises(
        MassiveError, match=r"min_ratio=300 is not a threshold the capture counted at \(min_ratio: 100, 200, 500,"
    ) as exc:
        detect(ladder, min_abs=100, min_ratio=300)
    assert "capture.counts.min_ratio" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(MassiveError, match=r"min_abs=100 is not a threshold the capture counted at \(min_abs: 50\)"):
        detect(single, min_abs=100, min_ratio=500)


def test_none_found_in_memory():
    found = detect(capture(tiny.build("gpt2"), tiny.sequences(2, 16), k=8), min_abs=100, min_ratio=1000)
    assert (
        not found.found
        and found.summary.empty
        and found.massive.empty
        and found.dims == []
        and found.emerge_layer is None
    )
    assert found.result == {
        "found": False,
        "message": "none found (no |a| > 100 and > 1000x the layer median)",
        "outlier_dims": [],
        "shared_dims": [],
        "saturated": None,
    }


def test_token_roles():
    delims = [".", "\n"]
    assert role(0, "The", delims) == "first"
    assert role(5, ".", delims) == "delimiter"
    assert role(5, " .", delims) == "delimiter"
    assert role(5, "\n\n", delims) == "delimiter"
    assert role(5, "ĊĊ", delims) == "delimiter"  # GPT-2's byte-level newlines
    assert role(5, " cat", delims) == "other"


# ---------------------------------------------------------------- #12 defect 3: float16 overflow names its block
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_float16_overflow_names_the_first_block_with_inf(family):
    model = tiny.plant(tiny.build(family), layer=LAYER, dim=DIM, gain=OVERFLOW)
    ids = tiny.sequences(4, 16)
    assert capture(model, ids, k=4).layer_stats["top1_abs"].max() > 65_504  # finite in float32
    with pytest.raises(NonFiniteError) as err:
        capture(model.half(), ids, k=4, batch_size=2, seq_ids=[5, 6, 7, 8])
    msg = str(err.value)
    assert f"block {LAYER}'s output" in msg and hooks.resid_post(LAYER) in msg
    assert (
        "holds 2 inf" in msg and "NaN" not in msg.split("(dtype")[0]
    )  # the planted entry of the first batch's 2 sequences
    assert "first in sequence 5" in msg and "float16" in msg and "float32 or bfloat16" in msg


def test_check_output_counts_inf_and_nan():
    h = torch.zeros(3, 2, 4)
    h[1, 0, 0], h[1, 1, 1], h[2, 0, 0] = float("inf"), float("nan"), float("-inf")
    check_output(torch.zeros(1, 2, 4), hooks.resid_post(0))
    with pytest.raises(NonFiniteError, match=r"block 2's output .* holds 2 inf and 1 NaN \(first in sequence 11\)"):
        check_output(h, hooks.resid_post(2), [10, 11, 12])


# ---------------------------------------------------------------- #28: no host synchronisation per block
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


def count_host_reads(monkeypatch) -> tuple[dict, list]:
    """Counts every host read of a tensor (HOST_READS) made inside the Reducer's hook and its flush:
    on a GPU each of them would synchronise the device."""
    counts, where = {"hook": 0, "flush": 0}, []

    def counting(name):
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if where:
                counts[where[-1]] += 1
            return orig(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in HOST_READS:
        counting(name)
    for method, key in (("__call__", "hook"), ("flush", "flush")):
        orig = getattr(Reducer, method)

        def inside(self, *args, _orig=orig, _key=key, **kwargs):
            where.append(_key)
            try:
                return _orig(self, *args, **kwargs)
            finally:
                where.pop()

        monkeypatch.setattr(Reducer, method, inside)
    return counts, where


def test_device_path_reads_nothing_back_inside_the_forward_pass(monkeypatch):
    """What a capture on CUDA does (Reducer(sync=False): massive.kernels.block's device path), run on the CPU
    with every host read counted: none in any block's hook; a fixed number per batch in flush(),
    whatever the number of blocks; and the same tables as the host path."""
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ids = tiny.sequences(4, 32)
    names = hooks.names(model, "blocks.*.hook_resid_post")
    host = Reducer(k=8, backend="torch", sync=True)
    with torch.inference_mode(), hooks.hooked(model, host.hooks(model)):
        for b in (0, 2):
            host.batch([b, b + 1], ids[b : b + 2])
            model(ids[b : b + 2])
            assert host.flush()
    counts, _ = count_host_reads(monkeypatch)
    per_batch = {}
    for blocks in (names[:2], names):
        device = Reducer(k=8, backend="torch", sync=False)
        counts.update(hook=0, flush=0)
        with torch.inference_mode(), hooks.hooked(model, {name: device for name in blocks}):
            for b in (0, 2):
                device.batch([b, b + 1], ids[b : b + 2])
                model(ids[b : b + 2])
                assert device.flush()
        assert counts["hook"] == 0, counts
        per_batch[len(blocks)] = counts["flush"] / 2
    assert per_batch[2] == per_batch[tiny.L] > 0, per_batch  # one copy per field per batch, not per block
    names_of = lambda ids: {int(i): str(int(i)) for i in ids}  # noqa: E731
    for want, got in zip(host.tables(names_of), device.tables(names_of)):
        pd.testing.assert_frame_equal(want, got, check_exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (scripts/gpu_check.sh runs it)")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_capture_on_cuda_never_synchronises_inside_a_hook(monkeypatch, backend):
    """On CUDA, torch's sync debug mode turns any synchronising call inside a block's hook into an error."""
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ids = tiny.sequences(4, 32)
    want = capture(model, ids, k=8, batch_size=2)
    orig = Reducer.__call__

    def strict(self, h, name):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return orig(self, h, name)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(Reducer, "__call__", strict)
    got = capture(model.cuda(), ids, k=8, batch_size=2, backend=backend)
    for table in ("layer_stats", "topk"):
        pd.testing.assert_frame_equal(getattr(want, table), getattr(got, table), check_exact=False, rtol=1e-5)


def test_a_tie_at_the_kth_value_is_redone_on_the_exact_path():
    """The device path cannot cut a tie at the k-th |a| by index without reading back: its flush
    says so (False, the batch dropped) and the batch again on the host path gives the host path's
    tables, the lowest flat indices kept."""
    h = torch.zeros(2, 6, 4)
    h[:, 1:, 2] = -5.0  # 5 entries of |a| = 5 per sequence, the top-3 keeps 3 of them
    h[1, 0, 0] = 9.0
    name = hooks.resid_post(0)

    def run(sync):
        r = Reducer(k=3, backend="torch", sync=sync)
        r.batch([0, 1])
        r(h, name)
        return r

    device, host = run(False), run(True)
    assert not device.flush() and host.flush()
    device.sync = True
    device.batch([0, 1])
    device(h, name)
    assert device.flush()
    names_of = lambda ids: {int(i): str(int(i)) for i in ids}  # noqa: E731
    for want, got in zip(host.tables(names_of), device.tables(names_of)):
        pd.testing.assert_frame_equal(want, got, check_exact=True)
    topk = host.tables(names_of)[1]
    assert topk.query("seq_id == 0")["position"].tolist() == [1, 2, 3]  # the lowest indices among the tied
    assert topk.query("seq_id == 1")["position"].tolist() == [0, 1, 2]
