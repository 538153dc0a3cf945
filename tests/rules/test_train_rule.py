"""The retraining experiment: GPT variants (massive/retrain/gpt.py), Bigram-Backcopy (massive/retrain/backcopy.py),
training (massive/retrain/training/, in memory), and the rules train / train_compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO

torch.set_num_threads(1)
TINY_OVERRIDES = [
    "train.model.n_layer=2",
    "train.model.n_head=2",
    "train.model.n_embd=32",
    "train.model.block_size=16",
    "train.batch_size=8",
    "train.eval_iters=2",
    "train.probe_batch_size=4",
    "train.log_interval=2",
    "train.warmup_iters=2",
    "wandb.mode=disabled",
]


# ---------------------------------------------------------------- training, in memory (massive.retrain.training)


def test_the_library_imports_no_hydra_or_wandb():
    code = (
        "import sys, massive.retrain.training, massive.retrain.gpt, massive.retrain.backcopy; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'wandb', 'pipeline')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


# ---------------------------------------------------------------- the rules
def compose(tmp_path: Path, *overrides: str):
    from pipeline.cli import compose as cli_compose

    return cli_compose([*TINY_OVERRIDES, f"paths.root={tmp_path}", *overrides], config_name="train")


def test_resume_from_a_checkpoint_reproduces_the_next_losses_exactly(tmp_path):
    from pipeline import train

    base = ["train.eval_interval=3", "train.checkpoint_interval=3", "train.variant=sink_token"]
    train.run(compose(tmp_path / "straight", *base, "train.max_iters=6"))
    train.run(compose(tmp_path / "killed", *base, "train.max_iters=3"))  # a run that stops at step 3 ...
    train.run(compose(tmp_path / "killed", *base, "train.max_iters=6"))  # ... and resumes from its checkpoint
    ckpt = lambda d: torch.load(d / "results/train/cpu_backcopy/sink_token/checkpoint.pt", weights_only=False)
    a, b = ckpt(tmp_path / "straight"), ckpt(tmp_path / "killed")
    assert a["step"] == b["step"] == 6 and len(a["losses"]) == 6
    assert a["losses"] == b["losses"]  # bit for bit, the resumed steps 4-6 included
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["step"] for r in a["rows"]] == [r["step"] for r in b["rows"]]


def test_train_end_to_end_then_compare(tmp_path):
    from pipeline import train, train_compare
    from pipeline.io import read_provenance, read_table

    for variant in ("default", "attn_bias"):
        train.run(compose(tmp_path, f"train.variant={variant}", "train.max_iters=4", "train.eval_interval=2"))
    out = tmp_path / "results/train/cpu_backcopy"
    m = read_table(out / "attn_bias/metrics.parquet")
    assert sorted(m["step"].unique()) == [0, 2, 4] and sorted(m["layer"].unique()) == [0, 1]
    for col in (
        "train_loss",
        "val_loss",
        "top1_abs",
        "median_abs",
        "top1_over_median",
        "first_abs",
        "sink1",
        "slot_attn",
    ):
        assert m[col].notna().all(), col
    assert m["sink1"].between(0, 1).all() and (m["slot_attn"] > 0).all()
    assert "config" in read_provenance(out / "attn_bias/metrics.parquet")
    assert not list(out.rglob("*.tmp"))
    train_compare.run(compose(tmp_path))
    comp = read_table(out / "comparison.parquet")
    assert set(comp["variant"]) == {"default", "attn_bias"}
    for col in (
        "val_loss",
        "max_top1_over_median",
        "sink1",
        "start_over_median",
        "start_over_median_sqrt_d",
        "top1_at_start",
        "start_attn",
        "slot_attn",
        "val_loss_gap",
        "start_contrast",
        "massive",
        "n_embd",
    ):
        assert col in comp.columns, col
    default = comp[comp["variant"] == "default"].iloc[0]
    biased = comp[comp["variant"] == "attn_bias"].iloc[0]
    assert biased["val_loss_gap"] == pytest.approx(biased["val_loss"] - default["val_loss"])
    assert biased["start_contrast"] == pytest.approx(default["start_over_median"] / biased["start_over_median"])
    assert (out / "emergence.png").stat().st_size > 0 and (out / "layerwise.png").stat().st_size > 0


def test_bad_variant_fails_with_one_error_line(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("PIPELINE_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.train", "train.variant=nope", f"paths.root={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0] and "variant" in errors[0], proc.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_optimizer_fails_with_one_error_line(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("PIPELINE_FULL_ERROR", None)
    for bad, word in (("train.optimizer=adam", "adam"), ("train.backcopy.start=middle", "middle")):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.train", bad, f"paths.root={tmp_path}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:") and word in errors[0], proc.stderr
    assert not (tmp_path / "results").exists()


def test_scale_sweep_through_snakemake_report_included(tmp_path):
    """A tiny grid (width 16, 32 x 1 layer, 4 steps) through the DAG: every grid point trained and
    compared, rule train_scale's table and figure, and the report's scale section."""
    import yaml

    from pipeline.io import read_table

    from helpers import snakemake

    tiny_grid = {
        "model.n_embd": [16, 32],
        "model.n_layer": [1],
        "max_iters": [4],
        "batch_size": [8],
        "eval_interval": [2],
        "eval_iters": [2],
        "probe_batch_size": [4],
        "log_interval": [2],
        "warmup_iters": [2],
    }
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "models": [],
                "corpora": [],
                "overrides": ["wandb.mode=disabled"],
                "train": {"configs": ["cpu_backcopy_short"], "variants": ["default", "attn_bias"], "scale": tiny_grid},
            }
        )
    )
    proc = snakemake("--cores", "2", "--config", f"sweep={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    scale = read_table(tmp_path / "results/train/cpu_backcopy_short_scale/scale.parquet")
    assert sorted(zip(scale["n_embd"], scale["variant"])) == [
        (16, "attn_bias"),
        (16, "default"),
        (32, "attn_bias"),
        (32, "default"),
    ]
    assert (scale["n_layer"] == 1).all() and (scale["step"] == 4).all()
    d = scale.set_index(["n_embd", "variant"])
    for e in (16, 32):
        assert d.loc[(e, "default"), "start_contrast"] == pytest.approx(1.0)
        assert d.loc[(e, "attn_bias"), "slot_attn"] > 0 and d.loc[(e, "default"), "slot_attn"] == 0
        assert d.loc[(e, "default"), "start_over_median_sqrt_d"] == pytest.approx(
            d.loc[(e, "default"), "start_over_median"] / e**0.5
        )
    assert (tmp_path / "results/train/cpu_backcopy_short_scale/scale.png").stat().st_size > 0
    report = (tmp_path / "results/report_grid.html").read_text()
    assert "Retraining at scale: cpu_backcopy_short" in report and "start |a| / (median × √width)" in report
