"""Issue 24: a run touches only what it owns. Every case goes through the entry point a user calls
(`python -m pipeline.<rule> key=value`, `snakemake [-n] --config sweep=...`) and asserts the one
error line and exit code 2 (or that it works), that nothing outside the working directory changed
(a canary one level up) and that no earlier good output was removed (sha256 of every file)."""

import shutil

import pytest

from helpers import run_module, snakemake, tree

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


@pytest.fixture
def work(tmp_path):
    """A working directory with a canary file one level up (tmp_path/canary.txt)."""
    (tmp_path / "canary.txt").write_text("canary")
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def outside(work):
    """Everything outside `work` (its parent's tree, work excluded)."""
    return {k: v for k, v in tree(work.parent).items() if not (k == "work" or k.startswith("work/"))}


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


# ---------------------------------------------------------------- 8. a deleted output is made again
def test_a_deleted_summary_json_is_made_again(tiny_dag, tmp_path):
    from helpers import job_counts

    copy = tmp_path / "dag"
    shutil.copytree(tiny_dag, copy, symlinks=True)  # mtimes kept; fetched.json's paths are relative: the copy's own
    from helpers import only_id

    (only_id(copy / "results/tiny_random/news_sample/detect") / "summary.json").unlink()
    proc = snakemake("-n", "--config", f"sweep={copy / 'sweep.yaml'}", cwd=copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout).get("detect") == 1, proc.stdout[-3000:]
