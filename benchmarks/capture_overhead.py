"""Capture overhead against a plain forward pass, side by side in one process.

For the same sequences (default: 16 x 256 tokens of the default corpus, batch 4) it times and
measures the peak memory of:
  plain          model(ids), nothing captured
  capture        model(ids) with the pipeline's block hooks computing every statistic
  hidden_states  model(ids, output_hidden_states=True), then the same statistics from the
                 kept hidden states (the approach the capture avoids)
Times are medians over 5 rounds, the modes interleaved within each round. Memory is the peak
resident set size during the pass above the resident size before it (Linux VmHWM, reset
through /proc/self/clear_refs): the pass's own working memory. So that resident size follows
live memory, the script re-runs itself with glibc returning every block of 64 KiB or more to
the system at once (MALLOC_MMAP_THRESHOLD_); otherwise heap reuse makes the peaks of identical
passes differ by 2x. The process's whole peak (weights included) is printed too. On a CUDA
device the script reports torch.cuda.max_memory_allocated instead.

  python benchmarks/capture_overhead.py                 # SmolLM2-135M (fetch it first: snakemake)
  python benchmarks/capture_overhead.py model=tiny_random tokenize.num_sequences=4
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

from massive.core import hooks
from massive.measure.capture import Reducer
from pipeline.cli import compose
from pipeline.io import read_table, tokens_file
from pipeline.model import load_model


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str]) -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    cfg = compose(argv)
    torch.manual_seed(cfg.seed)
    tokens = read_table(tokens_file(cfg))
    ids = torch.tensor([list(x) for x in tokens["input_ids"]], dtype=torch.long)
    model = load_model(cfg, torch.device("cpu"))
    bs = cfg.capture.batch_size
    batches = [ids[i : i + bs] for i in range(0, len(ids), bs)]
    k = cfg.capture.top_k

    def plain():
        for b in batches:
            model(b, use_cache=False)

    def hooked():
        stats = Reducer(k, cfg.capture.backend)
        with hooks.hooked(model, stats.hooks(model)):
            for i, b in enumerate(batches):
                stats.batch(range(i * bs, i * bs + len(b)), b)
                model(b, use_cache=False)
                stats.flush()  # the batch's statistics to the host, as massive.capture does

    def hidden_states():
        stats = Reducer(k, cfg.capture.backend)
        for i, b in enumerate(batches):
            stats.batch(range(i * bs, i * bs + len(b)), b)
            out = model(b, use_cache=False, output_hidden_states=True)
            for layer, h in enumerate(out.hidden_states[1:-1]):
                stats(h, hooks.resid_post(layer))
            stats.flush()

    modes = {"plain": plain, "capture": hooked, "hidden_states": hidden_states}
    times = {m: [] for m in modes}
    peaks = {m: 0 for m in modes}
    whole = {m: 0 for m in modes}
    repeats = 5
    with torch.inference_mode():
        plain()  # warm-up
        for _ in range(repeats):
            for name, fn in modes.items():
                before = status_kb("VmRSS")
                reset_peak()
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                peaks[name] = max(peaks[name], status_kb("VmHWM") - before)
                whole[name] = max(whole[name], status_kb("VmHWM"))
    base_t, base_m = statistics.median(times["plain"]), peaks["plain"]
    print(
        f"model {cfg.model.name}, {len(ids)} sequences x {ids.shape[1]} tokens, batch {bs}, top_k {k}, "
        f"{torch.get_num_threads()} threads, median of {repeats}"
    )
    print(f"{'mode':<14} {'time s':>8} {'x plain':>8} {'pass MiB':>9} {'x plain':>8} {'process MiB':>12}")
    for name in modes:
        t = statistics.median(times[name])
        print(
            f"{name:<14} {t:8.2f} {t / base_t:8.3f} {peaks[name] / 1024:9.1f} {peaks[name] / base_m:8.3f} {whole[name] / 1024:12.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
