"""Issue 24: a run touches only what it owns. Every case goes through the entry point a user calls
(`python -m pipeline.<rule> key=value`, `snakemake [-n] --config sweep=...`) and asserts the one
error line and exit code 2 (or that it works), that nothing outside the working directory changed
(a canary one level up) and that no earlier good output was removed (sha256 of every file)."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

import topics.owns
from helpers import SNAKEMAKE, assert_one_line_error, run_module, snakemake, tree
from topics.owns import outside

work = topics.owns.work  # the fixture of tests/topics/owns.py


TRAIN = [
    "train=cpu_backcopy",
    "train.model.n_layer=1",
    "train.model.n_head=2",
    "train.model.n_embd=16",
    "train.model.block_size=16",
    "train.batch_size=4",
    "train.eval_iters=1",
    "train.probe_batch_size=2",
    "train.log_interval=2",
    "train.warmup_iters=2",
    "train.eval_interval=2",
    "train.checkpoint_interval=2",
    "train.max_iters=4",
]


# ---------------------------------------------------------------- 1. names that become paths
@pytest.mark.parametrize(
    "module, args, key",
    [
        ("fetch_model", ["model=tiny_random", "model.name=../../victim"], "model.name"),
        ("fetch_corpus", ["data=news_sample", "data.name=../escaped_corpus"], "data.name"),
        ("fetch_model", ["model=tiny_random", "model.revision=../x"], "model.revision"),
        ("train", [*TRAIN, "train.name=../../x"], "train.name"),
    ],
)
def test_a_name_that_leaves_the_working_directory_fails_at_compose(work, module, args, key):
    (work.parent / "victim" / "hf").mkdir(parents=True)
    (work.parent / "victim" / "hf" / "weights").write_text("keep me")
    before = outside(work)
    proc = run_module(module, *args, f"paths.root={work}")
    assert_one_line_error(proc, key, "is not a safe name")
    assert outside(work) == before and tree(work) == {}


def test_unsafe_names_fail_the_dry_run_in_one_line(work):
    bad = work.parent / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"models": ["tiny_random"], "corpora": ["news_sample"], "overrides": ["data.name=../../x"]})
    )
    proc = snakemake("-n", "--config", f"sweep={bad}", cwd=work)
    assert_one_line_error(proc, "rule tokenize (tiny_random, news_sample)", "data.name='../../x' is not a safe name")
    # 2. a sweep file whose name would run commands: refused at -n, nothing run, nothing written
    weird = work.parent / "a|touch PWNED|b; $(touch PWNED2) 'my sweep.yaml"
    weird.write_text(bad.read_text())
    before = outside(work)
    proc = snakemake("-n", "--config", f"sweep={weird}", cwd=work)
    assert_one_line_error(proc, "sweep (the file name)=", "is not a safe name")
    assert outside(work) == before and not list(work.rglob("PWNED*")) and not (work / "logs").exists()


# ---------------------------------------------------------------- 2. no config value reaches the shell unquoted
def test_a_sweep_in_a_folder_named_like_a_shell_command_is_quoted(work):
    folder = work.parent / "we|ird; $(touch PWNED) 'q d"
    folder.mkdir()
    sweep = folder / "sw.yaml"
    sweep.write_text(
        yaml.safe_dump({"models": [], "corpora": [], "train": {"configs": ["cpu_backcopy"], "variants": ["default"]}})
    )
    proc = snakemake("-n", "-p", "--config", f"sweep={sweep}", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = [ln for ln in proc.stdout.splitlines() if "-m pipeline.report " in ln]
    assert len(report) == 1 and "sweep_name='\"'\"'" in report[0], report  # shell-quoted, then Hydra-quoted
    command = report[0].split("Shell command: ", 1)[-1].strip()
    (work / "logs/report").mkdir(parents=True)
    ran = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {command}"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )  # the job's command, as Snakemake runs it
    ran.stderr = ran.stdout + ran.stderr  # 2>&1 | tee {log:q}
    assert_one_line_error(ran, "is missing")  # it read the sweep at that path (and wants the training first)
    assert not list(work.parent.rglob("PWNED"))


# ---------------------------------------------------------------- 3. a resume never mixes settings
def test_a_resume_with_other_settings_is_refused(work):
    args = [*TRAIN, f"paths.root={work}"]
    assert run_module("train", *args).returncode == 0
    good = tree(work)
    proc = run_module("train", *args, "train.lr=0.0001", "seed=7")
    assert_one_line_error(
        proc,
        "trained with other settings",
        "seed=1 there, 7 now",
        "train.lr=0.01 there, 0.0001 now",
        "train.resume=false",
    )
    assert tree(work) == good
    assert run_module("train", *args, "train.max_iters=6").returncode == 0  # extending a constant schedule is a resume
    proc = run_module("train", *args, "train.lr=0.0001", "seed=7", "train.resume=false")
    assert proc.returncode == 0 and "starting afresh" in proc.stderr, proc.stderr[-2000:]
    import torch

    ckpt = torch.load(work / "results/train/cpu_backcopy/default/checkpoint.pt", weights_only=False)
    assert (ckpt["train"]["lr"], ckpt["seed"], ckpt["step"]) == (0.0001, 7, 4)
    # the same check runs while Snakemake builds the DAG (check_configs -> dry_run), before it deletes outputs
    from massive.core.errors import MassiveError
    from pipeline.checks import dry_run
    from pipeline.cli import compose

    dry_run(compose([*args, "stage=train", "train.lr=0.0001", "seed=7"], config_name="train"))
    with pytest.raises(MassiveError, match="train.lr=0.0001 there, 0.5 now"):
        dry_run(compose([*args, "stage=train", "train.lr=0.5", "seed=7"], config_name="train"))


# ---------------------------------------------------------------- 8. resume under Snakemake after kill -9
def test_training_killed_with_kill_9_resumes_from_its_checkpoint_under_snakemake(work):
    sweep = work.parent / "tr.yaml"
    grid = {
        "max_iters": [200],
        "checkpoint_interval": [20],
        "eval_interval": [100],
        "model.n_layer": [1],
        "model.n_embd": [16],
        "model.n_head": [2],
        "model.block_size": [16],
        "batch_size": [4],
        "eval_iters": [1],
        "probe_batch_size": [2],
    }
    sweep.write_text(
        yaml.safe_dump(
            {
                "models": [],
                "corpora": [],
                "train": {"configs": ["cpu_backcopy"], "variants": ["default"], "scale": grid},
            }
        )
    )
    from pipeline.sweep import train_runs

    name = train_runs(yaml.safe_load(sweep.read_text()))[0][0]  # cpu_backcopy_batch_size4_..._probe_batch_size2
    out = work / "results/train" / name / "default"
    target = str(out / "metrics.parquet").replace(str(work) + "/", "")
    cmd = [*SNAKEMAKE, "--directory", str(work), "--cores", "1", target, "--config", f"sweep={sweep}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    log = open(work.parent / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "resume.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, (work.parent / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the training job, mid-run
    proc.wait()
    import torch

    assert (out / "resume.pt").exists(), "no checkpoint before the kill"
    killed_at = torch.load(out / "resume.pt", weights_only=False)["step"]
    assert 0 < killed_at < 200
    again = snakemake("--cores", "1", target, "--config", f"sweep={sweep}", cwd=work)
    if "--unlock" in again.stderr + again.stdout:  # the README's step after a kill -9 of snakemake itself
        assert snakemake("--unlock", "--config", f"sweep={sweep}", cwd=work).returncode == 0
        again = snakemake("--cores", "1", target, "--config", f"sweep={sweep}", cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    text = (work / "logs/train" / name / "default.log").read_text()
    resumed = [int(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if "resuming" in ln and "at step" in ln]
    assert resumed and resumed[0] >= killed_at, text[-2000:]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 200


# ---------------------------------------------------------------- 5, 7. checks at snakemake -n, before any deletion
@pytest.fixture(scope="module")
def fetched_work(tmp_path_factory):
    """A working directory with tiny_random fetched and a (fake) good tokens.parquet."""
    work = tmp_path_factory.mktemp("fetched") / "work"
    work.mkdir()
    assert run_module("fetch_model", "model=tiny_random", f"paths.root={work}").returncode == 0
    tokens = work / "results/tiny_random/news_sample/tokens.parquet"
    tokens.parent.mkdir(parents=True)
    tokens.write_bytes(b"a good earlier output")
    return work


@pytest.mark.parametrize(
    "override, needles",
    [
        (
            "tokenize.seq_len=100000",
            ["rule tokenize (tiny_random, news_sample)", "seq_len=100000", "maximum positions"],
        ),
        ("detect.min_abs=nan", ["detect.min_abs=nan is not a finite number"]),
        ("capture.topk=3", ["rule capture (tiny_random, news_sample)", "topk"]),
        (
            "ablate.layers=[1,99]",
            ["overrides entry 'ablate.layers=[1,99]'", "the DAG sets per job"],
        ),  # blocks: test_experiments
    ],
)
def test_values_known_from_the_config_fail_before_snakemake_deletes_anything(fetched_work, override, needles):
    sweep = fetched_work.parent / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "models": ["tiny_random"],
                "corpora": ["news_sample"],
                "overrides": [override],
                "ablate": {"interventions": ["none", "zero"], "layers": [[1, 99]] if "99" in override else ["emerge"]},
            }
        )
    )
    before = tree(fetched_work)
    proc = snakemake(
        "--cores", "1", "--config", f"sweep={sweep}", cwd=fetched_work
    )  # a real run, not -n: nothing deleted
    assert_one_line_error(proc, *needles)
    after = tree(fetched_work)
    assert {k: v for k, v in after.items() if not k.startswith(".snakemake")} == {
        k: v for k, v in before.items() if not k.startswith(".snakemake")
    }


# ---------------------------------------------------------------- 4. fetched.json: relative paths and content hashes
def test_a_copied_or_changed_cache_is_detected(fetched_work, tmp_path):
    from pipeline.cli import compose
    from pipeline.model import hf_dir

    copy = tmp_path / "copy"
    shutil.copytree(fetched_work, copy)
    assert (
        hf_dir(compose(["model=tiny_random", f"paths.root={copy}"])) == copy / "cache/models/tiny_random/hf"
    )  # its own
    weights = copy / "cache/models/tiny_random/hf/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1  # one bit, same size
    weights.write_bytes(bytes(data))
    original = tree(fetched_work)
    proc = run_module("tokenize", "model=tiny_random", "data=news_sample", f"paths.root={copy}")
    assert_one_line_error(proc, "model.safetensors changed since fetch_model recorded it", "fetch the model again")
    assert tree(fetched_work) == original
