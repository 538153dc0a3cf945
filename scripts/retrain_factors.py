"""The one-factor study of docs/retraining.md: which differences of the CPU test bed remove the
start token's massive activation?

Trains the project's GPT (massive.retrain.gpt) on Bigram-Backcopy (massive.retrain.backcopy) through the library's
own loop (massive.retrain.training.train), changing one factor at a time from a base setup, on several
seeds, and measures the trained model on a fixed probe batch of 256 sequences: after block 0 (and
the layer where it is largest) the start token's largest |a| over the median |a|, the share of
sequences whose top-1 entry is at the start token, the attention block 0 pays to the start token
(and to the bias slot), the start token's value-state norm over the median token's, and the
validation loss.

    python scripts/retrain_factors.py --steps 1000 --seeds 1 2 --jobs 2 --out results/train/factors.parquet  # ~50 min
    python scripts/retrain_factors.py --steps 1000 --seeds 1 --evals 10 --only sgd_lr0.1,sgd_lr0.3,sgd_lr1
    python scripts/retrain_factors.py --only base,init_pytorch --steps 200 --seeds 1   # a quick look

Each run is one process on one thread. The table is printed as Markdown (for docs/retraining.md)
and written as Parquet with one row per (factor, seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the base: the project's bed before issue 18 (GPT-2 init, tied head, decay on matrices, start id 0
# inside the vocabulary followed by its own bigram row, clip 1.0, biases)
BASE = {
    "init": "gpt2",
    "tie_head": True,
    "bias": True,
    "decay": "matrices",
    "grad_clip": 1.0,
    "start": "inside",
    "after_start": "bigram",
    "variant": "default",
    "optimizer": "adamw",
    "lr": 1e-2,
    "task_seed": 0,
    "loss_on_first": True,
    "head_bias": False,
}
REFERENCE = {"init": "pytorch", "tie_head": False, "start": "outside", "after_start": "uniform"}
FACTORS = {  # name: (what changes from BASE, description)
    "base": (
        {},
        "the bed before issue 18 (GPT-2 init, tied head, decay on matrices, start id 0 followed by its own bigram row)",
    ),
    "decay_all": ({"decay": "all"}, "weight decay on every parameter (norms, biases too)"),
    "decay_none": ({"decay": "none"}, "no weight decay"),
    "start_outside": ({"start": "outside"}, "start token an extra id outside the vocabulary"),
    "after_uniform": ({"after_start": "uniform"}, "position 1 uniform over the non-triggers (the new bed)"),
    "no_clip": ({"grad_clip": 0.0}, "no gradient clipping"),
    "no_bias": ({"bias": False}, "no biases in Linears and LayerNorms"),
    "untied": ({"tie_head": False}, "output head not tied to the embedding"),
    "init_pytorch": ({"init": "pytorch"}, "PyTorch's default initialisation"),
    "init_pytorch_untied": ({"init": "pytorch", "tie_head": False}, "PyTorch init + untied head"),
    "data_reference": (
        {"start": "outside", "after_start": "uniform"},
        "the reference's data (start outside, uniform after it)",
    ),
    "bed": (REFERENCE, "the reference's data + PyTorch init + untied head (decay on matrices)"),
    "bed_decay_all": ({**REFERENCE, "decay": "all"}, "that + decay on every parameter"),
    "bed_attn_bias": ({**REFERENCE, "variant": "attn_bias"}, "the same as bed, attn_bias"),
    "after_uniform_attn_bias": ({"after_start": "uniform", "variant": "attn_bias"}, "position 1 uniform, attn_bias"),
    "task1": (
        {"after_start": "uniform", "task_seed": 1},
        "position 1 uniform, another task (bigram table, triggers): task_seed 1",
    ),
    "task1_attn_bias": ({"after_start": "uniform", "task_seed": 1, "variant": "attn_bias"}, "the same, attn_bias"),
    "task2": ({"after_start": "uniform", "task_seed": 2}, "position 1 uniform, task_seed 2"),
    "task2_attn_bias": ({"after_start": "uniform", "task_seed": 2, "variant": "attn_bias"}, "the same, attn_bias"),
    "no_first_loss": (
        {"after_start": "uniform", "loss_on_first": False},
        "position 1 uniform, its prediction from the start token not trained",
    ),
    "no_first_loss_attn_bias": (
        {"after_start": "uniform", "loss_on_first": False, "variant": "attn_bias"},
        "the same, attn_bias",
    ),
    "reference_model": (
        {**REFERENCE, "decay": "all", "head_bias": True},
        "the reference's model: bed + decay on every parameter + a head bias",
    ),
    "reference_model_attn_bias": (
        {**REFERENCE, "decay": "all", "head_bias": True, "variant": "attn_bias"},
        "the same, attn_bias",
    ),
    "sgd_lr0.1": (
        {"after_start": "uniform", "optimizer": "sgd", "lr": 0.1},
        "position 1 uniform, SGD momentum 0.9, lr 0.1 (seed 1)",
    ),
    "sgd_lr0.3": ({"after_start": "uniform", "optimizer": "sgd", "lr": 0.3}, "the same, lr 0.3 (seed 1)"),
    "sgd_lr1": ({"after_start": "uniform", "optimizer": "sgd", "lr": 1.0}, "the same, lr 1.0 (seed 1)"),
}
DEFAULT_SET = [
    "base",
    "decay_all",
    "no_clip",
    "no_bias",
    "untied",
    "init_pytorch",
    "init_pytorch_untied",
    "start_outside",
    "after_uniform",
    "data_reference",
    "bed",
    "reference_model",
    "after_uniform_attn_bias",
    "bed_attn_bias",
    "reference_model_attn_bias",
    "no_first_loss",
    "no_first_loss_attn_bias",
]  # docs/retraining.md's table


def run_one(name: str, seed: int, steps: int, probe_n: int, evals: int = 1) -> dict:
    import torch

    from massive.retrain import training
    from massive.retrain.backcopy import BackcopySpec
    from massive.retrain.gpt import GPTConfig

    torch.set_num_threads(1)
    f = {**BASE, **FACTORS[name][0]}
    task = BackcopySpec(
        vocab_size=64,
        n_triggers=3,
        alpha=0.2,
        task_seed=f["task_seed"],
        start=f["start"],
        after_start=f["after_start"],
        loss_on_first=f["loss_on_first"],
    )
    gpt = GPTConfig(
        vocab_size=task.n_ids,
        block_size=64,
        n_layer=2,
        n_head=4,
        n_embd=128,
        bias=f["bias"],
        init=f["init"],
        tie_head=f["tie_head"],
        head_bias=f["head_bias"],
        variant=f["variant"],
    )
    spec = training.TrainSpec(
        batch_size=64,
        block_size=64,
        max_iters=steps,
        lr=f["lr"],
        schedule="constant",
        warmup_iters=100,
        weight_decay=0.1,
        decay=f["decay"],
        optimizer=f["optimizer"],
        grad_clip=f["grad_clip"],
        eval_interval=max(1, steps // evals),
        eval_iters=10,
        checkpoint_interval=steps,
    )
    model, optimizer = training.build(gpt, spec, seed)
    data = training.BackcopyBatches(task, seed)
    probe, _ = data.batch("probe", 0, probe_n, 64)
    started = time.time()
    state = training.train(model, optimizer, data, spec, probe)
    seconds = time.time() - started
    rows = [r for r in state["rows"] if r["step"] == steps]
    b0 = rows[0]
    peak = max(rows, key=lambda r: r["start_over_median"])
    return {
        "factor": name,
        "seed": seed,
        "steps": steps,
        "change": json.dumps(FACTORS[name][0], sort_keys=True),
        "val_loss": b0["val_loss"],
        "block0_start_abs": b0["start_abs"],
        "block0_start_over_median": b0["start_over_median"],
        "block0_top1_at_start": b0["top1_at_start"],
        "block0_start_attn": b0["first_attn"],
        "block0_slot_attn": b0["slot_attn"],
        "block0_start_value_ratio": b0["start_value_ratio"],
        "block0_start_norm_ratio": b0["start_norm_ratio"],
        "peak_layer": peak["layer"],
        "peak_start_over_median": peak["start_over_median"],
        "peak_top1_at_start": peak["top1_at_start"],
        "s_per_step": seconds / steps,
        "history": json.dumps(
            [
                {
                    k: r[k]
                    for k in (
                        "step",
                        "val_loss",
                        "start_over_median",
                        "top1_at_start",
                        "first_attn",
                        "slot_attn",
                        "start_value_ratio",
                    )
                }
                for r in state["rows"]
                if r["layer"] == 0
            ]
        ),
    }


def markdown(df) -> str:
    cols = [
        "val_loss",
        "block0_start_abs",
        "block0_start_over_median",
        "block0_top1_at_start",
        "block0_start_attn",
        "block0_slot_attn",
        "block0_start_value_ratio",
        "peak_start_over_median",
    ]
    g = df.groupby("factor", sort=False)
    lines = [
        "| factor | what changes | val loss | block-0 start \\|a\\| | x median | top-1 at start | block-0 attention on start | on slot | start value norm / median | largest start x median (layer) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, part in g:
        cells = []
        for c in cols:
            vals = part[c].tolist()
            fmt = (
                "{:.4f}"
                if c == "val_loss"
                else "{:.2f}"
                if c in ("block0_top1_at_start", "block0_start_attn", "block0_slot_attn", "block0_start_value_ratio")
                else "{:.1f}"
            )
            cells.append(" / ".join(fmt.format(v) for v in vals))
        layers = "/".join(str(int(v)) for v in part["peak_layer"])
        lines.append(f"| {name} | {FACTORS[name][1]} | " + " | ".join(cells[:-1]) + f" | {cells[-1]} ({layers}) |")
    return "\n".join(lines)


def main() -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--probe", type=int, default=256, help="probe sequences")
    p.add_argument("--evals", type=int, default=1, help="evaluations during a run (the history column), besides step 0")
    p.add_argument("--only", default=",".join(DEFAULT_SET), help="comma-separated factor names: " + ", ".join(FACTORS))
    p.add_argument("--out", default="results/train/factors.parquet")
    a = p.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    for n in names:
        if n not in FACTORS:
            p.error(f"unknown factor {n!r} (one of {', '.join(FACTORS)})")
    jobs = [(n, s) for n in names for s in a.seeds]
    with ProcessPoolExecutor(a.jobs) as pool:
        futures = [pool.submit(run_one, n, s, a.steps, a.probe, a.evals) for n, s in jobs]
        rows = []
        for (n, s), fut in zip(jobs, futures):
            rows.append(fut.result())
            r = rows[-1]
            print(
                f"{n} seed {s}: val {r['val_loss']:.4f}, block-0 start {r['block0_start_abs']:.1f} "
                f"({r['block0_start_over_median']:.1f}x), top-1 {r['block0_top1_at_start']:.2f}, "
                f"attn {r['block0_start_attn']:.2f}, slot {r['block0_slot_attn']:.2f}, {r['s_per_step']:.3f} s/step",
                flush=True,
            )
    df = pd.DataFrame(rows)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    print(markdown(df))


if __name__ == "__main__":
    main()
