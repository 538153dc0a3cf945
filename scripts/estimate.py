"""What a sweep will cost on the cluster, before it is submitted: per rule the jobs, the GPU jobs and the
GPU-hours they request, in total, and the download of each model.

    python scripts/estimate.py                       # the paper sweep, every job (as from a clean start)
    python scripts/estimate.py --sweep my.yaml       # another sweep
    python scripts/estimate.py --remaining           # only the jobs still to run in this working directory

It runs `snakemake -n` with the SLURM profile (profiles/slurm) and reads back the resources Snakemake would
submit, so the numbers are the profile's own sizing (pipeline/sizing.py), not a second estimate. GPU-hours
are requested time limits (GPUs x runtime), an upper bound of what the jobs use. The SLURM account does
not change the sizes: when MA_SLURM_ACCOUNT is unset the plan is made without one. Downloads: the
weights as stored on the hub (its safetensors index, else the parameter count x the stored dtype).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def planned_jobs(stdout: str) -> list[dict]:
    """The jobs of a dry run: rule, wildcards and resources of each."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", stdout):
        head = re.match(r"(local)?rule (\w+):\n", block)
        if not head:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        split = lambda s: dict(kv.split("=", 1) for kv in s.split(", ")) if s else {}  # noqa: E731
        jobs.append(
            {
                "rule": head.group(2),
                "local": bool(head.group(1)),
                "wildcards": split(fields.get("wildcards", "")),
                "resources": split(fields.get("resources", "")),
            }
        )
    return jobs


def gpus_of(resources: dict) -> int:
    """GPUs a job requests: gres gpu[:type]:N, or gpu=N."""
    gres = resources.get("gres", "")
    if gres.startswith("gpu"):
        return int(gres.rsplit(":", 1)[-1]) if re.search(r":\d+$", gres) else 1
    return int(resources.get("gpu", 0) or 0)


def summarize(jobs: list[dict]) -> dict[str, dict]:
    """Per rule: jobs, GPU jobs, GPU-hours and CPU-job hours requested."""
    rows: dict[str, dict] = defaultdict(
        lambda: {"jobs": 0, "gpu_jobs": 0, "gpu_hours": 0.0, "cpu_hours": 0.0, "local": 0}
    )
    for job in jobs:
        if job["rule"] == "all":
            continue
        row, res = rows[job["rule"]], job["resources"]
        row["jobs"] += 1
        hours = int(res.get("runtime", 0) or 0) / 60
        if job["local"]:
            row["local"] += 1
        elif gpus := gpus_of(res):
            row["gpu_jobs"] += 1
            row["gpu_hours"] += gpus * hours
        else:
            row["cpu_hours"] += hours
    return dict(rows)


def downloads(sweep_name: str) -> dict[str, tuple[float, str]]:
    """Per model of the sweep: (GB of weights downloaded, where the size comes from)."""
    sys.path.insert(0, str(REPO))
    from massive.core.errors import MassiveError
    from pipeline import paths, sizing
    from pipeline import sweep as sweeps
    from pipeline.cli import compose

    sweep = sweeps.load(sweep_name)
    out = {}
    for model in dict.fromkeys(
        paths.fetch_name(m) for m, _ in sweeps.pairs(sweep)
    ):  # a revision: a download of its own
        try:
            w = sizing.weights(compose([*sweeps.run_args(model), *sweeps.overrides(sweep, model)]).model)
            out[model] = (w.download_bytes / 1e9, w.source)
        except MassiveError as exc:
            out[model] = (float("nan"), str(exc))
    return out


def table(rows: dict[str, dict], models: dict[str, tuple[float, str]]) -> str:
    lines = [f"{'rule':<16}{'jobs':>6}{'GPU jobs':>10}{'GPU-hours':>11}{'CPU-hours':>11}"]
    for rule, r in sorted(rows.items(), key=lambda kv: (-kv[1]["gpu_hours"], kv[0])):
        note = "  (runs where snakemake runs)" if r["local"] == r["jobs"] else ""
        lines.append(
            f"{rule:<16}{r['jobs']:>6}{r['gpu_jobs']:>10}{r['gpu_hours']:>11,.0f}{r['cpu_hours']:>11,.0f}{note}"
        )
    total = {k: sum(r[k] for r in rows.values()) for k in ("jobs", "gpu_jobs", "gpu_hours", "cpu_hours")}
    lines.append(
        f"{'total':<16}{total['jobs']:>6}{total['gpu_jobs']:>10}{total['gpu_hours']:>11,.0f}{total['cpu_hours']:>11,.0f}"
    )
    if models:
        w = max(16, *(len(m) + 2 for m in models))  # a revision run's name is long: pythia_1_4b@step143000
        lines += ["", f"{'model':<{w}}{'download GB':>12}  size from"]
        for model, (gb, source) in models.items():
            lines.append(f"{model:<{w}}{gb:>12,.1f}  {source}")
        lines.append(f"{'total':<{w}}{sum(gb for gb, _ in models.values()):>12,.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="paper", help="a sweep name (conf/sweep) or a sweep YAML")
    parser.add_argument("--directory", default=None, help="the working directory (default: a fresh one: every job)")
    parser.add_argument(
        "--remaining", action="store_true", help="only the jobs still to run in --directory (default .)"
    )
    parser.add_argument("--save-plan", default=None, help="also write snakemake's dry run to this file")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("MA_SLURM_ACCOUNT", "")  # no account: the sizes do not depend on it
    with tempfile.TemporaryDirectory() as fresh:
        directory = args.directory or ("." if args.remaining else fresh)
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--workflow-profile",
            str(REPO / "profiles/slurm"),
            "--directory",
            str(directory),
            "-n",
            "--config",
            f"sweep={args.sweep}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if args.save_plan:
        Path(args.save_plan).write_text(proc.stdout)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        print(errors[0] if errors else f"error: snakemake -n failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return proc.returncode if errors else 1
    jobs = planned_jobs(proc.stdout)
    print(
        f"sweep {args.sweep}: {'remaining jobs in ' + str(directory) if args.remaining else 'every job'} "
        f"(snakemake -n, profiles/slurm; GPU-hours = GPUs x time limit)"
    )
    print(table(summarize(jobs), downloads(args.sweep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
