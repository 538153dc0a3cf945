"""Issue 24: a run touches only what it owns. Every case goes through the entry point a user calls
(`python -m pipeline.<rule> key=value`, `snakemake [-n] --config sweep=...`) and asserts the one
error line and exit code 2 (or that it works), that nothing outside the working directory changed
(a canary one level up) and that no earlier good output was removed (sha256 of every file)."""

import shutil

import topics.owns
from helpers import snakemake

# ---------------------------------------------------------------- 8. a deleted output is made again
work = topics.owns.work  # the fixture of tests/topics/owns.py


def test_a_deleted_summary_json_is_made_again(tiny_dag, tmp_path):
    from helpers import job_counts

    copy = tmp_path / "dag"
    shutil.copytree(tiny_dag, copy, symlinks=True)  # mtimes kept; fetched.json's paths are relative: the copy's own
    from helpers import only_id

    (only_id(copy / "results/tiny_random/news_sample/detect") / "summary.json").unlink()
    proc = snakemake("-n", "--config", f"sweep={copy / 'sweep.yaml'}", cwd=copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert job_counts(proc.stdout).get("detect") == 1, proc.stdout[-3000:]
