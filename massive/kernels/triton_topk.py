"""Triton kernel for `top_abs`: top-k of |a| plus per-dim and per-token max, in one read of x.

The hidden state x [..., D] is seen as a matrix of N rows (tokens) by D columns (features).
Element (r, c) has flat index r * D + c, which is its index in x's logical row-major shape.

Design, top to bottom
---------------------
Keys. Every element is ranked by one int64 key:

    key = (fp32 bits of |a|) << 32  |  (2**32 - 1 - flat index)

|a| >= 0, so its fp32 bits order like its value (+inf above every finite value) and the key is
non-negative. A larger key means a larger |a|, and among equal |a| the lower flat index: exactly
the order of `top_abs_torch`. Keys are unique, so "the k largest keys" is deterministic. -1 marks
an empty slot. (Flat indices are taken relative to a launch; `top_abs_triton` splits tensors of
2**31 elements or more into several launches, so they always fit in 32 bits.)

Pass kernel (`_top_abs_pass`), the only one that reads x from memory. A persistent grid: program p
takes the row blocks p, p + P, p + 2P, ... (BLOCK_R rows each) and walks each one left to right in
[BLOCK_R, BLOCK_D] tiles. Per tile it does the cheap part for every element:
  * a = |x| in fp32 (one load per element, vectorised when the feature dim is contiguous),
  * token max: the tile's row max, NaN-propagating (a NaN anywhere shows up in token_max, which
    is how the wrapper detects it), folded into a running max per row,
  * dim max: the tile's column max, merged with `tl.atomic_max` (fine on fp32 because |a| >= 0),
  * the exact counts (optional, NC and NDC thresholds): per threshold, the tile's entries with
    |a| above it, summed in the program's registers (written once at the end, summed over the
    programs in torch), and per dim with `tl.atomic_add` of the tile's column counts,
  * the filter: if the tile's max |a| is below the program's threshold, nothing in the tile can
    be in the program's top-k and the tile is done. That is the common case once the threshold
    has settled, so the kernel costs about what reading x costs.
Only a "hot" tile (one that beats the threshold) pays for keys: its candidates (keys above the
threshold) are appended to a small per-program staging area in global memory. When each row of
the tile holds at most one candidate (the usual case) the candidates are the rows' argmax, so the
tile is reduced with one argmax; otherwise every element of the tile gets a key and the
candidates are compacted with a prefix sum.
When CH keys are staged they are merged into the program's running top-BUF (`best`, BUF = k
rounded up to a power of two, kept sorted descending) with a bitonic step: sort the chunk
ascending, keep its BUF largest, take the elementwise max with `best` (the BUF largest of the
union, a classic property of one sorted-descending and one sorted-ascending sequence) and sort
again. The threshold then rises to the smallest key in `best`: anything below it is beaten by BUF
elements of this program and can never be in the top-k. To start with a useful threshold, each
program first takes the BUF-th largest of NDEL segment maxima of its first tile (a lower bound of
the BUF-th largest element). No `tl.topk`: selection only uses `tl.sort`, max/argmax reductions
and a cumsum, which exist with the same meaning in Triton 3.x (`tl.topk` needs a power-of-two k,
returns values only and is reported to crash for k=1 on Triton 3.7).
At the end each program writes its BUF best keys and their signed values (gathered from x, BUF
loads per program).

Merge: `torch.topk` over the P * BUF partial keys (small), then the keys are decoded into |a| and
flat indices. Then a NaN check on token_max raises ValueError.

Under TRITON_INTERPRET=1 (set before importing this module) the kernel runs in Triton's
interpreter and accepts CPU tensors, which is how the tests run without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from massive.kernels.result import TopAbs, check_args, thresholds

try:  # Triton's interpreter wraps kernels in this class when TRITON_INTERPRET=1 at decoration
    from triton.runtime.interpreter import InterpretedFunction as _InterpretedFunction
except ImportError:  # pragma: no cover - a Triton without an interpreter
    _InterpretedFunction = ()

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOW32 = 0xFFFFFFFF  # low 32 bits of a key: 2**32 - 1 - flat index
MAX_LAUNCH_NUMEL = 2**31 - 1  # one launch covers fewer elements, so flat indices fit in 32 bits


# ----------------------------------------------------------------------------------------------
# small helpers (inlined by the compiler)


@triton.jit
def _max_keep_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _pack(v, idx):
    """|a| (fp32, >= 0) and its flat index (int64, < 2**32) -> key (int64)."""
    bits = v.to(tl.int32, bitcast=True).to(tl.int64)
    return (bits << 32) | (4294967295 - idx)


@triton.jit
def _unpack(key):
    """key -> (|a| as fp32, flat index as int64). Meaningless for the empty key -1."""
    v = (key >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    return v, 4294967295 - (key & 4294967295)


@triton.jit
def _min_value(thr):
    """Smallest |a| a key must have to be above `thr` (>= -1): the value part of thr + 1."""
    return ((thr + 1) >> 32).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _row_offsets(first_row, rows, R1, s0, s1):
    """Memory offsets (int64) of rows first_row + rows of x: row r is (r // R1, r % R1) in two
    strided dims."""
    r = rows.to(tl.int64) + first_row
    return (r // R1) * s0 + (r % R1) * s1


@triton.jit
def _append(stage, count, keys, take):
    """Append keys[take] (1-D) to the staging area holding `count` keys; return the new count."""
    take = take.to(tl.int32)
    slot = count + tl.cumsum(take, 0) - 1
    tl.store(stage + slot, keys, mask=take != 0)
    return count + tl.sum(take, axis=0)


@triton.jit
def _append_2d(stage, count, keys, take):
    """Same for [R, C] keys, row-major: slots from a prefix sum over the rows and one within
    each row (no reshape of the tile, so no change of layout)."""
    take = take.to(tl.int32)
    per_row = tl.sum(take, axis=1)
    row_start = count + tl.cumsum(per_row, 0) - per_row
    slot = row_start[:, None] + tl.cumsum(take, axis=1) - 1
    tl.store(stage + slot, keys, mask=take != 0)
    return count + tl.sum(per_row, axis=0)


@triton.jit
def _flush(stage, count, best, thr, BUF: tl.constexpr, CH: tl.constexpr):
    """Merge the `count` staged keys into best (top-BUF keys, descending); empty the stage."""
    tl.debug_barrier()  # the staged keys were stored by other threads of this program
    start = count * 0
    while start < count:
        offs = start + tl.arange(0, CH)
        chunk = tl.sort(tl.load(stage + offs, mask=offs < count, other=-1))  # ascending
        # the chunk's BUF largest keys, still ascending: the last row of a [CH // BUF, BUF] view
        rows = tl.reshape(chunk, [CH // BUF, BUF])
        last = tl.arange(0, CH // BUF)[:, None] == CH // BUF - 1
        top = tl.max(tl.where(last, rows, -1), axis=0)
        # best is descending and top ascending: their elementwise max is the BUF largest of both
        best = tl.sort(tl.maximum(best, top), descending=True)
        start += CH
    tl.debug_barrier()  # everyone has read the stage before it is written again
    thr = tl.maximum(thr, tl.min(best, axis=0))
    return best, thr, count * 0


@triton.jit
def _first_threshold(
    x_ptr,
    row0,
    first_row,
    N,
    D,
    R1,
    s0,
    s1,
    sd,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BUF: tl.constexpr,
    NDEL: tl.constexpr,
):
    """A starting threshold for a program: keys <= it cannot be in the program's top-BUF.

    The tile at the launch's rows [row0, row0 + BLOCK_R), columns [0, BLOCK_D) is cut into NDEL
    segments. Their maxima are NDEL distinct elements, so if the BUF-th largest of them is v, at
    least BUF elements have |a| >= v and every element with |a| < v is out. Returns -1 (no bound)
    when there are fewer segments than BUF, or fewer valid ones.
    """
    thr = tl.full([], -1, tl.int64)
    if NDEL >= BUF:
        rows = row0 + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_D)
        ok = (rows < N)[:, None] & (cols < D)[None, :]
        row_ptrs = x_ptr + _row_offsets(first_row, rows, R1, s0, s1)
        x = tl.load(row_ptrs[:, None] + cols[None, :].to(tl.int64) * sd, mask=ok, other=0.0)
        a = tl.where(ok, tl.abs(x.to(tl.float32)), -1.0)
        seg_max = tl.max(tl.reshape(a, [NDEL, BLOCK_R * BLOCK_D // NDEL]), axis=1)
        seg_max = tl.sort(seg_max, descending=True)
        v = tl.max(tl.where(tl.arange(0, NDEL) == BUF - 1, seg_max, -1.0), axis=0)
        if v >= 0:  # keep the keys whose |a| >= v: key >= bits(v) << 32
            thr = (v.to(tl.int32, bitcast=True).to(tl.int64) << 32) - 1
    return thr


# ----------------------------------------------------------------------------------------------
# the pass kernel


@triton.jit
def _top_abs_pass(
    x_ptr,  # the hidden state, any of fp32 / fp16 / bf16
    dim_max_ptr,  # [D] fp32, zero-initialised, shared by all launches (atomic max)
    token_max_ptr,  # [N] fp32, this launch's rows
    part_key_ptr,  # [P, BUF] int64 out: each program's top-BUF keys, descending (-1 = empty)
    part_signed_ptr,  # [P, BUF] fp32 out: the signed values at those keys
    stage_ptr,  # [P, CAP] int64 scratch: each program's staged candidate keys
    cnt_thr_ptr,  # [NC] fp32: count the entries with |a| above each
    part_cnt_ptr,  # [P, CB] int64 out: each program's counts
    dcnt_thr_ptr,  # [NDC] fp32: count, per dim, the entries with |a| above each
    dcnt_ptr,  # [NDC, D] int32, zero-initialised, shared by all launches (atomic add)
    N,
    D,  # rows in this launch, feature dim
    first_row,  # the launch covers rows [first_row, first_row + N) of x
    R1,
    s0,
    s1,
    sd,  # layout: row r is at (r // R1) * s0 + (r % R1) * s1, feature c at c * sd
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,  # tile shape
    BUF: tl.constexpr,  # top-k buffer per program: k rounded up to a power of two
    CH: tl.constexpr,  # staged keys merged at a time (power of two >= BUF)
    CAP: tl.constexpr,  # staging capacity: CH + BLOCK_R * BLOCK_D
    NDEL: tl.constexpr,  # segments of the first tile for the starting threshold
    NC: tl.constexpr,  # count thresholds (0: no counts)
    CB: tl.constexpr,  # NC rounded up to a power of two (>= 1)
    NDC: tl.constexpr,  # per-dim count thresholds (0: none)
):
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    stage = stage_ptr + pid.to(tl.int64) * CAP
    r_ar = tl.arange(0, BLOCK_R)
    d_ar = tl.arange(0, BLOCK_D)

    best = tl.full([BUF], -1, tl.int64)  # this program's top-BUF keys so far, descending
    thr = _first_threshold(x_ptr, pid * BLOCK_R, first_row, N, D, R1, s0, s1, sd, BLOCK_R, BLOCK_D, BUF, NDEL)
    count = tl.full([], 0, tl.int32)  # keys in the staging area
    c_ar = tl.arange(0, CB)
    counts = tl.zeros([CB], tl.int64)  # this program's entries above each count threshold

    # Loops over runtime bounds are `while` loops: the interpreter of Triton 3.6 cannot run
    # `range(<runtime value>)` with numpy >= 2.4 (triton-lang/triton#9171, fixed in 3.7). The
    # compiled code is the same, and these loops would not be software-pipelined anyway (they hold
    # barriers).
    rb = pid
    while rb < tl.cdiv(N, BLOCK_R):
        rows = rb * BLOCK_R + r_ar
        row_ok = rows < N
        row_ptrs = x_ptr + _row_offsets(first_row, rows, R1, s0, s1)
        row_idx = rows.to(tl.int64) * D  # flat index (in this launch) of each row's first element
        tok = tl.zeros([BLOCK_R], tl.float32)
        c0 = pid * 0
        while c0 < D:
            cols = tl.max_contiguous(tl.multiple_of(c0 + d_ar, BLOCK_D), BLOCK_D)
            col_ok = cols < D
            ok = row_ok[:, None] & col_ok[None, :]
            x = tl.load(row_ptrs[:, None] + cols[None, :].to(tl.int64) * sd, mask=ok, other=0.0)
            a = tl.abs(x.to(tl.float32))

            # the per-token and per-dim maxima: every element, every time
            tok = _max_keep_nan(tok, tl.reduce(a, 1, _max_keep_nan))  # NaN shows up here
            col_max = tl.max(a, axis=0)
            tl.atomic_max(dim_max_ptr + cols, col_max, mask=col_ok, sem="relaxed")

            # the exact counts: every element, every time (unrolled over the few thresholds)
            for j in tl.static_range(NC):
                above = (ok & (a > tl.load(cnt_thr_ptr + j))).to(tl.int32)
                counts += tl.where(c_ar == j, tl.sum(tl.sum(above, axis=1), axis=0).to(tl.int64), 0)
            for j in tl.static_range(NDC):
                above = (ok & (a > tl.load(dcnt_thr_ptr + j))).to(tl.int32)
                tl.atomic_add(dcnt_ptr + j * D + cols, tl.sum(above, axis=0), mask=col_ok, sem="relaxed")

            # the top-k filter: most tiles stop here
            min_v = _min_value(thr)
            if tl.max(col_max, axis=0) >= min_v:
                hot = ok & (a >= min_v)  # a superset of the candidates (ties need the index)
                per_row = tl.sum(hot.to(tl.int32), axis=1)
                if tl.max(per_row, axis=0) <= 1:
                    # at most one candidate per row: it is the row's max, first index on ties
                    v, arg = tl.max(
                        tl.where(ok, a, -1.0), axis=1, return_indices=True, return_indices_tie_break_left=True
                    )
                    row_keys = _pack(v, row_idx + c0 + arg)
                    take_row = (per_row == 1) & (row_keys > thr)
                    count = _append(stage, count, row_keys, take_row)
                else:
                    keys = _pack(a, row_idx[:, None] + cols[None, :])
                    count = _append_2d(stage, count, keys, ok & (keys > thr))
                if count >= CH:
                    best, thr, count = _flush(stage, count, best, thr, BUF, CH)
            c0 += BLOCK_D

        tl.store(token_max_ptr + rows, tok, mask=row_ok)
        rb += n_prog

    if count > 0:
        best, thr, count = _flush(stage, count, best, thr, BUF, CH)

    # this program's partial top-k: keys and the signed values they point at
    _, idx = _unpack(best)
    valid = best >= 0
    idx = tl.where(valid, idx, 0)
    ptrs = x_ptr + _row_offsets(first_row, idx // D, R1, s0, s1) + (idx % D) * sd
    signed = tl.load(ptrs, mask=valid, other=0.0).to(tl.float32)
    out = pid * BUF + tl.arange(0, BUF)
    tl.store(part_key_ptr + out, best)
    tl.store(part_signed_ptr + out, signed)
    tl.store(part_cnt_ptr + pid * CB + c_ar, counts)


# ----------------------------------------------------------------------------------------------
# host side


def interpreted() -> bool:
    """True when the kernel runs in Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    return bool(_InterpretedFunction) and isinstance(_top_abs_pass, _InterpretedFunction)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def row_layout(x: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(R1, s0, s1, sd) with row r of x at (r // R1) * s0 + (r % R1) * s1, or None.

    The leading dims are merged where memory allows; views whose leading dims do not reduce to two
    strided dims (rare) return None and are copied to contiguous memory by the caller.
    """
    dims = [(n, s) for n, s in zip(x.shape[:-1], x.stride()[:-1]) if n != 1]
    merged: list[list[int]] = []
    for n, s in dims:
        if merged and merged[-1][1] == n * s:
            merged[-1] = [merged[-1][0] * n, s]
        else:
            merged.append([n, s])
    sd = x.stride(-1) if x.shape[-1] > 1 else 1
    if not merged:
        return 1, 0, 0, sd
    if len(merged) == 1:
        return merged[0][0], 0, merged[0][1], sd
    if len(merged) == 2:
        return merged[1][0], merged[0][1], merged[1][1], sd
    return None


def _config(x: torch.Tensor, k: int, n_rows: int, block_r, block_d, num_programs, chunk):
    """Launch parameters for n_rows rows of x; None means the default."""
    d = x.shape[-1]
    tile = 16384 // x.element_size()  # elements per tile: 16 KiB, 32 elements a thread in bf16
    if num_programs is None:
        if x.is_cuda:  # two programs of 8 warps per SM
            num_programs = 2 * torch.cuda.get_device_properties(x.device).multi_processor_count
        else:  # the interpreter runs programs one after another, each costing ~1.6 s: one program
            num_programs = 1  # (the tests that exercise several pass num_programs)
    min_d = min(_next_pow2(d), 512 // x.element_size())  # at least 512 bytes of a row
    if block_r is None:  # enough row blocks for every program, up to tile // min_d rows
        per_program = 1 << (max(1, n_rows // num_programs).bit_length() - 1)
        block_r = min(_next_pow2(n_rows), per_program, tile // min_d)
    if block_d is None:  # few rows: wider tiles
        block_d = min(_next_pow2(d), max(min_d, tile // block_r))
    for name, v in (("block_r", block_r), ("block_d", block_d)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name}={v} must be a power of two")
    buf = _next_pow2(k)
    ch = max(buf, _next_pow2(chunk) if chunk else 256)
    ndel = min(block_r * block_d, max(buf, 256))
    return dict(BLOCK_R=block_r, BLOCK_D=block_d, BUF=buf, CH=ch, CAP=ch + block_r * block_d, NDEL=ndel), num_programs


def top_abs_pass(
    x: torch.Tensor,
    k: int,
    *,
    block_r: int | None = None,
    block_d: int | None = None,
    num_programs: int | None = None,
    chunk: int | None = None,
    num_warps: int = 8,
    maxnreg: int | None = 128,
    max_launch_numel: int = MAX_LAUNCH_NUMEL,
    count_above=None,
    dim_count_above=None,
    stats: dict | None = None,
    check: bool = True,
):
    """Run the pass kernel. Returns (dim_max, token_max, partials) with partials a list of
    (first flat index, number of elements, keys [P * BUF], signed [P * BUF]), one per launch.
    With `stats` (a dict) it also fills stats["counts"] [C] and stats["dim_counts"] [C', D]
    (int64) for the thresholds `count_above` and `dim_count_above` (`check=False`: their NaN check,
    which reads them on the host, is skipped)."""
    check_args(x, k)
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"top_abs_triton supports float32, float16 and bfloat16, got {x.dtype}; use backend='torch'")
    if not (x.is_cuda or interpreted()):
        raise ValueError(
            "top_abs_triton needs a CUDA tensor (or TRITON_INTERPRET=1 set before "
            f"importing massive.kernels.triton_topk), got a tensor on {x.device}"
        )
    x = x.detach()
    layout = row_layout(x)
    if layout is None:  # leading dims that do not merge into two strided dims: copy once
        x = x.contiguous()
        layout = row_layout(x)
    d = x.shape[-1]
    n = x.numel() // d
    dim_max = torch.zeros(d, dtype=torch.float32, device=x.device)
    token_max = torch.empty(n, dtype=torch.float32, device=x.device)
    cnt_thr = thresholds(count_above, x.device, check).reshape(-1)
    dcnt_thr = thresholds(dim_count_above, x.device, check).reshape(-1)
    nc, ndc = cnt_thr.numel(), dcnt_thr.numel()
    cb = _next_pow2(max(nc, 1))
    dcnt = torch.zeros(max(ndc, 1), d, dtype=torch.int32, device=x.device)
    counts = torch.zeros(nc, dtype=torch.int64, device=x.device)
    # one real (never read) element where there is no threshold: a pointer argument needs a tensor
    cnt_arg = cnt_thr if nc else torch.zeros(1, dtype=torch.float32, device=x.device)
    dcnt_arg = dcnt_thr if ndc else torch.zeros(1, dtype=torch.float32, device=x.device)
    rows_per_launch = max(1, max_launch_numel // d)
    # at most 128 registers a thread: two programs of 8 warps per SM keep enough loads in flight;
    # what spills is on the rare hot path (see massive/kernels/README.md)
    limits = {"maxnreg": maxnreg} if maxnreg else {}
    R1, s0, s1, sd = layout
    partials = []
    for row0 in range(0, n, rows_per_launch):
        n_rows = min(rows_per_launch, n - row0)
        meta, n_prog = _config(x, k, n_rows, block_r, block_d, num_programs, chunk)
        n_prog = max(1, min(n_prog, triton.cdiv(n_rows, meta["BLOCK_R"])))
        buf = meta["BUF"]
        part_key = torch.empty(n_prog * buf, dtype=torch.int64, device=x.device)
        part_signed = torch.empty(n_prog * buf, dtype=torch.float32, device=x.device)
        stage = torch.empty(n_prog * meta["CAP"], dtype=torch.int64, device=x.device)
        part_cnt = torch.empty(n_prog * cb, dtype=torch.int64, device=x.device)
        _top_abs_pass[(n_prog,)](
            x,
            dim_max,
            token_max[row0:],
            part_key,
            part_signed,
            stage,
            cnt_arg,
            part_cnt,
            dcnt_arg,
            dcnt,
            n_rows,
            d,
            row0,
            R1,
            s0,
            s1,
            sd,
            num_warps=num_warps,
            NC=nc,
            CB=cb,
            NDC=ndc,
            **meta,
            **limits,
        )
        partials.append((row0 * d, n_rows * d, part_key, part_signed))
        counts += part_cnt.view(n_prog, cb)[:, :nc].sum(0)
    if stats is not None:
        stats["counts"], stats["dim_counts"] = counts, dcnt[:ndc].to(torch.int64)
    return dim_max, token_max, partials


def merge_partials(k: int, partials) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of the partial keys of all launches -> (values, signed, indices)."""
    vals, signed, idx = [], [], []
    for base, numel, keys, sgn in partials:
        # each program keeps min(BUF, its elements) valid keys, so there are at least
        # min(k, numel) of them: the empty keys (-1) are never taken
        top = torch.topk(keys, min(k, numel), sorted=True)
        key = top.values
        vals.append((key >> 32).to(torch.int32).view(torch.float32))
        idx.append(LOW32 - (key & LOW32) + base)
        signed.append(sgn[top.indices])
    if len(partials) == 1:
        return vals[0][:k], signed[0][:k], idx[0][:k]
    vals, signed, idx = torch.cat(vals), torch.cat(signed), torch.cat(idx)
    # launches are in index order and each list is sorted (|a| desc, index asc): a stable sort
    # on |a| keeps that order among ties
    order = torch.sort(vals, descending=True, stable=True).indices[:k]
    return vals[order], signed[order], idx[order]


def top_abs_triton(
    x: torch.Tensor, k: int, count_above=None, dim_count_above=None, check: bool = True, **tuning
) -> TopAbs:
    """`top_abs` with the Triton kernel: see the module docstring. `tuning` (block_r, block_d,
    num_programs, chunk, num_warps, maxnreg) overrides the launch configuration, e.g. for tests.
    `count_above` / `dim_count_above`: the exact counts (massive.kernels.result.TopAbs). `check=False`
    skips the NaN checks (of x and the thresholds), the only steps that synchronise the device:
    a NaN in x then shows as a NaN in token_max, for the caller to look at when it reads back."""
    stats: dict = {}
    dim_max, token_max, partials = top_abs_pass(
        x, k, count_above=count_above, dim_count_above=dim_count_above, stats=stats, check=check, **tuning
    )
    if check and bool(torch.isnan(token_max).any()):
        raise ValueError(
            "top_abs input contains NaN: top-k of |a| is undefined; "
            "clean the hidden state or check the model for overflow"
        )
    values, signed, indices = merge_partials(k, partials)
    return TopAbs(
        values=values,
        signed=signed,
        indices=indices,
        dim_max=dim_max,
        token_max=token_max,
        counts=stats["counts"],
        dim_counts=stats["dim_counts"],
    )


__all__ = ["top_abs_triton", "top_abs_pass", "merge_partials", "row_layout", "interpreted"]
