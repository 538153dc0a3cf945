"""The Snakemake DAG: lint, dry runs driven by the sweep file, and a whole run on a tiny model."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--workflow-profile", str(REPO / "profiles/default")]


def snakemake(*args, cwd, timeout=900):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([*SNAKEMAKE, "--directory", str(cwd), *args], capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def write_sweep(tmp_path, **sweep) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_lint_is_clean(tmp_path):
    proc = snakemake("--lint", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_default_sweep_dry_run(tmp_path):
    proc = snakemake("-n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert counts == {"all": 1, "fetch_model": 2, "fetch_corpus": 3, "tokenize": 3, "capture": 3, "detect": 3,
                      "figures": 3, "ablate": 2, "ablation": 1, "attention": 2, "train": 2, "train_compare": 1,
                      "ablate_images": 1, "report": 1}, counts


def test_retrain_sweep_adds_the_training_jobs(tmp_path):
    counts = job_counts(snakemake("-n", "--config", "sweep=retrain", cwd=tmp_path).stdout)
    assert counts["train"] == 5 and counts["train_compare"] == 1


def test_editing_the_ablation_sweep_adds_exactly_its_jobs(tmp_path):
    one = write_sweep(tmp_path, models=["gpt2"], corpora=["wikitext2"], ablate={"interventions": ["none", "zero"], "layers": ["emerge"]})
    base = job_counts(snakemake("-n", "--config", f"sweep={one}", cwd=tmp_path).stdout)
    two = write_sweep(tmp_path, models=["gpt2"], corpora=["wikitext2"], ablate={"interventions": ["none", "zero"], "layers": ["emerge", "all", "2_3"]})
    more = job_counts(snakemake("-n", "--config", f"sweep={two}", cwd=tmp_path).stdout)
    assert base["ablate"] == 1 and more["ablate"] == 3
    assert {k: v for k, v in more.items() if k != "ablate"} == {k: v for k, v in base.items() if k != "ablate"}


def test_editing_the_sweep_changes_the_dag(tmp_path):
    one = write_sweep(tmp_path, models=["gpt2"], corpora=["wikitext2"])
    base = job_counts(snakemake("-n", "--config", f"sweep={one}", cwd=tmp_path).stdout)
    two = write_sweep(tmp_path, models=["gpt2", "llama2_7b"], corpora=["wikitext2", "c4"])
    more = job_counts(snakemake("-n", "--config", f"sweep={two}", cwd=tmp_path).stdout)
    assert base["capture"] == 1 and more["capture"] == 4
    assert more["fetch_model"] == 2 and more["fetch_corpus"] == 2


@pytest.mark.parametrize("sweep, message", [
    ({"models": ["no_such_model"], "corpora": ["wiki_sample"]}, "no conf/model/no_such_model.yaml"),
    ({"models": ["gpt2"], "corpora": ["wiki_sample"], "typo": 1}, "Additional properties are not allowed"),
    ({"models": [], "corpora": ["wiki_sample"]}, "models"),
])
def test_bad_sweep_is_rejected(tmp_path, sweep, message):
    proc = snakemake("-n", "--config", f"sweep={write_sweep(tmp_path, **sweep)}", cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.slow
def test_whole_dag_on_a_tiny_model(tmp_path):
    sweep = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"],
                        overrides=["tokenize.num_sequences=4", "capture.top_k=8"],
                        vision={"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_images=6"]})
    proc = snakemake("--cores", "2", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "results"
    report = (results / "report_sweep.html").read_text()
    assert "tiny_random on news_sample" in report and "none found" in report  # a random model has none
    for f in ["capture/topk.parquet", "detect/summary.json", "figures/layerwise.png", "figures/prompt_3d.png", "figures/token_map.png"]:
        assert (results / "tiny_random/news_sample" / f).stat().st_size > 0
    assert json.loads((results / "tiny_random/news_sample/detect/summary.json").read_text())["found"] is False
    assert "vit_random on photos" in report and "Vision transformers: interventions" in report
    vit = pd.read_parquet(results / "vit_random/photos/ablate/emerge/images.parquet").set_index("intervention")
    assert list(vit.index) == ["none", "zero", "mean", "random_zero", "fix_register_mean"]
    assert (vit["n_images"] == 6).all() and vit.loc["fix_register_mean", "entries_changed"] > 0
    prompt = pd.read_parquet(results / "vit_random/photos/capture/prompt.parquet", columns=["layer", "token"])
    assert prompt[prompt["layer"] == 0]["token"].tolist()[:6] == ["[CLS]", "[REG0]", "[REG1]", "[REG2]", "[REG3]", "patch 0,0"]
    rerun = snakemake("--cores", "2", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr
