"""What the tests share: running a rule or Snakemake as a user does, reading what a run wrote,
asserting the one-line error, and setting up a detected run. Test modules import these from here
(never from one another); fixtures live in conftest.py."""

import contextlib
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run_module(
    module: str, *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<module> args...` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
        timeout=600,
    )


def only_id(folder: Path) -> Path:
    """The one config-id folder (pipeline/stages.py) inside `folder`: where a test's single run wrote."""
    found = [d for d in folder.iterdir() if re.fullmatch(r"[0-9a-f]{8}", d.name)]
    assert len(found) == 1, found
    return found[0]


def keyed(work: Path, sweep: str | Path, rule: str, model: str, corpus: str, layers: str | None = None) -> Path:
    """The keyed folder (results/<model>/<corpus>/<stage>/<config id>) of one job of `sweep` run in `work`."""
    from pipeline import jobs
    from pipeline import sweep as sweeps

    with contextlib.chdir(work):  # a config named by path is relative to the working directory
        plan = jobs.Plan(sweeps.load(str(sweep)), str(sweep))
        plan.ids(root=work)
        return work / plan.dir(rule, model, corpus, layers)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2 and exactly one `error:` line on stderr, naming what it should."""
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def detected_run(cfg, n_seq: int, seq_len: int) -> None:
    """Fetch the config's (local) model, write n_seq random token sequences and a small corpus
    whose perplexity chunks each start with token 0 (the byte tokenizer reads "<s>" as id 0), then
    run the capture and detect rules: the inputs of the rules that read a detection."""
    import pandas as pd

    from pipeline import capture, detect, fetch_model
    from pipeline.io import corpus_file, tokens_file, write_table

    import tiny

    fetch_model.run(cfg)
    write_table(
        pd.DataFrame({"seq_id": range(n_seq), "input_ids": tiny.sequences(n_seq, seq_len).tolist()}),
        tokens_file(cfg),
        cfg,
    )
    docs = ["<s>" + "".join(chr(97 + (i * 7 + j * 3) % 26) for j in range(seq_len - 3)) for i in range(6)]
    write_table(pd.DataFrame({"text": docs}), corpus_file(cfg), cfg)
    capture.run(cfg)
    detect.run(cfg)


def snakemake_command(profile: str = "default") -> list[str]:
    """`python -m snakemake` on this repository's Snakefile with its workflow profile profiles/<profile>."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--workflow-profile",
        str(REPO / "profiles" / profile),
    ]


SNAKEMAKE = snakemake_command()


def snakemake(*args, cwd, timeout=900, env=None):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(cwd), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def dry_run_error(sweep: str | Path, cwd: Path) -> str:
    """The one `error:` line `snakemake -n --config sweep=<sweep>` prints, computed in this process by the
    calls the Snakefile makes while it builds the DAG (rules/common.smk: load the sweep, plan its jobs,
    their config ids, then compose every job's config), without a Snakemake start (~6 s each).
    tests/rules/test_dag.py::test_the_dry_runs_error_line_is_the_in_process_one holds it to Snakemake's."""
    from massive.core.errors import MassiveError
    from pipeline import jobs
    from pipeline import sweep as sweeps

    name = str(sweep)
    try:
        with contextlib.chdir(cwd):  # Snakemake runs in its --directory: paths in the configs are relative
            plan = jobs.Plan(sweeps.load(name), name)
            plan.ids(cache=None)
            sweeps.check_configs(name, plan.described())
    except MassiveError as exc:
        return f"error: {exc}"
    raise AssertionError(f"sweep {name} passed every check of the dry run")


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def write_sweep(tmp_path, **sweep) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and ".hydra" not in p.parts)


def tree(path):
    """Every file (with a digest of its bytes) and every folder under `path`."""
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(path.rglob("*"))
    }


# a planted massive activation in a tiny model (tests/tiny.py), saved and fetched as a local model
LAYER, DIM = 1, 7
OVERFLOW = 3e4  # a planted gain whose activation passes float16's 65,504 in every family


def prepare(tmp_path, compose_in, family: str, planted: bool, n_seq: int = 4, seq_len: int = 32, gain: float = 200.0):
    import pandas as pd

    from pipeline import fetch_model
    from pipeline.io import tokens_file, write_table

    import tiny

    model = tiny.build(family)
    if planted:
        tiny.plant(model, layer=LAYER, dim=DIM, gain=gain)
    path = tiny.save(model, tmp_path / f"hf_{family}")
    cfg = compose_in(
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        f"model.name=tiny_{family}",
        f"model.seq_len={seq_len}",
        "capture.top_k=16",
        "capture.batch_size=2",
    )
    fetch_model.run(cfg)
    ids = tiny.sequences(n_seq, seq_len)
    write_table(pd.DataFrame({"seq_id": range(n_seq), "input_ids": ids.tolist()}), tokens_file(cfg), cfg)
    return cfg, model, ids


# The tiny sweep of the whole-DAG tests (tests/rules/test_dag.py, tests/e2e/test_browser.py, tests/e2e/test_golden.py):
# every LLM rule (ablation, attention, origins, inference) on two corpora, and the ViT smoke run. It holds
# the golden sweep (tests/golden.py SWEEP: its tables are the golden test's), hence the ablation at "all".
# The second corpus is a YAML of the run's own, named by path as a user's (tiny_corpus): the news sample's
# longer articles. It was wiki_sample, whose 3.4 million characters each of its ten jobs tokenised again
# (88 s of CPU of the run's ~190 s); the MediaWiki parsing has its own test (tests/rules/test_hub_data.py).
TINY_CORPUS = "scratch/news_long.yaml"
TINY_SWEEP = dict(
    models=["tiny_random"],
    corpora=["news_sample", TINY_CORPUS],
    overrides=["tokenize.num_sequences=4", "capture.top_k=8", "ablate.max_chunks=4"],
    ablate={"interventions": ["none", "zero", "mean", "random_zero"], "layers": ["emerge", "all"]},
    attention={"num_sequences": 4},
    origins={"num_sequences": 2, "max_chunks": 2},
    inference={"max_chunks": 2, "windows": [8], "sinks": [1], "schemes": ["a8_per_tensor", "w4_per_channel"]},
    vision={"models": ["vit_random"], "images": ["photos"], "overrides": ["ablate.max_images=6"]},
)


def tiny_corpus(work: Path) -> Path:
    """TINY_CORPUS in `work`: conf/data/news_sample.yaml's articles of at least 500 characters, as news_long."""
    data = yaml.safe_load((REPO / "conf" / "data" / "news_sample.yaml").read_text())
    path = work / TINY_CORPUS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**data, "name": "news_long", "min_chars": 500}))
    return path


def assert_one_error_line(proc) -> str:
    """The DAG was not built: exit code 2, one `error:` line, no traceback, no job."""
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Job stats" not in proc.stdout, proc.stdout[-2000:]
    return errors[0]


# ---------------------------------------------------------------- the SLURM profile (tests/e2e/test_slurm.py, test_families.py)
SLURM_PROFILE = REPO / "profiles/slurm"
SITE_VARS = ["MA_SLURM_ACCOUNT", "MA_SLURM_CPU_PARTITION", "MA_SLURM_GPU_PARTITION", "MA_SLURM_GPU_TYPE"]


def clean_env(**extra) -> dict:
    """The environment without the site's SLURM variables, W&B off, `extra` added."""
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARS and k != "SLURM_CONF"}
    return {**env, "WANDB_MODE": "disabled", **extra}


def slurm_snakemake(*args, cwd, env=None, timeout=300):
    """Snakemake with the SLURM profile (account lab42 unless `env` says otherwise)."""
    cmd = [*snakemake_command(SLURM_PROFILE.name), "--directory", str(cwd), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env or clean_env(MA_SLURM_ACCOUNT="lab42")
    )


def paper_env(tmp_path, **extra) -> dict:
    """A site (account lab42) and the hub's config.json of every model, offline (tests/hub.py)."""
    from hub import hub_env, model_cache

    return clean_env(MA_SLURM_ACCOUNT="lab42", **hub_env(model_cache(tmp_path / "hf")), **extra)


def planned_jobs(stdout: str) -> list[dict]:
    """The jobs of a dry run (rule, wildcards, resources): scripts/estimate.py's reading."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    from estimate import planned_jobs as read

    return read(stdout)
