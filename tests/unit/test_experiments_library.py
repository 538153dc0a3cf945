"""A sweep is an experiment: each stage's outputs are keyed by the settings it reads
(pipeline/stages.py), so an override reaches only the stages that read it, two settings live side by
side, and two sweeps that agree on a stage share it."""

import os
import re
from pathlib import Path

import pytest

from helpers import snakemake, write_sweep

# small enough to plan in seconds: one LLM on one corpus, every per-pair stage, the ablation table, a training run
SMALL = dict(
    models=["tiny_random"],
    corpora=["news_sample"],
    overrides=["capture.top_k=8"],
    ablate={"interventions": ["none", "zero"], "layers": ["emerge"]},
    attention={"num_sequences": 2},
    train={"configs": ["cpu_backcopy_short"], "variants": ["default"]},
)


def planned_outputs(stdout: str) -> list[str]:
    return [f for line in re.findall(r"^    output: (.*)$", stdout, re.M) for f in line.split(", ")]


def pretend_run(work: Path, stdout: str) -> None:
    """Create every output a dry run lists that is not there (the model is really fetched: the dry
    run checks its config.json), all with one mtime: as if the sweep had run."""
    for f in planned_outputs(stdout):
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        if not (work / f).exists():
            (work / f).write_text("x")
    for f in [*planned_outputs(stdout), *(p for p in (work / "cache").rglob("*") if p.is_file())]:
        os.utime(work / f, (1_700_000_000, 1_700_000_000))


@pytest.fixture(scope="module")
def after_small(tmp_path_factory):
    """A working directory in which SMALL (sweep file small.yaml) has 'run' (its model fetched)."""
    from helpers import run_module

    tmp_path = tmp_path_factory.mktemp("after_small")
    fetched = run_module("fetch_model", "model=tiny_random", "wandb.mode=disabled", cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    base = tmp_path / "small.yaml"
    base.write_text(write_sweep(tmp_path, **SMALL).read_text())
    proc = snakemake("-n", "--config", f"sweep={base}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pretend_run(tmp_path, proc.stdout)
    again = snakemake("-n", "--config", f"sweep={base}", cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
    return tmp_path


def test_only_the_overrides_a_stage_reads_reach_its_job():
    from pipeline import jobs
    from pipeline import sweep as sweeps

    sweep = sweeps.load("default")
    sweep["overrides"] = ["tokenize.num_sequences=32", "detect.min_ratio=500", "wandb.mode=disabled"]
    plan = jobs.Plan(sweep, "default")
    assert plan.args("fetch_model", model="smollm2_135m") == ["model=smollm2_135m", "wandb.mode=disabled"]
    assert plan.args("fetch_corpus", corpus="wiki_sample") == ["data=wiki_sample", "wandb.mode=disabled"]
    assert plan.args("tokenize", model="smollm2_135m", corpus="wiki_sample")[-2:] == [
        "tokenize.num_sequences=32",
        "wandb.mode=disabled",
    ]
    assert "detect.min_ratio=500" not in plan.args("capture", model="smollm2_135m", corpus="wiki_sample")
    assert "detect.min_ratio=500" in plan.args("detect", model="smollm2_135m", corpus="wiki_sample")
    assert not any("sweep_name" in a for a in plan.args("train_compare", train="cpu_backcopy_short"))


@pytest.mark.parametrize(
    "override, needle",
    [
        ("ablate.layers=[3,99]", "ablate.layers"),
        ("model=gpt2", "sets model"),
        ("data=c4", "sets data"),
        ("model.bos=always", "protocols"),
        ("+model.name=x", "sets model.name"),
    ],
)
def test_an_override_of_a_key_the_dag_sets_per_job_is_refused(override, needle):
    from massive.core.errors import MassiveError
    from pipeline import jobs
    from pipeline import sweep as sweeps

    sweep = sweeps.load("default")
    sweep["overrides"] = [override]
    with pytest.raises(MassiveError, match="which the DAG sets per job") as exc:
        jobs.Plan(sweep, "default")
    assert needle in str(exc.value) and override in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------- a model and a corpus named by path


@pytest.mark.parametrize(
    "entry, text, needle",
    [
        ("scratch/none.yaml", None, "no such file"),
        ("scratch/bad.yaml", "name: [unclosed", "not valid YAML"),
        ("scratch/list.yaml", "- 1\n- 2\n", "not a mapping"),
        ("scratch/escape.yaml", "name: ../../victim\nsource: random\n", "is not a safe name"),
        ("scratch/gpt2.yaml", "source: random\n", "that of conf/model/gpt2.yaml"),
    ],
)
def test_a_model_yaml_by_path_is_checked_when_the_sweep_loads(tmp_path, monkeypatch, entry, text, needle):
    from massive.core.errors import MassiveError
    from pipeline import sweep as sweeps

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch").mkdir()
    if text is not None:
        (tmp_path / entry).write_text(text)
    with pytest.raises(MassiveError, match=needle) as exc:
        sweeps.load(str(write_sweep(tmp_path, models=[entry], corpora=["news_sample"])))
    assert entry in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "cache").exists()  # nothing copied
