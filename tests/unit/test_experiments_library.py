"""A sweep is an experiment: each stage's outputs are keyed by the settings it reads
(pipeline/stages.py), so an override reaches only the stages that read it, two settings live side by
side, and two sweeps that agree on a stage share it."""

import pytest

from helpers import write_sweep


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


def test_a_section_value_a_protocol_shadows_leaves_the_protocol_jobs_as_they_were():
    """The protocol run's own attention.num_sequences wins (Hydra: last wins), so a sweep that changes
    the attention section changes the command line, hence the Snakemake parameters, of the model's own
    runs only: each key once, where it takes effect."""
    from pipeline import jobs
    from pipeline import sweep as sweeps

    base = jobs.Plan(sweeps.load("default"), "default")
    mine = sweeps.load("default")
    mine["attention"] = {**mine["attention"], "num_sequences": 16}
    plan = jobs.Plan(mine, "mine")
    bos = dict(model="smollm2_135m@bos", corpus="wiki_sample")
    assert plan.args("attention", **bos) == base.args("attention", **bos)
    assert [a for a in plan.args("attention", **bos) if a.startswith("attention.num_sequences=")] == [
        "attention.num_sequences=2"
    ]
    own = dict(model="smollm2_135m", corpus="wiki_sample")
    assert "attention.num_sequences=16" in plan.args("attention", **own) != base.args("attention", **own)
    assert jobs.last_wins(["+a.b=1", "c=1", "+a.b=2", "c=2"]) == ["+a.b=1", "+a.b=2", "c=2"]  # additions kept


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
