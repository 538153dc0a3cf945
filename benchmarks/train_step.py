"""How fast is one training step of the CPU test bed, next to the reference implementation?

Times, side by side in one run and alternating (A B A B ...) on one thread each:
  library   massive.retrain.training.train_step on the bed of conf/train/cpu_backcopy.yaml (what rule
            train runs between evaluations)
  loop      massive.retrain.training.train with the bed's evaluations (every eval_interval steps:
            losses on 2 x eval_iters batches and the emergence metrics on the probe batch),
            per step
  reference the standalone reference script (shared/reference/bigram_backcopy_reference.py,
            not part of the project; --reference PATH), same shape, run as a subprocess; its
            own evaluations (6 per run) are included in its time
and prints ms per step and the ratios to the reference. With --profile it also prints the
torch.profiler table of the library step's most expensive operators.

    python benchmarks/train_step.py --steps 300 --rounds 2
    python benchmarks/train_step.py --profile --steps 50 --rounds 1
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "bigram_backcopy_reference.py"


def bed():
    """The bed as rule train builds it: conf/train/cpu_backcopy.yaml composed, then pipeline.train's
    own specs() and make_data() (no second reading of the YAML)."""
    from pipeline import train
    from pipeline.cli import compose

    cfg = compose(["train=cpu_backcopy", "wandb.mode=disabled"], config_name="train")
    gpt, spec = train.specs(cfg)
    return gpt, spec, train.make_data(cfg), cfg.train.probe_batch_size


def time_library(steps: int, with_evals: bool) -> float:
    from massive.retrain import training

    gpt, spec, data, probe_n = bed()
    spec.max_iters = steps
    model, optimizer = training.build(gpt, spec, seed=1)
    if with_evals:
        probe, _ = data.batch("probe", 0, probe_n, gpt.block_size)
        spec.checkpoint_interval = 10**9
        started = time.perf_counter()
        training.train(model, optimizer, data, spec, probe)
        return (time.perf_counter() - started) / steps
    training.train_step(model, optimizer, data, 0, spec)  # warm up
    started = time.perf_counter()
    for step in range(1, steps + 1):
        training.train_step(model, optimizer, data, step, spec)
    return (time.perf_counter() - started) / steps


def time_reference(path: Path, steps: int) -> float:
    steps = max(6, steps - steps % 6)
    out = subprocess.run(
        [sys.executable, str(path), "default", str(steps), "2", "128", "4", "0.1", "1e-2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    last = [ln for ln in out.splitlines() if ln.startswith("default it")][-1]
    return int(re.match(r"default it\d+ (\d+)s", last).group(1)) / steps  # whole seconds: use >= 300 steps


def profile(steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from massive.retrain import training

    gpt, spec, data, _ = bed()
    model, optimizer = training.build(gpt, spec, seed=1)
    training.train_step(model, optimizer, data, 0, spec)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(1, steps + 1):
            training.train_step(model, optimizer, data, step, spec)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.profile:
        profile(a.steps)
    times: dict[str, list[float]] = {"library": [], "loop": [], "reference": []}
    for r in range(a.rounds):
        times["library"].append(time_library(a.steps, with_evals=False))
        times["loop"].append(time_library(a.steps, with_evals=True))
        if a.reference.exists():
            times["reference"].append(time_reference(a.reference, a.steps))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {1000 * v[-1]:.0f} ms/step" for k, v in times.items() if v), flush=True
        )
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(
        f"median over {a.rounds} rounds of {a.steps} steps, one thread: "
        + ", ".join(f"{k} {1000 * v:.0f} ms/step" for k, v in med.items())
    )
    if "reference" in med:
        print(
            f"ratio to the reference: library {med['library'] / med['reference']:.2f}x, "
            f"loop with evaluations {med['loop'] / med['reference']:.2f}x"
        )
    else:
        print(f"(no reference script at {a.reference}: ratios not measured)")


if __name__ == "__main__":
    main()
