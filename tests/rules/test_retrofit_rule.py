"""Retrofitting an explicit attention bias (massive.retrain.retrofit): exact at its initial state, trains
only its own parameters, resumes bit for bit, and recovers a planted sink that the ablation breaks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from massive.retrain import retrofit as R

import tiny
import topics.retrofit
from topics.retrofit import plant_sink

sink = topics.retrofit.sink  # the fixture of tests/topics/retrofit.py


# ---------------------------------------------------------------- rule retrofit, through its command line
@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    from pipeline.cli import compose

    from helpers import detected_run

    root = tmp_path_factory.mktemp("retrofit")
    torch.manual_seed(0)
    path = tiny.save(plant_sink(tiny.build("llama")), root / "hf")
    base = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.seq_len=32",
        "capture.top_k=8",
        f"paths.root={root}",
        "wandb.mode=disabled",
        "retrofit.steps=4",
        "retrofit.eval_every=2",
        "retrofit.seq_len=16",
        "retrofit.eval_chunks=2",
        "retrofit.train_chunks=6",
        "retrofit.bootstrap=50",
        "retrofit.variants=[attn_bias,softmax_plus_one,mlp_bias]",
        "retrofit.kept=[attn_bias]",
    ]
    detected_run(compose(base), n_seq=4, seq_len=32)
    return root, base, path


def test_rule_retrofit_writes_every_arm_and_resumes(detected):
    from helpers import run_module

    root, base, path = detected
    weights = {p.name: p.read_bytes() for p in Path(path).glob("*.safetensors")}
    proc = run_module("retrofit", *base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pipeline.cli import compose
    from pipeline.io import run_dir

    out = run_dir(compose(base), "retrofit")  # results/tiny_random/wiki_sample/retrofit/<config id>
    summary = pd.read_parquet(out / "summary.parquet")
    assert summary["arm"].tolist() == ["none", "attn_bias", "softmax_plus_one", "mlp_bias", "attn_bias@kept"]
    assert summary.set_index("arm")["params"].to_dict() == {
        "none": 0,
        "attn_bias": 4 * 4 * (2 * 16 + 1),
        "softmax_plus_one": 0,
        "mlp_bias": 4 * 64,
        "attn_bias@kept": 4 * 4 * 33,
    }
    assert (summary["eval_chunks"] == "0-1").all() and (summary["train_chunks"] == "2-7").all()
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves[curves["arm"] == "attn_bias"]["step"]) == [0, 2, 4]
    assert (curves["ratio_lo"] <= curves["ratio_to_intact"]).all() and (
        curves["ratio_to_intact"] <= curves["ratio_hi"]
    ).all()
    layers = pd.read_parquet(out / "layers.parquet")
    assert len(layers) == 5 * 4 and layers["slot_share"].notna().all()
    assert (out / "recovery.png").stat().st_size > 0
    assert weights == {p.name: p.read_bytes() for p in Path(path).glob("*.safetensors")}  # the model untouched
    # a rerun resumes every arm from its finished checkpoint: the same numbers
    again = run_module("retrofit", *base)
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), summary)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), curves)
    # other settings: their own folder (another config id), nothing of this one overwritten
    before = (out / "summary.parquet").read_bytes()
    other = run_dir(compose([*base, "retrofit.lr=0.1"]), "retrofit")
    assert other != out and other.parent == out.parent
    assert (out / "summary.parquet").read_bytes() == before


def test_rule_retrofit_trains_each_arm_once_per_seed(detected):
    from pipeline.cli import compose
    from pipeline.io import run_dir

    from helpers import run_module

    root, base, _ = detected
    args = [*base, "retrofit.seeds=[3,4]", "retrofit.variants=[mlp_bias]", "retrofit.kept=[]"]
    proc = run_module("retrofit", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir(compose(args), "retrofit")
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(zip(summary["seed"], summary["arm"])) == [(3, "none"), (3, "mlp_bias"), (4, "none"), (4, "mlp_bias")]
    trained = summary[summary["arm"] == "mlp_bias"]["ratio_to_intact"].tolist()
    assert trained[0] != trained[1]  # other training batches, other numbers
    text = R.reading(summary, pd.read_parquet(out / "layers.parquet"))
    assert "range over seeds 3, 4" in text and f"{R._x(float(pd.Series(trained).median()))} [" in text
    from helpers import assert_one_line_error

    assert_one_line_error(
        run_module("retrofit", *base, "retrofit.seeds=[3,3]"), "retrofit.seeds=[3, 3] names a seed twice"
    )


def test_rule_retrofit_unknown_variant_is_one_line(detected):
    from helpers import assert_one_line_error, run_module

    _, base, _ = detected
    assert_one_line_error(
        run_module("retrofit", *base, "retrofit.variants=[halve]"), "unknown retrofit variant 'halve'"
    )


# ---------------------------------------------------------------- rule retrofit in the DAG
def test_a_retrofit_section_plans_one_job_per_model_and_corpus(tmp_path):
    from helpers import job_counts, snakemake, write_sweep

    sweep = write_sweep(
        tmp_path,
        models=["tiny_random"],
        corpora=["wiki_sample", "news_sample"],
        retrofit={"variants": ["value_bias", "mlp_bias"], "steps": 4},
    )
    proc = snakemake("-n", "-p", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout)["retrofit"] == 2
    commands = [ln for ln in proc.stdout.splitlines() if "-m pipeline.retrofit " in ln]
    assert all("retrofit.variants=[value_bias,mlp_bias]" in c and "retrofit.steps=4" in c for c in commands), commands


def test_an_unknown_retrofit_variant_fails_the_dry_run_in_one_line(tmp_path):
    from helpers import snakemake, write_sweep

    sweep = write_sweep(tmp_path, models=["tiny_random"], corpora=["wiki_sample"], retrofit={"variants": ["halve"]})
    proc = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "unknown retrofit variant 'halve'" in errors[0], proc.stderr[
        -2000:
    ]
