"""Where massive.capture's time goes on the CPU, measured side by side in one run.

For the same sequences (default: SmolLM2-135M, 16 x 256 tokens of the default corpus, batch 4) it
times, interleaved over `--rounds` rounds (the order reversed every other round):
  plain (last logits)  model(ids, logits_to_keep=1): the forward pass the capture makes
  hooks only           massive.capture with each row's reduction (massive.kernels.block._row)
                       replaced by a constant: the hooks, |a| into the reused buffer, the per-dim
                       maxima, the host copies per batch and the tables
  massive.capture      the whole capture
and prints each against the first, then the top lines of a cProfile of one more capture, by own
time: the forward's operators, then the reduction's numpy calls.

  python benchmarks/capture_profile.py                       # needs cache/models/smollm2_135m/hf
  python benchmarks/capture_profile.py --shape 2x2048 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch

import massive
from massive.kernels import block


def constant_row(x, mx, k, d, thr):
    """What block._row returns, without looking at the row: the floor of the capture's cost."""
    return np.arange(k), np.float32(1.0), np.zeros((len(thr.outlier) + len(thr.massive), d), np.int64)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cache/models/smollm2_135m/hf")
    parser.add_argument("--texts", default="cache/corpora/wiki_sample.parquet")
    parser.add_argument("--shape", default="16x256", help="sequences x tokens")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--top", type=int, default=14, help="profile lines printed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, seq_len = (int(v) for v in args.shape.split("x"))
    model, tok = massive.load(args.model)
    docs = pd.read_parquet(args.texts, columns=["text"])["text"].tolist()
    ids = massive.sequences(tok, docs, seq_len=seq_len, n=n, seed=args.seed)
    bs = min(args.batch_size, n)
    real = block._row

    def plain():
        with torch.inference_mode():
            for i in range(0, n, bs):
                model(ids[i : i + bs], use_cache=False, logits_to_keep=1)

    def capture(row):
        def run():
            block._row = row
            try:
                massive.capture(model, ids, k=args.k, batch_size=bs, tok=tok)
            finally:
                block._row = real

        return run

    modes = {"plain (last logits)": plain, "hooks only": capture(constant_row), "massive.capture": capture(real)}
    for run in modes.values():  # warm-up
        run()
    times = {name: [] for name in modes}
    for r in range(args.rounds):
        for name in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            t0 = time.perf_counter()
            modes[name]()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain (last logits)"])
    print(
        f"model {args.model}, {n} x {seq_len} tokens, batch {bs}, top_k {args.k}, {torch.get_num_threads()} threads, "
        f"median of {args.rounds} rounds"
    )
    for name, values in times.items():
        t = statistics.median(values)
        rounds = " ".join(f"{v / b:.3f}" for v, b in zip(values, times["plain (last logits)"]))
        print(f"{name:<20} {t:7.3f} s  {t / base:6.3f}x  (rounds {rounds})")
    profile = cProfile.Profile()
    profile.enable()
    modes["massive.capture"]()
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    print(f"\ncProfile of one capture, top {args.top} by own time:")
    print("\n".join(line for line in lines[start:] if line.strip()))


if __name__ == "__main__":
    main(sys.argv[1:])
