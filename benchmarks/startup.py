"""Start-up: what a process pays before it does anything, side by side with importing torch.

Times, as medians of 5 runs each (the commands interleaved within each round), in fresh
processes with this interpreter:
  import torch            python -c "import torch" (the reference: what the config no longer pays)
  import pipeline.config  python -c "import pipeline.config"
  rule, config error      python -m pipeline.capture capture.top_kk=1 (exits 2 with one line)
  snakemake -n, a typo    a sweep with capture.top_kk=5 (tests/rules/test_dag.py's typo case; exits 2)
  snakemake -n, default   the default sweep's dry run, in an empty working directory (.snakemake removed)
and whether each imported torch or transformers (`python -X importtime`).

  python benchmarks/startup.py                 # this checkout
  python benchmarks/startup.py --repo OTHER    # another checkout (e.g. an older commit), same interpreter
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commands(repo: Path, work: Path) -> dict[str, list[str]]:
    sweep = work / "typo.yaml"
    sweep.write_text("models: [tiny_random]\ncorpora: [news_sample]\noverrides: [capture.top_kk=5]\n")
    snake = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
    snake += ["--workflow-profile", str(repo / "profiles/default"), "--directory", str(work), "-n"]
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "import pipeline.config": [sys.executable, "-c", "import pipeline.config"],
        "rule, config error": [sys.executable, "-m", "pipeline.capture", "capture.top_kk=1"],
        "snakemake -n, a typo": [*snake, "--config", f"sweep={sweep}"],
        "snakemake -n, default": snake,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to time (default: this one)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    repo = args.repo.resolve()
    env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    try:
        cmds = commands(repo, work)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        codes: dict[str, set[int]] = {name: set() for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                shutil.rmtree(work / ".snakemake", ignore_errors=True)
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True)
                times[name].append(time.perf_counter() - start)
                codes[name].add(proc.returncode)
        print(f"{repo} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}); median of {args.runs}, seconds")
        print("| command | median s | runs s | exit | imports torch / transformers |")
        print("|---|---|---|---|---|")
        for name, cmd in cmds.items():
            shutil.rmtree(work / ".snakemake", ignore_errors=True)
            trace = subprocess.run(
                [cmd[0], "-X", "importtime", *cmd[1:]], cwd=work, env=env, capture_output=True, text=True
            )
            heavy = sorted(
                {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$", trace.stderr, re.M)}
                & {"torch", "transformers"}
            )
            runs = " ".join(f"{t:.2f}" for t in times[name])
            print(
                f"| {name} | {statistics.median(times[name]):.2f} | {runs} | {','.join(map(str, sorted(codes[name])))} "
                f"| {', '.join(heavy) or 'neither'} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
