"""The Snakemake DAG: lint, dry runs driven by the sweep file, and a whole run on a tiny model."""

import json

import pandas as pd
import pytest

from helpers import REPO, SNAKEMAKE, assert_one_error_line, job_counts, keyed, snakemake, write_sweep  # noqa: F401


@pytest.mark.slow
def test_whole_dag_on_a_tiny_model(tiny_dag):
    tmp_path = tiny_dag  # conftest.TINY_SWEEP, run once for this test and the browser test
    results = tmp_path / "results"
    at = lambda *job: keyed(tmp_path, tmp_path / "sweep.yaml", *job)  # noqa: E731
    report = (results / "report_sweep.html").read_text()
    assert "tiny_random on news_sample" in report and "none found" in report  # a random model has none
    for stage, f in [
        ("capture", "topk.parquet"),
        ("detect", "summary.json"),
        ("figures", "layerwise.png"),
        ("figures", "prompt_3d.png"),
        ("figures", "token_map.png"),
    ]:
        assert (at(stage, "tiny_random", "news_sample") / f).stat().st_size > 0
        assert (at(stage, "tiny_random", "news_sample") / "settings.yaml").is_file()  # what made them, beside them
    assert json.loads((at("detect", "tiny_random", "news_sample") / "summary.json").read_text())["found"] is False
    assert "What they cost at inference: tiny_random on news_sample" in report
    assert len(pd.read_parquet(at("inference", "tiny_random", "news_sample") / "window.parquet")) == 1 + 1 + 3
    assert "vit_random on photos" in report and "Vision transformers: interventions" in report
    assert "The settings behind these numbers" in report and "num_sequences: 4" in report
    vit = pd.read_parquet(at("ablate_images", "vit_random", "photos", "emerge") / "images.parquet").set_index(
        "intervention"
    )
    assert list(vit.index) == ["none", "zero", "mean", "random_zero", "fix_register_mean"]
    assert (vit["n_images"] == 6).all() and vit.loc["fix_register_mean", "entries_changed"] > 0
    prompt = pd.read_parquet(at("capture", "vit_random", "photos") / "prompt.parquet", columns=["layer", "token"])
    assert prompt[prompt["layer"] == 0]["token"].tolist()[:6] == [
        "[CLS]",
        "[REG0]",
        "[REG1]",
        "[REG2]",
        "[REG3]",
        "patch 0,0",
    ]
    rerun = snakemake("--cores", "2", "--config", f"sweep={tmp_path / 'sweep.yaml'}", cwd=tmp_path)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr
