"""A sweep is an experiment: each stage's outputs are keyed by the settings it reads
(pipeline/stages.py), so an override reaches only the stages that read it, two settings live side by
side, and two sweeps that agree on a stage share it."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import assert_one_line_error, job_counts, snakemake, write_sweep

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


def plan_of(work: Path, name: str, **changes) -> dict[str, int]:
    sweep = {**SMALL, **changes}
    path = work / f"{name}.yaml"
    path.write_text(write_sweep(work, **sweep).read_text())
    proc = snakemake("-n", "--config", f"sweep={path}", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job_counts(proc.stdout)


def test_a_tokenize_override_reruns_tokenize_and_what_follows_never_the_fetches(after_small):
    counts = plan_of(after_small, "more", overrides=[*SMALL["overrides"], "tokenize.num_sequences=32"])
    assert counts == {
        "tokenize": 1,
        "capture": 1,
        "detect": 1,
        "figures": 1,
        "ablate": 1,
        "attention": 1,
        "ablation": 1,
        "report": 1,
        "all": 1,
    }, counts


@pytest.mark.parametrize("override", ["detect.min_ratio=500", "detect.massive_max_share=0.4"])
def test_a_detect_only_override_never_reruns_capture(after_small, override):
    """No key of `detect` is the capture's: it counts at ladders of thresholds (capture.counts), and
    detect picks its own among them (massive.measure.capture.Capture.at)."""
    counts = plan_of(after_small, "detect_only", overrides=[*SMALL["overrides"], override])
    assert "capture" not in counts and "tokenize" not in counts and "figures" not in counts, counts
    assert counts["detect"] == 1 and counts["ablate"] == 1 and counts["attention"] == 1
    assert "fetch_model" not in counts and "fetch_corpus" not in counts


def test_a_figures_only_change_reruns_figures_and_what_draws_figures(after_small):
    assert plan_of(after_small, "dpi", overrides=[*SMALL["overrides"], "figures.dpi=60"]) == {
        "figures": 1,
        "attention": 1,
        "ablation": 1,
        "report": 1,
        "all": 1,
    }  # attention and ablation draw figures too


def test_a_detect_threshold_the_capture_did_not_count_at_fails_the_dry_run_in_one_line(tmp_path):
    sweep = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["detect.min_ratio=300"])
    error = assert_one_line_error(
        snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path), "detect.min_ratio=300", "capture.counts.min_ratio"
    )
    assert "500" in error  # the values it may take


def test_a_plain_copy_under_another_name_recomputes_nothing(after_small):
    """Only the sweep's own documents (its ablation table and report, named by it) are new."""
    assert plan_of(after_small, "copy") == {"ablation": 1, "report": 1, "all": 1}


def test_every_keyed_folder_has_its_settings_and_the_ids_follow_what_a_stage_reads(compose_in):
    from pipeline import stages

    base = compose_in("model=tiny_random", "data=news_sample")
    more = compose_in("model=tiny_random", "data=news_sample", "tokenize.num_sequences=32")
    looser = compose_in("model=tiny_random", "data=news_sample", "detect.min_ratio=500")
    changed = {s for s in stages.STAGES if stages.stage_id(base, s) != stages.stage_id(more, s)}
    assert changed == set(stages.STAGES)  # every keyed stage comes after tokenize
    assert {s for s in stages.STAGES if stages.stage_id(base, s) != stages.stage_id(looser, s)} == {
        "detect",
        "ablate",
        "zeroshot",
        "ablate_images",
        "attention",
        "origins",
        "inference",
        "retrofit",
    }
    m = stages.manifest(more, "capture")
    assert m["after"] == {"tokenize": stages.stage_id(more, "tokenize")} and m["reads"]["capture"]["top_k"] > 0
    assert set(m["reads"]) == {"model", "data", "seed", "capture"} and m["reads"]["capture"]["counts"]["min_ratio"]
    assert re.fullmatch(r"[0-9a-f]{8}", stages.stage_id(more, "capture"))


def test_an_override_the_dag_sets_fails_the_dry_run_in_one_line(tmp_path):
    sweep = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["ablate.layers=[3,99]"])
    error = assert_one_line_error(snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path), "ablate.layers")
    assert "which the DAG sets per job" in error


# ---------------------------------------------------------------- two experiments run one after the other
# a model and a corpus named by path (user_files: tiny_random with 3 blocks, news_sample, under names of their own)
MINI = dict(
    models=["scratch/my_tiny.yaml"],
    corpora=["scratch/my_news.yaml"],
    overrides=["tokenize.num_sequences=2", "capture.top_k=8"],
)


def tables(work: Path) -> dict[str, str]:
    """The digest of every table (Parquet, JSON) under results/, by relative path."""
    return {
        str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((work / "results").rglob("*"))
        if p.suffix in (".parquet", ".json") and ".hydra" not in p.parts
    }


def run_sweep(work: Path, name: str, *config: str, **sweep) -> None:
    path = work / f"{name}.yaml"
    path.write_text(write_sweep(work, **sweep).read_text())
    proc = snakemake("--cores", "2", "--config", f"sweep={path}", *config, cwd=work, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_sweeps_live_side_by_side_and_compare(tmp_path):
    """Also: a model and a corpus named by path (MINI) run end to end, validated as conf/'s."""
    import json

    import yaml

    from helpers import only_id

    other = {**MINI, "overrides": ["tokenize.num_sequences=3", "capture.top_k=8"]}
    work, alone = tmp_path / "both", tmp_path / "alone"
    work.mkdir(), alone.mkdir()
    user_files(work), user_files(alone)
    run_sweep(work, "a", **MINI)
    pair = work / "results" / "my_tiny" / "my_news"  # the YAMLs named by path ran end to end, under their names
    assert json.loads((only_id(pair / "detect") / "summary.json").read_text())["n_layers"] == 3
    settings = yaml.safe_load((only_id(pair / "capture") / "settings.yaml").read_text())
    assert (
        settings["reads"]["model"]["arch"]["num_hidden_layers"] == 3 and settings["reads"]["data"]["name"] == "my_news"
    )
    first, report = tables(work), (work / "results/report_a.html").read_bytes()
    second = run_sweep(work, "b", **other)
    assert job_counts(second.stdout + second.stderr) == {
        "tokenize": 1,
        "capture": 1,
        "detect": 1,
        "figures": 1,
        "report": 1,
        "all": 1,
    }  # never the fetches
    both = tables(work)
    assert {k: v for k, v in both.items() if k in first} == first  # nothing of sweep a was rewritten
    assert (work / "results/report_a.html").read_bytes() == report
    shutil.copytree(work / "cache", alone / "cache", symlinks=True)  # the fetches (sweep b's run made none)
    by_itself = run_sweep(alone, "b", **other)
    assert job_counts(by_itself.stdout + by_itself.stderr) == job_counts(second.stdout + second.stderr)
    b_alone = tables(alone)
    assert {k: both[k] for k in b_alone} == b_alone  # sweep b's tables as if run alone (same paths, same bytes)
    assert set(both) == set(first) | set(b_alone) and set(first) != set(b_alone)
    compare = run_sweep(work, "b", "compare=" + str(work / "a.yaml"), **other)
    assert job_counts(compare.stdout + compare.stderr) == {"compare": 1, "all": 1}
    page = (work / "results/compare_a_vs_b.html").read_text()
    assert "tokenize.num_sequences" in page and "<td>2</td>" in page and "<td>3</td>" in page  # the differing setting
    assert "my_tiny" in page and "my_news" in page


def test_block_indices_are_checked_against_the_fetched_config_at_the_dry_run(tmp_path):
    from helpers import run_module

    fetched = run_module("fetch_model", "model=tiny_random", "wandb.mode=disabled", cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    sweep = write_sweep(
        tmp_path,
        models=["tiny_random"],
        corpora=["news_sample"],
        ablate={"interventions": ["none", "zero"], "layers": ["emerge", [1, 99]]},
    )
    error = assert_one_line_error(snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path), "ablate.layers", "99")
    assert "rule ablate" in error


# ---------------------------------------------------------------- a model and a corpus named by path
def user_files(work: Path, **model_changes) -> None:
    """scratch/my_tiny.yaml (conf/model/tiny_random.yaml with 3 blocks, under its own name) and
    scratch/my_news.yaml (conf/data/news_sample.yaml under its own name), as a user writes them."""
    import yaml

    from pipeline.cli import CONF_DIR

    (work / "scratch").mkdir(exist_ok=True)
    model = yaml.safe_load((CONF_DIR / "model" / "tiny_random.yaml").read_text())
    model["name"], model["arch"]["num_hidden_layers"] = "my_tiny", 3
    model.pop("defaults")  # the schema of conf/model/ applies all the same
    (work / "scratch" / "my_tiny.yaml").write_text(yaml.safe_dump({**model, **model_changes}))
    data = {**yaml.safe_load((CONF_DIR / "data" / "news_sample.yaml").read_text()), "name": "my_news"}
    (work / "scratch" / "my_news.yaml").write_text(yaml.safe_dump(data))


def test_a_bad_model_yaml_named_by_path_fails_the_dry_run_in_one_line(tmp_path):
    user_files(tmp_path, hidden_sise=64)
    sweep = write_sweep(tmp_path, models=["scratch/my_tiny.yaml"], corpora=["news_sample"])
    assert_one_line_error(snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path), "hidden_sise")
    assert not (tmp_path / "results").exists()


def test_a_model_yaml_by_path_reaches_its_jobs_through_a_search_path(tmp_path, monkeypatch):
    from pipeline import jobs
    from pipeline import sweep as sweeps

    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    sweep = sweeps.load(str(write_sweep(tmp_path, models=["scratch/my_tiny.yaml"], corpora=["news_sample"])))
    assert sweep["models"] == ["my_tiny"] and list(sweep["user_configs"]["model"]) == ["my_tiny"]
    plan = jobs.Plan(sweep, "sweep")
    fetch, tokenize = (
        plan.args("fetch_model", model="my_tiny"),
        plan.args("tokenize", model="my_tiny", corpus="news_sample"),
    )
    search = [a for a in fetch if a.startswith("hydra.searchpath=")]
    assert len(search) == 1 and search[0] in tokenize and "model=my_tiny" in fetch
    assert not any(a.startswith("hydra.searchpath=") for a in plan.args("fetch_corpus", corpus="news_sample"))
    cfg = plan.compose("tokenize", {"model": "my_tiny", "corpus": "news_sample"}, tokenize)
    assert cfg.model.name == "my_tiny" and cfg.model.arch.num_hidden_layers == 3
