"""The same per-layer statistics through this library and through its peers, side by side in one run.

For the same sequences (default: SmolLM2-135M, 16 x 256 tokens of the default corpus, batch 4, and a
long-sequence shape, 2 x 2,048 tokens in one batch: `--shapes`)
every mode computes the top-k |a| and the median |a| of every block's output
(`blocks.L.hook_resid_post`, per sequence, float32):
  plain             model(ids), nothing captured (the baseline of every ratio)
  plain (last logits)  model(ids, logits_to_keep=1): the blocks and the last position's logits only,
                    the forward pass massive.capture makes (it reads block outputs, never logits):
                    the reference of the capture's own cost
  plain (eager)     the same with eager attention (the attention TransformerLens forces): a
                    reference that separates TransformerLens's own cost from eager attention's
  massive.capture   this library: hooks that reduce each block's output as it comes
  nnsight           LanguageModel(model).trace(ids), saving every block's output, then reducing
  transformer_lens  TransformerBridge.run_with_cache(ids, names_filter=<every hook_resid_post>),
                    then reducing
The peers reduce with torch.topk and the library's median (numpy's introselect), so the times
compare the mechanisms, not two medians. The library's capture also keeps positions, signed
values, per-dim maxima and the token tables. Each mode gets its own copy of the model: nnsight
wraps the modules' forward methods and TransformerLens switches the model to eager attention.

Times are medians over `--rounds` rounds, the modes interleaved within each round (in reverse order
every other round), after one checking pass per mode; the per-round ratios are printed too. They are
taken with glibc's default allocator settings, as a user's process runs. Memory is the peak resident
set size during a pass above the resident size before it (Linux VmHWM, reset through
/proc/self/clear_refs), measured as in benchmarks/capture_overhead.py, in a second process of this
script (`--memory-only`) that runs with glibc returning every block of 64 KiB or more to the system at
once (MALLOC_MMAP_THRESHOLD_), so that the resident size follows live memory: the largest of two
passes per mode after a warm-up pass. (Timed under that setting, every allocation of 64 KiB or more
is a fresh mapping paged in anew: the page faults added 0.6 s to the capture's 6.9 s on 16 x 256
tokens and much less to the plain pass, docs/capture_speed.md.) With `--device cuda`: torch's peak
allocation above the allocation before the pass, in the same process.

The checking pass compares, batch by batch, each mode's logits with the plain pass's (bit-identical,
or the max |difference|) and its statistics with the library's (max |difference| of the top-1
|a|, the median |a| and all top-k |a| over every layer and sequence).

A peer that is not installed or cannot load the model is reported with the reason and skipped.
The peers are an optional extra: pip install -e .[peers]

  python benchmarks/peers.py                              # needs cache/models/smollm2_135m/hf (snakemake)
  python benchmarks/peers.py --model DIR --texts corpus.parquet --rounds 3
  python benchmarks/peers.py --shapes 16x256 --peers nnsight --threads 2
  python benchmarks/peers.py --device cuda                # on a GPU: time with synchronisation, torch's peak allocation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

import massive
from massive.core import hooks
from massive.core.models import load_model
from massive.measure.capture import median_abs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_overhead import reset_peak, status_kb  # noqa: E402  (one way to measure pass memory)

Stats = tuple[np.ndarray, np.ndarray]  # top-k |a| [layers, sequences, k], median |a| [layers, sequences]


# ---------------------------------------------------------------- statistics
def reduce(outputs: list[torch.Tensor], k: int) -> Stats:
    """The peers' reduction of one batch: every block's output [batch, seq, dim] -> (top-k |a|, median |a|)."""
    top = [h.detach().float().abs().flatten(1).topk(k, dim=1).values.cpu().numpy() for h in outputs]
    return np.stack(top), np.stack([median_abs(h) for h in outputs])


def ours_stats(stats) -> Stats:
    """The library's Capture as the same arrays."""
    topk = stats.topk.sort_values(["layer", "seq_id", "rank"])
    n_layers, n_seq = stats.n_layers, stats.layer_stats["seq_id"].nunique()
    top = topk["abs_value"].to_numpy(np.float32).reshape(n_layers, n_seq, -1)
    med = stats.layer_stats.sort_values(["layer", "seq_id"])["median_abs"].to_numpy(np.float32).reshape(n_layers, n_seq)
    return top, med


# ---------------------------------------------------------------- the modes
# Each mode is `step(batch, seq_ids) -> (logits, stats of the batch)`; `run()` is the timed pass
# over every batch (it makes the statistics and drops the logits).
LAST = "plain (last logits)"  # model(ids, logits_to_keep=1): the blocks, the unembedding of the last position only


class Mode:
    def __init__(self, name: str, step: Callable, run: Callable):
        self.name, self.step, self.run = name, step, run


def plain_mode(name: str, model, batches, **kwargs) -> Mode:
    def step(batch, _seq_ids):
        return model(batch, use_cache=False).logits, None

    def run():
        for b in batches:
            model(b, use_cache=False, **kwargs)

    return Mode(name, step, run)


def ours_mode(model, ids, k, bs) -> Mode:
    def step(batch, seq_ids):
        kept = {}

        def forward(b):  # the capture's forward pass, keeping the logits to check them
            kept["logits"] = model(b, use_cache=False).logits
            return kept["logits"]

        stats = massive.capture(model, batch, k=k, batch_size=bs, seq_ids=seq_ids, forward=forward)
        return kept["logits"], ours_stats(stats)

    return Mode("massive.capture", step, lambda: massive.capture(model, ids, k=k, batch_size=bs))


def nnsight_mode(path, tok, batches, k, device) -> Mode:
    from nnsight import LanguageModel

    warnings.filterwarnings("ignore", message="LanguageModel is deprecated")
    lm = LanguageModel(load_model(path, device=device), tokenizer=tok)

    def trace(batch):
        outs = []  # (a list comprehension inside the trace does not hand its values back)
        with lm.trace(batch, use_cache=False):
            for blk in lm.model.layers:
                outs.append(blk.output.save())
            out = lm.output.save()
        return out.logits, outs

    def step(batch, _seq_ids):
        logits, outs = trace(batch)
        return logits, reduce(outs, k)

    def run():
        for b in batches:
            reduce(trace(b)[1], k)

    return Mode("nnsight", step, run)


def transformer_lens_mode(path, tok, batches, k, device) -> Mode:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        str(path), hf_model=load_model(path, device=device), tokenizer=tok, device=str(device)
    )
    names = [hooks.resid_post(layer) for layer in range(bridge.cfg.n_layers)]  # the bridge's names are ours
    keep = set(names)

    def cached(batch):
        logits, cache = bridge.run_with_cache(batch, names_filter=lambda name: name in keep)
        return logits, [cache[name] for name in names]

    def step(batch, _seq_ids):
        logits, outs = cached(batch)
        return logits, reduce(outs, k)

    def run():
        for b in batches:
            reduce(cached(b)[1], k)

    return Mode("transformer_lens", step, run)


# ---------------------------------------------------------------- checking and timing
def check(mode: Mode, batches, bs, plain_logits: list[torch.Tensor], eager_logits: list[torch.Tensor] | None) -> dict:
    """One pass of `mode`: its logits against the plain pass's, and its statistics (arrays)."""
    diff = eager = 0.0
    tops, meds = [], []
    for i, b in enumerate(batches):
        logits, stats = mode.step(b, list(range(i * bs, i * bs + len(b))))
        diff = max(diff, float((logits - plain_logits[i]).abs().max()))
        if eager_logits is not None:
            eager = max(eager, float((logits - eager_logits[i]).abs().max()))
        if stats is not None:
            tops.append(stats[0])
            meds.append(stats[1])
    stats = (np.concatenate(tops, axis=1), np.concatenate(meds, axis=1)) if tops else None
    return {"logits": diff, "eager": eager if eager_logits is not None else None, "stats": stats}


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "-"


def number(diff) -> str:
    return "0" if diff == 0 else f"{float(diff):.1e}"


def logit_text(diff: float | None) -> str:
    return "-" if diff is None else "identical" if diff == 0 else f"{diff:.1e}"


class Meter:
    """Pass memory: on the CPU the peak resident set size above the resident size before the pass
    (VmHWM, reset through /proc/self/clear_refs); on CUDA torch's peak allocation above the
    allocation before it. Times wait for the device."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.before = status_kb("VmRSS") * 1024
            reset_peak()
        self.t0 = time.perf_counter()

    def stop(self) -> tuple[float, int]:
        """(seconds, peak bytes above the start)"""
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter() - self.t0, torch.cuda.max_memory_allocated() - self.before
        return time.perf_counter() - self.t0, status_kb("VmHWM") * 1024 - self.before


def measure(meter: Meter, mode: Mode) -> tuple[float, int]:
    """One timed pass of `mode`: (seconds, peak bytes above the start)."""
    meter.start()
    mode.run()
    return meter.stop()


def compare(args, shape: tuple[int, int], docs: list[str], device: torch.device) -> dict | None:
    """Every mode on `shape` (sequences, tokens), side by side: the table of one shape."""
    n, seq_len = shape
    model, tok = massive.load(args.model, device=device)
    ids = massive.sequences(tok, docs, seq_len=seq_len, n=n, seed=args.seed).to(device)
    bs, k = min(args.batch_size, n), args.k
    batches = [ids[i : i + bs] for i in range(0, len(ids), bs)]

    eager_model = load_model(args.model, attn_implementation="eager", device=device)
    modes = [
        plain_mode("plain", model, batches),
        plain_mode("plain (eager)", eager_model, batches),
        plain_mode(LAST, model, batches, logits_to_keep=1),
        ours_mode(model, ids, k, bs),
    ]
    if not args.eager:
        modes.pop(1)
    skipped = []
    for name, make in (("nnsight", nnsight_mode), ("transformer_lens", transformer_lens_mode)):
        if name not in args.peers:
            continue
        try:
            modes.append(make(args.model, tok, batches, k, device))
        except ImportError as exc:
            skipped.append(f"{name}: not installed ({exc}; pip install -e .[peers])")
        except Exception as exc:  # a peer that cannot load the model: say why and go on
            skipped.append(
                f"{name}: cannot load {args.model}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )

    meter = Meter(device)
    if args.memory_only:  # the child process: a warm-up pass, then the peak of two passes per mode
        peaks = {}
        with torch.inference_mode():
            for mode in modes:
                try:
                    mode.run()
                except Exception:  # the parent reports the failure from its checking pass
                    continue
                peaks[mode.name] = max(measure(meter, mode)[1] for _ in range(2))
        return {"shape": list(shape), "peaks": peaks}
    with torch.inference_mode():
        plain_logits = [model(b, use_cache=False).logits for b in batches]
        eager_logits = [eager_model(b, use_cache=False).logits for b in batches]
        checks = {}
        for mode in modes:  # the checking pass, which is also each mode's warm-up
            try:
                checks[mode.name] = check(mode, batches, bs, plain_logits, eager_logits)
            except Exception as exc:
                skipped.append(f"{mode.name}: failed on the sequences: {type(exc).__name__}: {exc}")
        del plain_logits, eager_logits
        modes = [m for m in modes if m.name in checks]
        times = {m.name: [] for m in modes}
        peaks = {m.name: 0 for m in modes}
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:  # interleaved, the order reversed every other round
                t, peak = measure(meter, mode)
                times[mode.name].append(t)
                peaks[mode.name] = max(peaks[mode.name], peak)

    if "massive.capture" not in checks or "plain" not in checks:
        sys.exit("\n".join(["the library's capture or the plain pass failed: nothing to compare with", *skipped]))
    ours = checks["massive.capture"]["stats"]
    base_t = statistics.median(times["plain"])
    where = (
        f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    )
    notes = [
        "Δ: max |difference| from massive.capture over every layer and sequence (top-1 |a|, median |a|, all top-k |a|)",
        "per round, massive.capture / plain: "
        + " ".join(f"{a / b:.3f}" for a, b in zip(times["massive.capture"], times["plain"]))
        + (
            "; nnsight / plain: " + " ".join(f"{a / b:.3f}" for a, b in zip(times["nnsight"], times["plain"]))
            if "nnsight" in times
            else ""
        ),
        f"the capture's own cost (its forward pass unembeds the last position only, as {LAST!r} does): massive.capture / "
        f"{LAST} = {statistics.median(times['massive.capture']) / statistics.median(times[LAST]):.3f}; per round "
        + " ".join(f"{a / b:.3f}" for a, b in zip(times["massive.capture"], times[LAST])),
    ]
    if "transformer_lens" in checks:  # is its difference TransformerLens's, or eager attention's?
        with torch.inference_mode():
            eager = ours_stats(massive.capture(eager_model, ids, k=k, batch_size=bs))
        top, med = checks["transformer_lens"]["stats"]
        notes.append(
            f"transformer_lens against massive.capture on the eager-attention model: Δ top-1 "
            f"{number(np.abs(top[..., 0] - eager[0][..., 0]).max())}, Δ median {number(np.abs(med - eager[1]).max())}, "
            f"Δ top-k {number(np.abs(top - eager[0]).max())}"
        )
    notes += [f"skipped {line}" for line in skipped]

    def show(peaks: dict) -> None:
        """Print the shape's table, with the pass memory of each mode (`peaks`, bytes)."""
        base_m = peaks.get("plain", 0)
        print(
            f"\nmodel {args.model}, {len(ids)} sequences x {ids.shape[1]} tokens, batch {bs}, top_k {k}, "
            f"{where}, median of {args.rounds} rounds"
        )
        print(
            f"{'mode':<17} {'time s':>7} {'x plain':>8} {'pass MiB':>9} {'x plain':>8} {'logits vs plain':>16} "
            f"{'vs eager':>10} {'Δ top-1':>9} {'Δ median':>9} {'Δ top-k':>9}"
        )
        for mode in modes:
            c = checks[mode.name]
            t = statistics.median(times[mode.name])
            if c["stats"] is None:
                deltas = ["-"] * 3
            else:
                top, med = c["stats"]
                deltas = [
                    number(np.abs(top[..., 0] - ours[0][..., 0]).max()),
                    number(np.abs(med - ours[1]).max()),
                    number(np.abs(top - ours[0]).max()),
                ]
            peak = peaks.get(mode.name)
            memory = f"{peak / 2**20:9.1f} {ratio(peak, base_m):>8}" if peak is not None else f"{'-':>9} {'-':>8}"
            print(
                f"{mode.name:<17} {t:7.2f} {t / base_t:8.3f} {memory} "
                f"{logit_text(c['logits']):>16} {logit_text(c['eager']):>10} {deltas[0]:>9} {deltas[1]:>9} {deltas[2]:>9}"
            )
        print("\n".join(notes))

    return {"shape": list(shape), "show": show, "peaks": peaks if device.type == "cuda" else None}


def memory_child(argv: list[str]) -> dict:
    """{(sequences, tokens): {mode: peak bytes}} from a second process of this script that runs with
    glibc returning every block of 64 KiB or more at once (`--memory-only`), so that its resident
    size follows live memory."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--memory-only"], env=env, stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    return {tuple(r["shape"]): r["peaks"] for r in json.loads(out.strip().splitlines()[-1])}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cache/models/smollm2_135m/hf", help="a Hugging Face model directory")
    parser.add_argument(
        "--texts", default="cache/corpora/wiki_sample.parquet", help="a Parquet file with a `text` column"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--shapes",
        default="16x256,2x2048",
        help="sequences x tokens, comma-separated: one table each (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="at most (a shape with fewer sequences: one batch)")
    parser.add_argument("--k", type=int, default=64, help="top-k |a| kept per layer and sequence")
    parser.add_argument("--peers", default="nnsight,transformer_lens", help="which peers to run (comma-separated)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--no-eager", dest="eager", action="store_false", help="leave out the timed eager-attention pass"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the memory process
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    torch.manual_seed(args.seed)
    docs = pd.read_parquet(args.texts, columns=["text"])["text"].tolist()
    results = [compare(args, shape, docs, device) for shape in shapes]
    if args.memory_only:
        print(json.dumps(results))
        return
    peaks = memory_child(argv) if device.type != "cuda" else {tuple(r["shape"]): r["peaks"] for r in results}
    for r in results:
        r["show"](peaks.get(tuple(r["shape"]), {}))


if __name__ == "__main__":
    main(sys.argv[1:])
