"""Training checkpoints as a sweep axis: a sweep's `revisions` section makes each revision a run
<model>@<revision> with its own fetch (hub code with revision=, offline from a hub-shaped cache here:
tests/hub.py) and results, and the report draws the emergence against the training step."""

import json
import re

import pytest

from massive.core.errors import MassiveError
from pipeline import jobs, paths
from pipeline import sweep as sweeps

from helpers import assert_one_line_error
from topics.checkpoints import sweep_file

PYTHIA = ["pythia_160m", "pythia_410m", "pythia_1b", "pythia_1_4b"]


# ---------------------------------------------------------------- the cluster sweep (dry run: no hub needed)
def test_checkpoints_sweep_plans_every_revision_and_names_a_bad_one(tmp_path):
    """`snakemake -n --config sweep=checkpoints` with the SLURM profile, offline: each of Pythia's listed
    revisions a run with its own fetch; a revision Pythia does not publish fails the dry run in one line."""
    from helpers import job_counts, paper_env, snakemake

    sweep = sweeps.load("checkpoints")
    steps = sweep["revisions"]["pythia_160m"]
    assert list(sweep["revisions"]) == PYTHIA and all(sweep["revisions"][m] == steps for m in PYTHIA)
    proc = snakemake("-n", "-p", "--config", "sweep=checkpoints", cwd=tmp_path / "a", env=paper_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts, runs = job_counts(proc.stdout), len(PYTHIA) * len(steps)
    assert counts["fetch_model"] == counts["capture"] == counts["detect"] == counts["attention"] == runs, counts
    assert re.search(
        r"pipeline\.fetch_model model=pythia_1b model\.name=pythia_1b@step512 model\.revision=step512", proc.stdout
    )
    assert re.search(r"results/pythia_410m@step143000/redpajama_sample/capture/[0-9a-f]{8}/", proc.stdout)

    bad = sweep_file(tmp_path, corpora=["redpajama_sample"], revisions={"pythia_160m": ["step1000", "step1500"]})
    proc = snakemake("-n", "--config", f"sweep={bad}", cwd=tmp_path / "b", env=paper_env(tmp_path))
    line = assert_one_line_error(proc, "model.revision='step1500'", "EleutherAI/pythia-160m", "published")
    assert "step1000" not in line.split("model.revision")[1].split("(")[0]
    assert not (tmp_path / "b" / "results").exists() and not (tmp_path / "b" / "cache").exists()


def test_a_local_checkpoint_folder_is_a_revision(tmp_path, compose_in):
    """source=local reads a revision as a sub-folder of model.path (a trainer's checkpoint-<step>); a
    missing one is one line at compose time; a run that asks for another revision than the one fetched
    is refused before it reads the weights."""
    from pipeline import fetch_model
    from pipeline.model import hf_dir

    import tiny

    tiny.save(tiny.build("llama"), tmp_path / "ckpts" / "checkpoint-10")
    base = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={tmp_path / 'ckpts'}",
        "model.name=tiny_random@checkpoint-10",
    ]
    cfg = compose_in(*base, "model.revision=checkpoint-10")
    fetch_model.run(cfg)
    assert hf_dir(cfg) == tmp_path / "ckpts" / "checkpoint-10"
    assert (
        json.loads((tmp_path / paths.fetched("tiny_random@checkpoint-10")).read_text())["revision"] == "checkpoint-10"
    )
    with pytest.raises(MassiveError, match=r"checkpoint-20 is not a Hugging Face model directory"):
        compose_in(*base, "model.revision=checkpoint-20")
    tiny.save(tiny.build("llama"), tmp_path / "ckpts" / "checkpoint-20")
    with pytest.raises(
        MassiveError, match=r"was fetched at revision checkpoint-10 .* asks for checkpoint-20: name the run"
    ):
        hf_dir(compose_in(*base, "model.revision=checkpoint-20"))


# ---------------------------------------------------------------- a tiny model whose planted gain grows over training
GAINS = {"step1000": 200.0, "step4000": 1000.0}  # the planted unit's gain at each checkpoint (two: each a DAG run)


@pytest.mark.slow
def test_emergence_over_training_through_the_dag(tmp_path):
    """Pythia's YAML, fetched at two revisions from a hub-shaped cache (offline) holding a tiny gpt_neox
    whose planted massive activation grows from one checkpoint to the next: `snakemake` runs each revision
    as a run, and the largest ratio grows with the step, in the tables and in the report's section."""
    import os
    import subprocess

    from massive.core import families
    from pipeline.checkpoints import table

    import tiny
    from helpers import SNAKEMAKE
    from hub import hub_env, model_repo

    for revision, gain in GAINS.items():  # planted at the BOS, which the tokenizer adds (model.bos: auto)
        model = tiny.plant_family(families.build("gpt_neox"), 0, 7, gain=gain)
        model_repo(
            tmp_path / "hf", "EleutherAI/pythia-160m", tiny.save(model, tmp_path / revision, add_bos=True), revision
        )
    work = tmp_path / "work"
    work.mkdir()
    sweep = sweep_file(
        work,
        revisions={"pythia_160m": list(GAINS)},
        attention={"num_sequences": 2},
        overrides=["tokenize.num_sequences=3", "capture.top_k=8", "figures.dpi=30", "ablate.max_chunks=2"],
        model_overrides={"pythia_160m": ["model.dtype=float32", "model.seq_len=32", "model.device_map=null"]},
    )
    env = {**os.environ, "WANDB_MODE": "disabled", **hub_env(tmp_path / "hf")}
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "2", "--config", f"sweep={sweep}"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    s = sweeps.load(sweep)
    plan = jobs.Plan(s, sweep)
    plan.ids(root=work)
    t = table(plan.where(str(work / "results")), s)
    assert t["revision"].tolist() == list(GAINS) and t["step"].tolist() == [1000, 4000]
    assert (
        t["found"].tolist() == ["yes", "yes"] and (t["emerge_layer"] == 0).all() and t["sink_1_share"].notna().all()
    ), t
    assert t["largest_ratio"].iloc[1] > 3 * t["largest_ratio"].iloc[0], t  # the gain grew 5x, and so does the ratio
    report = (work / paths.report_file("sweep")).read_text()
    assert "Emergence over training" in report and "pythia_160m on news_sample: first found at step1000" in report
    assert 'id="fig-checkpoints"' in report
