"""The Snakemake DAG: lint, dry runs driven by the sweep file, and a whole run on a tiny model."""

import json
import re
import subprocess
import sys

import pytest

from helpers import (  # noqa: F401
    REPO,
    SNAKEMAKE,
    assert_one_error_line,
    dry_run_error,
    job_counts,
    keyed,
    snakemake,
    write_sweep,
)


def test_lint_is_clean(tmp_path):
    proc = snakemake("--lint", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


def test_default_sweep_dry_run(tmp_path):
    proc = snakemake("-n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert counts == {
        "all": 1,
        "fetch_model": 2,
        "protocol_model": 1,
        "fetch_corpus": 3,
        "tokenize": 4,
        "capture": 4,
        "detect": 4,
        "figures": 4,
        "ablate": 6,
        "ablation": 1,
        "attention": 3,
        "origins": 2,
        "inference": 1,
        "retrofit": 1,
        "train": 2,
        "train_compare": 1,
        "ablate_images": 1,
        "report": 1,
    }, counts  # + smollm2_135m@bos on wiki_sample


def test_retrain_sweep_adds_the_training_jobs(tmp_path):
    counts = job_counts(snakemake("-n", "--config", "sweep=retrain", cwd=tmp_path).stdout)
    assert counts["train"] == 5 and counts["train_compare"] == 1


def test_retrain_scale_sweep_lists_every_grid_point_and_the_scale_job(tmp_path):
    proc = snakemake("-n", "-p", "--config", "sweep=retrain_scale", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout) == {"train": 12, "train_compare": 6, "train_scale": 1, "report": 1, "all": 1}
    commands = [ln for ln in proc.stdout.splitlines() if "-m pipeline.train " in ln]
    grid = sorted(
        re.search(r"n_embd=(\d+) train.model.n_layer=(\d+) train.variant=(\w+)", c).groups() for c in commands
    )
    assert grid == sorted(
        (e, l, v) for e in ("128", "256", "512") for l in ("2", "4") for v in ("default", "attn_bias")
    )
    assert all("train=cpu_backcopy_scale train.name=cpu_backcopy_scale_n_embd" in c for c in commands)
    scale = [ln for ln in proc.stdout.splitlines() if "-m pipeline.train_scale " in ln]
    assert len(scale) == 1 and "train=cpu_backcopy_scale sweep_name=retrain_scale" in scale[0]


def test_a_scale_grid_with_a_bad_key_fails_the_dry_run_in_one_line(tmp_path):
    bad = write_sweep(
        tmp_path,
        models=[],
        corpora=[],
        train={"configs": ["cpu_backcopy_scale"], "variants": ["default"], "scale": {"model.n_embed": [128]}},
    )
    proc = snakemake("-n", "--config", f"sweep={bad}", cwd=tmp_path)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "n_embed" in errors[0], proc.stderr


def test_editing_the_ablation_sweep_adds_exactly_its_jobs(tmp_path):
    one = write_sweep(
        tmp_path,
        models=["gpt2"],
        corpora=["wikitext2"],
        ablate={"interventions": ["none", "zero"], "layers": ["emerge"]},
    )
    base = job_counts(snakemake("-n", "--config", f"sweep={one}", cwd=tmp_path).stdout)
    two = write_sweep(
        tmp_path,
        models=["gpt2"],
        corpora=["wikitext2"],
        ablate={"interventions": ["none", "zero"], "layers": ["emerge", "all", [2, 3]]},
    )
    more = job_counts(snakemake("-n", "--config", f"sweep={two}", cwd=tmp_path).stdout)
    assert base["ablate"] == 1 and more["ablate"] == 3
    assert {k: v for k, v in more.items() if k != "ablate"} == {k: v for k, v in base.items() if k != "ablate"}


def test_layers_entries_become_path_safe_folders_and_unambiguous_overrides(tmp_path):
    sweep = write_sweep(
        tmp_path,
        models=["gpt2"],
        corpora=["wikitext2"],
        ablate={"interventions": ["none"], "layers": ["emerge", "from_emerge", "all", [2, 3], 5]},
    )
    proc = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shells = re.findall(r"^Shell command: .* -m pipeline\.ablate (.*)$", proc.stdout, re.M)
    given = sorted(re.search(r"ablate\.layers=([^' ]+)", sh).group(1) for sh in shells)
    assert given == sorted(["emerge", "from_emerge", "all", "[2,3]", "[5]"]), given
    for slug in ("emerge", "from_emerge", "all", "2_3", "5"):  # each in its folder, keyed by its config id
        assert re.search(rf"results/gpt2/wikitext2/ablate/{slug}/[0-9a-f]{{8}}/perplexity\.parquet", proc.stdout), slug
    assert re.search(r"results/gpt2/wikitext2/ablate/from_emerge/[0-9a-f]{8}/regrowth\.parquet", proc.stdout)


@pytest.mark.parametrize(
    "text",
    [
        'ablate: {interventions: [none], layers: ["3_99"]}',  # the string
        "ablate: {interventions: [none], layers: [3_99]}",  # unquoted: YAML 1.1 would read the number 399
        'vision: {models: [vit_random], images: [photos], layers: ["3_99"]}',
    ],
)
def test_layers_written_as_a_string_are_rejected(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"models: [gpt2]\ncorpora: [wikitext2]\n{text}\n")
    error = dry_run_error(path, tmp_path)
    assert "'3_99'" in error and "[3, 99]" in error, error


@pytest.mark.parametrize(
    "ablate, needle",
    [
        ({"interventions": ["none", "zero"], "layers": ["from_emerg"]}, "from_emerg"),  # a misspelt keyword
        ({"interventions": ["none", "zero"], "layers": ["emerge"], "bootstrap": 0}, "bootstrap"),
        ({"interventions": ["none", "top_zeros"], "layers": ["emerge"]}, "top_zeros"),
    ],
)
def test_bad_ablation_entries_fail_the_dry_run_with_one_line(tmp_path, ablate, needle):
    assert needle in dry_run_error(
        write_sweep(tmp_path, models=["gpt2"], corpora=["wikitext2"], ablate=ablate), tmp_path
    )


@pytest.mark.parametrize(
    "sweep, twice",
    [
        ({"models": ["gpt2", "gpt2"], "corpora": ["wikitext2"]}, "models lists 'gpt2' twice"),
        ({"models": ["gpt2"], "corpora": ["c4", "wikitext2", "c4"]}, "corpora lists 'c4' twice"),
        (
            {"models": [], "corpora": [], "vision": {"models": ["vit_random", "vit_random"], "images": ["photos"]}},
            "vision.models lists 'vit_random' twice",
        ),
        (
            {"models": [], "corpora": [], "vision": {"models": ["vit_random"], "images": ["photos", "photos"]}},
            "vision.images lists 'photos' twice",
        ),
        (
            {
                "models": ["gpt2"],
                "corpora": ["c4"],
                "ablate": {"interventions": ["none"], "layers": [[2, 3], "emerge", [2, 3]]},
            },
            "ablate.layers lists '2_3' twice",
        ),
    ],
)
def test_a_sweep_naming_an_entry_twice_is_rejected(tmp_path, sweep, twice):
    assert twice in dry_run_error(write_sweep(tmp_path, **sweep), tmp_path)


@pytest.mark.parametrize(
    "sweep, needle",
    [
        ({"overrides": ["capture.top_kk=5"]}, "capture.top_kk"),
        ({"model_overrides": {"tiny_random": ["model.seq_lenn=8"]}}, "model.seq_lenn"),
        ({"overrides": ["tokenize.num_sequences=0"]}, "tokenize.num_sequences=0 must be positive"),
        ({"overrides": ["ablate.layers=1_2"]}, "sets ablate.layers, which the DAG sets per job"),
        (
            {"vision": {"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_imgs=6"]}},
            "ablate.max_imgs",
        ),
    ],
)
def test_a_typo_in_the_sweep_fails_before_any_job_runs(tmp_path, sweep, needle):
    """Every job's config is composed while the DAG is built: the dry run fails with the one-line error."""
    path = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], **sweep)
    assert needle in dry_run_error(path, tmp_path)


def test_a_typo_fails_snakemake_n_and_a_real_run_starts_no_job(tmp_path):
    """Through Snakemake: `snakemake -n` fails with the one-line error, and a real run starts no job,
    so the previous results stay as they were."""
    tokens = tmp_path / "results/tiny_random/news_sample/tokens.parquet"
    tokens.parent.mkdir(parents=True)
    tokens.write_bytes(b"an earlier good result")
    before = tokens.stat().st_mtime_ns
    path = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["capture.top_kk=5"])
    dry = snakemake("-n", "--config", f"sweep={path}", cwd=tmp_path)
    assert assert_one_error_line(dry) == dry_run_error(path, tmp_path) and "capture.top_kk" in dry.stderr
    real = snakemake("--cores", "1", "--config", f"sweep={path}", cwd=tmp_path, timeout=300)
    assert "capture.top_kk" in assert_one_error_line(real)
    assert tokens.read_bytes() == b"an earlier good result" and tokens.stat().st_mtime_ns == before
    assert not (tmp_path / "logs").exists() and not (tmp_path / "cache").exists()


def test_a_checked_sweep_is_not_composed_again_but_a_new_typo_is_caught(tmp_path):
    good = write_sweep(tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["capture.top_k=8"])
    assert snakemake("-n", "--config", f"sweep={good}", cwd=tmp_path).returncode == 0
    checked = json.loads((tmp_path / ".snakemake/checked_configs.json").read_text())
    assert len(checked["passed"]) == 7  # fetch_model, fetch_corpus, tokenize, capture, detect, figures, report
    bad = write_sweep(
        tmp_path, models=["tiny_random"], corpora=["news_sample"], overrides=["capture.top_k=8", "detect.min_ab=1"]
    )
    assert "detect.min_ab" in assert_one_error_line(snakemake("-n", "--config", f"sweep={bad}", cwd=tmp_path))
    assert json.loads((tmp_path / ".snakemake/checked_configs.json").read_text()) == checked


def test_the_dag_and_the_modules_agree_on_paths(tmp_path, compose_in):
    """pipeline.io (what the rule modules read and write) and the Snakefile share pipeline/paths.py."""
    from pipeline import io

    sweep = write_sweep(
        tmp_path, models=["gpt2"], corpora=["wikitext2"], ablate={"interventions": ["none"], "layers": ["emerge"]}
    )
    proc = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = set(re.findall(r"^    output: (.*)$", proc.stdout, re.M))
    outputs = {f for line in outputs for f in line.split(", ")}
    cfg = compose_in("model=gpt2", "data=wikitext2", "ablate.interventions=[none]")
    rel = lambda p: str(p.relative_to(tmp_path))
    assert rel(io.model_dir(cfg) / "fetched.json") in outputs
    assert rel(io.corpus_file(cfg)) in outputs and rel(io.tokens_file(cfg)) in outputs
    for stage, name in [
        ("capture", "topk.parquet"),
        ("detect", "summary.json"),
        ("figures", "layerwise.png"),
        ("ablate", "perplexity.parquet"),
    ]:
        assert rel(io.run_dir(cfg, stage) / name) in outputs, (stage, name)
        assert re.fullmatch("[0-9a-f]{8}", io.run_dir(cfg, stage).name)  # the stage's config id


def test_editing_the_sweep_changes_the_dag(tmp_path):
    one = write_sweep(tmp_path, models=["gpt2"], corpora=["wikitext2"])
    base = job_counts(snakemake("-n", "--config", f"sweep={one}", cwd=tmp_path).stdout)
    two = write_sweep(tmp_path, models=["gpt2", "llama2_7b"], corpora=["wikitext2", "c4"])
    more = job_counts(snakemake("-n", "--config", f"sweep={two}", cwd=tmp_path).stdout)
    assert base["capture"] == 1 and more["capture"] == 4
    assert more["fetch_model"] == 2 and more["fetch_corpus"] == 2


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"models": ["no_such_model"], "corpora": ["wiki_sample"]}, "no conf/model/no_such_model.yaml"),
        ({"models": ["gpt2"], "corpora": ["wiki_sample"], "typo": 1}, "Additional properties are not allowed"),
        ({"models": [], "corpora": ["wiki_sample"]}, "models"),
    ],
)
def test_bad_sweep_is_rejected(tmp_path, sweep, message):
    assert message in dry_run_error(write_sweep(tmp_path, **sweep), tmp_path)


@pytest.mark.parametrize(
    "sweep",
    [
        {"models": ["gpt2", "gpt2"], "corpora": ["wikitext2"]},  # the sweep file's own checks
        {"models": ["gpt2"], "corpora": ["wikitext2"], "ablate": {"interventions": ["none"], "layers": ["3_99"]}},
        {"models": ["no_such_model"], "corpora": ["wiki_sample"]},
    ],
)
def test_the_dry_runs_error_line_is_the_in_process_one(tmp_path, sweep):
    """helpers.dry_run_error (the tests above) gives exactly the line `snakemake -n` prints, exit 2."""
    path = write_sweep(tmp_path, **sweep)
    assert assert_one_error_line(snakemake("-n", "--config", f"sweep={path}", cwd=tmp_path)) == dry_run_error(
        path, tmp_path
    )


def test_paths_import_no_hydra():
    code = (
        "import sys, pipeline.paths; print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]", out
