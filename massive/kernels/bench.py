"""Benchmark the Triton top-k kernel against torch, and check it against the torch reference.

On a CUDA machine, for each shape, dtype and k it prints:
  * the kernel's time: the whole `top_abs_triton` call (pass kernel + merge + NaN check), and the
    pass alone (`top_abs_pass`: the one read of x),
  * torch's `x.abs().flatten().topk(k)`, and the same plus torch's per-dim and per-token max
    (what the kernel also returns),
  * achieved bandwidth (bytes of x / time) as a fraction of a device-to-device copy measured in
    the same run (2 * bytes / time of `y.copy_(x)`),
  * whether the result equals `top_abs_torch` exactly.
Times are CUDA-event medians over --iters runs after --warmup runs, with L2 flushed before each
run, on random normal data.

Without CUDA (or with --dry) it only checks correctness on small shapes in Triton's interpreter
and says that no GPU timings were made. --compile-only (no GPU needed either) compiles the kernel
for a CUDA architecture with the installed Triton and reports registers, spills and vector loads.

    python massive/kernels/bench.py                    # GPU
    python massive/kernels/bench.py --dry              # CPU: correctness only
    python massive/kernels/bench.py --compile-only     # CPU: does it compile for sm_90, at what cost
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

TARGET_COPY_FRACTION = 0.80  # of device-to-device copy bandwidth, at k <= 16
TARGET_SPEEDUP = 5.0  # over the torch path, at k <= 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--dry",
        action="store_true",
        help="no GPU timings: check correctness on small shapes in Triton's interpreter (the default without CUDA)",
    )
    p.add_argument(
        "--compile-only",
        action="store_true",
        help="compile for --arch with the installed Triton (no GPU needed) and report "
        "registers and spills from ptxas; no timings",
    )
    p.add_argument("--arch", type=int, default=90, help="CUDA arch for --compile-only (default 90: H100/H200)")
    p.add_argument(
        "--shapes",
        default="4096x4096,16384x8192",
        help="comma-separated shapes, dims joined by x (default: %(default)s)",
    )
    p.add_argument("--dtypes", default="bf16,fp32", help="of bf16, fp16, fp32 (default: %(default)s)")
    p.add_argument("--ks", default="1,16,256", help="default: %(default)s")
    p.add_argument("--iters", type=int, default=50, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--seed", type=int, default=0)
    tune = p.add_argument_group("kernel tuning (defaults: the kernel's own)")
    for name in ("block-r", "block-d", "num-programs", "chunk", "num-warps", "maxnreg"):
        tune.add_argument(f"--{name}", type=int, default=None)
    return p.parse_args(argv)


def tuning(args) -> dict:
    names = ("block_r", "block_d", "num_programs", "chunk", "num_warps", "maxnreg")
    out = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if out.get("maxnreg") == 0:
        out["maxnreg"] = None  # --maxnreg 0: no register cap
    return out


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in s.split("x")) for s in text.split(",") if s]


def same(want, got) -> bool:
    import torch

    return all(
        torch.equal(getattr(want, f), getattr(got, f)) for f in ("values", "signed", "indices", "dim_max", "token_max")
    )


def cuda_time_ms(fn, iters: int, warmup: int, flush) -> float:
    """Median time of fn() in ms by CUDA events; L2 is flushed (outside the events) before each."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_gpu(args) -> int:
    import torch
    import triton

    from massive.kernels.topk import top_abs_torch
    from massive.kernels.triton_topk import top_abs_pass, top_abs_triton

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    tune = tuning(args)
    dev = torch.device("cuda")
    print(
        f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}, "
        f"triton {triton.__version__}; tuning {tune or 'default'}"
    )
    print(
        f"median of {args.iters} runs after {args.warmup} warm-up runs, L2 flushed before each; "
        f"random normal data (seed {args.seed})"
    )
    l2_flush = torch.empty(512 * 2**20, dtype=torch.int8, device=dev)
    flush = l2_flush.zero_
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    head = (
        f"{'shape':>12} {'dtype':>5} {'k':>4} | {'triton':>8} {'pass':>8} | {'topk':>8} "
        f"{'topk+max':>8} | {'speedup':>7} | {'GB/s':>6} {'copy':>6} {'frac':>5} "
        f"{'pass':>5} | ok  target"
    )
    print(head)
    print("-" * len(head))
    failures = 0
    for shape in parse_shapes(args.shapes):
        for dname in args.dtypes.split(","):
            dtype = dtypes[dname]
            x = torch.randn(shape, generator=gen, device=dev, dtype=torch.float32).to(dtype)
            y = torch.empty_like(x)
            d = shape[-1]
            nbytes = x.numel() * x.element_size()
            t_copy = cuda_time_ms(lambda: y.copy_(x), args.iters, args.warmup, flush)
            copy_bw = 2 * nbytes / t_copy / 1e6  # GB/s
            for k in (int(v) for v in args.ks.split(",")):
                ok = same(top_abs_torch(x, k), top_abs_triton(x, k, **tune))
                t_call = cuda_time_ms(lambda: top_abs_triton(x, k, **tune), args.iters, args.warmup, flush)
                t_pass = cuda_time_ms(lambda: top_abs_pass(x, k, **tune), args.iters, args.warmup, flush)
                t_topk = cuda_time_ms(lambda: x.abs().flatten().topk(k), args.iters, args.warmup, flush)

                def torch_path():
                    a = x.abs().reshape(-1, d)
                    a.flatten().topk(k)
                    a.amax(dim=0)
                    a.amax(dim=1)

                t_torch = cuda_time_ms(torch_path, args.iters, args.warmup, flush)
                bw = nbytes / t_call / 1e6
                frac, frac_pass = bw / copy_bw, nbytes / t_pass / 1e6 / copy_bw
                speedup = t_torch / t_call
                target = ""
                if k <= 16:
                    met = frac >= TARGET_COPY_FRACTION and speedup >= TARGET_SPEEDUP
                    target = "met" if met else "MISSED"
                failures += not ok
                shape_s = "x".join(map(str, shape))
                print(
                    f"{shape_s:>12} {dname:>5} {k:>4} | {t_call:8.3f} {t_pass:8.3f} | "
                    f"{t_topk:8.3f} {t_torch:8.3f} | {speedup:6.1f}x | {bw:6.0f} {copy_bw:6.0f} "
                    f"{frac:5.2f} {frac_pass:5.2f} | {'yes' if ok else 'NO '} {target}"
                )
    print(
        "times in ms. triton: the whole top_abs_triton call; pass: its pass kernel alone; "
        "topk: x.abs().flatten().topk(k); topk+max: plus torch's per-dim and per-token max; "
        "speedup: topk+max / triton; GB/s: bytes of x / triton time; copy: device-to-device "
        "copy GB/s (read + write); frac: GB/s / copy (pass: the same for the pass alone). "
        f"Targets at k <= 16: frac >= {TARGET_COPY_FRACTION}, speedup >= {TARGET_SPEEDUP}x."
    )
    return 1 if failures else 0


COUNTS = {
    "NC": 3,
    "CB": 4,
    "NDC": 2,
}  # the capture's exact counts: 3 thresholds, 2 per dim (massive/measure/capture.py)


def run_compile_only(args) -> int:
    """Compile `_top_abs_pass` as a launch on a contiguous x of each shape would, without a GPU."""
    import re
    import subprocess
    import time

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from massive.kernels.triton_topk import _config, _top_abs_pass

    dtypes = {"bf16": (torch.bfloat16, "bf16"), "fp16": (torch.float16, "fp16"), "fp32": (torch.float32, "fp32")}
    tune = tuning(args)
    num_warps = tune.pop("num_warps", 8)
    maxnreg = tune.pop("maxnreg", 128)
    chunk = tune.pop("chunk", None)
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    print(f"compiling for sm_{args.arch} with triton {triton.__version__}, num_warps {num_warps}, maxnreg {maxnreg}")
    failures = 0
    for shape in parse_shapes(args.shapes):
        n, d = (int(torch.tensor(shape[:-1]).prod()) if len(shape) > 1 else 1), shape[-1]
        for dname in args.dtypes.split(","):
            dtype, tname = dtypes[dname]
            x = torch.empty(shape, dtype=dtype, device="meta")
            for k in (int(v) for v in args.ks.split(",")):
                programs = tune.get("num_programs") or 2 * 132  # as on an H100 / H200
                meta, _ = _config(x, k, n, tune.get("block_r"), tune.get("block_d"), programs, chunk)
                meta = {**meta, **COUNTS}
                sig = {
                    "x_ptr": f"*{tname}",
                    "dim_max_ptr": "*fp32",
                    "token_max_ptr": "*fp32",
                    "part_key_ptr": "*i64",
                    "part_signed_ptr": "*fp32",
                    "stage_ptr": "*i64",
                    "cnt_thr_ptr": "*fp32",
                    "part_cnt_ptr": "*i64",
                    "dcnt_thr_ptr": "*fp32",
                    "dcnt_ptr": "*i32",
                    "N": "i32",
                    "D": "i32",
                    "first_row": "i32",
                    "R1": "i32",
                    "s0": "i32",
                    "s1": "i32",
                    "sd": "constexpr",
                    **{m: "constexpr" for m in meta},
                }
                names = list(sig)
                aligned = [
                    "x_ptr",
                    "dim_max_ptr",
                    "token_max_ptr",
                    "part_key_ptr",
                    "part_signed_ptr",
                    "stage_ptr",
                    "cnt_thr_ptr",
                    "part_cnt_ptr",
                    "dcnt_thr_ptr",
                    "dcnt_ptr",
                    "s0",
                ]
                aligned += [name for name, v in (("N", n), ("D", d), ("R1", n), ("s1", d)) if v % 16 == 0]
                attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
                src = ASTSource(fn=_top_abs_pass, signature=sig, constexprs={"sd": 1, **meta}, attrs=attrs)
                options = {"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})}
                label = f"{'x'.join(map(str, shape)):>12} {dname:>5} k={k:<5} {meta}"
                t0 = time.time()
                try:
                    kernel = triton.compile(src, target=GPUTarget("cuda", args.arch, 32), options=options)
                except Exception as e:  # noqa: BLE001 - report and go on
                    failures += 1
                    print(f"{label}: FAILED {type(e).__name__}: {str(e)[:500]}")
                    continue
                ptx = kernel.asm["ptx"]
                info = ""
                if ptxas.exists():
                    out = subprocess.run(
                        [str(ptxas), "-v", f"--gpu-name=sm_{args.arch}a", "-", "-o", os.devnull],
                        input=ptx,
                        capture_output=True,
                        text=True,
                    ).stderr
                    regs = re.search(r"Used (\d+) registers", out)
                    spills = re.search(r"(\d+) bytes spill stores", out)
                    info = (
                        f"{regs.group(1) if regs else '?'} registers, "
                        f"{spills.group(1) if spills else '?'} B spill stores, "
                    )
                print(
                    f"{label}: ok in {time.time() - t0:.0f} s, {info}"
                    f"{ptx.count('ld.global.v4')} ld.global.v4 in the PTX"
                )
    print("compile only: NO GPU TIMINGS WERE MADE")
    return 1 if failures else 0


DRY_SHAPES = [(24, 40), (2, 9, 24)]
# the interpreter is slow (mostly tl.sort): small blocks and merge chunks, unless given
DRY_TUNING = {"block_r": 4, "block_d": 16, "num_programs": 2, "chunk": 1}


def run_dry(args) -> int:
    import torch

    from massive.kernels.topk import top_abs_torch
    from massive.kernels.triton_topk import interpreted, top_abs_triton

    assert interpreted(), "dry run needs TRITON_INTERPRET=1 before massive.kernels.triton_topk is imported"
    torch.set_num_threads(1)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    gen = torch.Generator().manual_seed(args.seed)
    tune = {**DRY_TUNING, **tuning(args)}
    failures = 0
    print(f"dry run: Triton interpreter on CPU, small shapes, correctness against top_abs_torch; tuning {tune}")
    for shape in DRY_SHAPES:
        for dname in args.dtypes.split(","):
            x = torch.randn(shape, generator=gen).to(dtypes[dname])
            for k in (int(v) for v in args.ks.split(",")):
                k_eff = min(k, x.numel())
                ok = same(top_abs_torch(x, k_eff), top_abs_triton(x, k_eff, **tune))
                failures += not ok
                print(f"  {'x'.join(map(str, shape)):>10} {dname:>5} k={k_eff:<4} {'ok' if ok else 'MISMATCH'}")
    print(
        "NO GPU TIMINGS WERE MADE: no CUDA device (or --dry). Run `python massive/kernels/bench.py` on "
        "a CUDA machine for the timings."
    )
    print(f"dry run: {'all correct' if not failures else f'{failures} MISMATCHES'}")
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
    import torch

    if args.compile_only:
        os.environ.pop("TRITON_INTERPRET", None)
        return run_compile_only(args)
    dry = args.dry or not torch.cuda.is_available()
    if dry:
        os.environ["TRITON_INTERPRET"] = "1"  # before massive.kernels.triton_topk is imported
    try:
        import triton  # noqa: F401
    except ImportError:
        print("triton is not installed (pip install -e .[gpu]): nothing to benchmark")
        return 1
    return run_dry(args) if dry else run_gpu(args)


if __name__ == "__main__":
    sys.exit(main())
