"""Capture and detection on tiny random models of each paper family, with planted answers: the
library in memory (massive.capture, massive.detect) and the rules (pipeline.capture, .detect)."""

import json

import pandas as pd
import pytest

from massive.measure.capture import capture
from massive.measure.detect import detect
from pipeline import capture as capture_rule
from pipeline import detect as detect_rule
from pipeline.io import read_table, run_dir, tokens_file, write_table

import tiny
from helpers import DIM, LAYER, OVERFLOW, assert_one_line_error, prepare, run_module


def test_float16_capture_fails_in_one_line_and_writes_nothing(tmp_path, compose_in):
    cfg, _, _ = prepare(tmp_path, compose_in, "llama", planted=True, gain=OVERFLOW)
    args = [
        f"paths.root={tmp_path}",
        "wandb.mode=disabled",
        "model=tiny_random",
        "model.source=local",
        f"model.path={tmp_path / 'hf_llama'}",
        "model.name=tiny_llama",
        "model.seq_len=32",
        "capture.top_k=16",
        "model.dtype=float16",
    ]
    half = compose_in(*args[2:])  # the model's dtype is part of the token stage's identity: its own tokens
    write_table(read_table(tokens_file(cfg)), tokens_file(half), half)
    proc = run_module("capture", *args)
    assert_one_line_error(proc, f"block {LAYER}'s output", "inf", "float16", "float32 or bfloat16")
    assert not run_dir(half, "capture").exists()


# ---------------------------------------------------------------- the rules
@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_planted_massive_activation_is_found(tmp_path, compose_in, family):
    cfg, _, _ = prepare(tmp_path, compose_in, family, planted=True)
    capture_rule.run(cfg)
    detect_rule.run(cfg)
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
    capture_rule.run(cfg)
    detect_rule.run(cfg)
    out = run_dir(cfg, "detect")
    assert read_table(out / "summary.parquet").empty
    assert read_table(out / "massive.parquet").empty
    result = json.loads((out / "summary.json").read_text())
    assert result["found"] is False and result["message"].startswith("none found")
    assert set(result) == {
        "found",
        "message",
        "model",
        "corpus",
        "n_layers",
        "k",
        "outlier_dims",
        "shared_dims",
        "saturated",
        "protocol",
        "bos",
        "requested",
        "tokenizer_adds_bos",
        "bos_token_id",
        "bos_token",
        "warning",
    }
    assert (result["protocol"], result["requested"], result["saturated"]) == ("no_bos", "auto", None)


def test_rule_tables_equal_the_library_s(tmp_path, compose_in):
    from pipeline.model import load_model, load_tokenizer

    cfg, _, ids = prepare(tmp_path, compose_in, "llama", planted=True)
    capture_rule.run(cfg)
    detect_rule.run(cfg)
    stats = capture(load_model(cfg), ids, k=16, tok=load_tokenizer(cfg), batch_size=2)  # as loaded by the rule
    found = detect(stats)
    cap, det = run_dir(cfg, "capture"), run_dir(cfg, "detect")
    for name, df in [("layer_stats", stats.layer_stats), ("topk", stats.topk), ("dim_max", stats.dim_max)]:
        pd.testing.assert_frame_equal(read_table(cap / f"{name}.parquet"), df, check_exact=True, obj=name)
    for name, df in [
        ("massive", found.massive),
        ("summary", found.summary),
        ("per_layer", found.per_layer),
        ("outliers", found.outliers),
    ]:
        pd.testing.assert_frame_equal(
            read_table(det / f"{name}.parquet"), df, check_exact=True, obj=name, check_dtype=name != "outliers"
        )
    result = json.loads((det / "summary.json").read_text())
    assert {k: v for k, v in result.items() if k in found.result} == found.result


def test_provenance_in_every_table(tmp_path, compose_in):
    from pipeline.io import read_provenance

    cfg, _, _ = prepare(tmp_path, compose_in, "llama", planted=True)
    capture_rule.run(cfg)
    meta = read_provenance(run_dir(cfg, "capture") / "topk.parquet")
    assert {"config", "git_commit", "packages", "seed"} <= set(meta)
    assert "tiny_llama" in meta["config"] and '"torch"' in meta["packages"]
