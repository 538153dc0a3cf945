"""Capture and detection on tiny random models of each paper family, with planted answers."""

import numpy as np
import pandas as pd
import pytest
import torch

import tiny
from pipeline import capture, detect, fetch_model
from pipeline.io import read_table, run_dir, tokens_file, write_table

LAYER, DIM = 1, 7


def prepare(tmp_path, compose_in, family: str, planted: bool, n_seq: int = 4, seq_len: int = 32):
    model = tiny.build(family)
    if planted:
        tiny.plant(model, layer=LAYER, dim=DIM)
    path = tiny.save(model, tmp_path / f"hf_{family}")
    cfg = compose_in("model=tiny_random", "model.source=local", f"model.path={path}", f"model.name=tiny_{family}",
                     f"model.seq_len={seq_len}", "capture.top_k=16", "capture.batch_size=2")
    fetch_model.run(cfg)
    ids = tiny.sequences(n_seq, seq_len)
    write_table(pd.DataFrame({"seq_id": range(n_seq), "input_ids": ids.tolist()}), tokens_file(cfg), cfg)
    return cfg, model, ids


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_planted_massive_activation_is_found(tmp_path, compose_in, family):
    cfg, _, _ = prepare(tmp_path, compose_in, family, planted=True)
    capture.run(cfg)
    detect.run(cfg)
    summary = read_table(run_dir(cfg, "detect") / "summary.parquet")
    assert summary["dim"].tolist() == [DIM], summary
    row = summary.iloc[0]
    assert row["role"] == "first"
    assert row["emerge_layer"] == LAYER
    assert pd.isna(row["fade_layer"])  # carried to the last block
    assert row["n_sequences"] == 4
    assert row["ratio_at_peak"] > 1000
    massive = read_table(run_dir(cfg, "detect") / "massive.parquet")
    assert set(massive["position"]) == {0} and set(massive["token_id"]) == {0}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_model_without_one_reports_none(tmp_path, compose_in, family):
    cfg, _, _ = prepare(tmp_path, compose_in, family, planted=False)
    capture.run(cfg)
    detect.run(cfg)
    out = run_dir(cfg, "detect")
    assert read_table(out / "summary.parquet").empty
    assert read_table(out / "massive.parquet").empty
    import json

    result = json.loads((out / "summary.json").read_text())
    assert result["found"] is False and result["message"].startswith("none found")


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_hooks_leave_logits_bit_identical(family):
    model = tiny.plant(tiny.build(family), layer=LAYER, dim=DIM)
    ids = tiny.sequences(2, 24)
    with torch.inference_mode():
        plain = model(ids).logits
        stats = capture.Stats(k=8, backend="torch")
        stats.seq_ids, stats.input_ids = [0, 1], ids
        with capture.block_hooks(model, stats):
            hooked = model(ids).logits
        after = model(ids).logits  # the hooks are gone again
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    assert len(stats.layer_rows) == 2 * tiny.L


def test_capture_tables_match_a_direct_computation(tmp_path, compose_in):
    cfg, model, ids = prepare(tmp_path, compose_in, "llama", planted=True)
    capture.run(cfg)
    cap = run_dir(cfg, "capture")
    layer_stats, topk, dim_max = (read_table(cap / f"{t}.parquet") for t in ("layer_stats", "topk", "dim_max"))
    with torch.inference_mode():
        hidden = model(ids, output_hidden_states=True).hidden_states  # [embeddings, block 0, ..., final norm]
    for layer in range(tiny.L - 1):  # the last entry of hidden_states is after the final norm
        h = hidden[layer + 1].float()
        for s in range(len(ids)):
            row = layer_stats[(layer_stats.layer == layer) & (layer_stats.seq_id == s)].iloc[0]
            assert row.median_abs == pytest.approx(h[s].abs().median().item(), rel=1e-6)
            t = topk[(topk.layer == layer) & (topk.seq_id == s)].sort_values("rank")
            ref = h[s].abs().flatten().topk(16).values.numpy()
            np.testing.assert_allclose(t.abs_value.to_numpy(), ref, rtol=1e-6)
            pos, dim = t.position.to_numpy(), t.dim.to_numpy()
            np.testing.assert_allclose(t.value.to_numpy(), h[s][pos, dim].numpy(), rtol=1e-6)
        ref_dim_max = hidden[layer + 1].abs().amax(dim=(0, 1)).numpy()
        np.testing.assert_allclose(dim_max[dim_max.layer == layer].sort_values("dim").max_abs.to_numpy(), ref_dim_max, rtol=1e-6)
    assert set(topk["hook"]) == {f"blocks.{i}.hook_resid_post" for i in range(tiny.L)}


def test_token_roles():
    delims = [".", "\n"]
    assert detect.role(0, "The", delims) == "first"
    assert detect.role(5, ".", delims) == "delimiter"
    assert detect.role(5, " .", delims) == "delimiter"
    assert detect.role(5, "\n\n", delims) == "delimiter"
    assert detect.role(5, " cat", delims) == "other"


def test_provenance_in_every_table(tmp_path, compose_in):
    from pipeline.io import read_provenance

    cfg, _, _ = prepare(tmp_path, compose_in, "llama", planted=True)
    capture.run(cfg)
    meta = read_provenance(run_dir(cfg, "capture") / "topk.parquet")
    assert {"config", "git_commit", "packages", "seed"} <= set(meta)
    assert "tiny_llama" in meta["config"] and '"torch"' in meta["packages"]
