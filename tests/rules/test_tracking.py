"""W&B runs: offline by default, one per stage, grouped by sweep and typed by stage."""

from pipeline import tracking


def test_offline_run_is_written_with_group_and_job_type(tmp_path, compose_in):
    cfg = compose_in("wandb.mode=offline", "stage=detect", "sweep_name=mysweep")
    with tracking.stage_run(cfg) as run:
        run.log({"top1_over_median": 1234.5})
        assert run.group == "mysweep" and run.job_type == "detect"
        assert {"git_commit", "packages", "model", "detect"} <= set(run.config.keys())
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))  # the offline run's record, for `wandb sync`


def test_default_mode_is_offline_unless_wandb_mode_says(monkeypatch):
    from pipeline import tracking
    from pipeline.cli import compose

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.mode(compose([])) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert tracking.mode(compose([])) == "online"  # #24: the environment is respected
    assert tracking.mode(compose(["wandb.mode=disabled"])) == "disabled"  # an explicit wandb.mode wins


def test_a_disabled_run_never_imports_wandb(tmp_path):
    """wandb.mode=disabled: the run's calls are no-ops and W&B is never imported (its import is ~0.4 s of
    every job's start); the rule's tables are written all the same."""
    import subprocess
    import sys

    code = (
        "import sys, pandas as pd\n"
        "from pipeline import tracking\n"
        "from pipeline.cli import compose\n"
        f"cfg = compose(['paths.root={tmp_path}', 'wandb.mode=disabled', 'stage=detect'])\n"
        "with tracking.stage_run(cfg) as run:\n"
        "    run.log({'t': tracking.table(pd.DataFrame({'a': [1]})), 'x': 1.0})\n"
        "    run.summary.update({'x': 1.0})\n"
        "    assert tracking.table(pd.DataFrame({'a': [1]})) is None\n"
        "assert 'wandb' not in sys.modules, 'wandb was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "wandb").exists()
