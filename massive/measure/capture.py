"""Statistics of the residual stream after every block, computed on the fly.

A hook at every block's output (`blocks.L.hook_resid_post`: the residual stream after both
residual adds, as the paper measures) reduces it at once, per sequence, in float32 whatever the
model's dtype, with one call (massive.kernels.block.block_stats): the top-k |a| with their positions, dims,
tokens and signed values, the median |a|, the max |a| per feature dim, and exact counts: per
(layer, sequence) the entries above both massive thresholds, min_abs and min_ratio x the median (so
detection knows when the top-k is saturated), per (layer, dim) the positions above outlier_abs and
outlier_ratio x the median (outlier features, Dettmers et al. 2022) and above both massive
thresholds. The counts are made at ladders of thresholds (COUNTS: each pair of their values), so
detection's thresholds are not the capture's: any pair of the ladders is exact without a new
capture (Capture.at), and another is an error. No hidden state outlives its hook, so memory does
not grow with depth, and the hooks
return nothing, so the logits are bit-identical to a plain forward pass.

The reductions stay on the model's device until the batch is done: on a GPU no hook reads a value
back (the device is not synchronised once per block), and `Reducer.flush()` copies the batch's
statistics to the host at once. The tables (with token texts) are built once, at the end.

Each block's output is checked for inf and NaN: when a batch holds one, the batch runs again with
every block checked as it comes, and the first block (in forward order) with a non-finite value
stops the capture with a NonFiniteError naming the block, what it found and the dtype (float16
overflows above 65,504); no statistic of that batch is kept.

Inputs are token ids (a LongTensor [n, seq_len]: a language model) or pixel values (a float
tensor [n, 3, H, W]: a vision transformer, whose tokens are named by its layout, `[CLS]`,
`[REG0]`.., `patch r,c`, with token_id = the position).

    >>> import massive
    >>> stats = massive.capture(model, ids, k=64, tok=tok)
    >>> stats.per_layer()[["layer", "top1_abs", "median_abs"]].head(2)
    >>> stats.topk.columns.tolist()
    ['layer', 'hook', 'seq_id', 'rank', 'position', 'dim', 'token_id', 'token', 'value', 'abs_value']
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import DTYPE_HINT, MassiveError, NonFiniteError
from massive.kernels.block import BlockStats, Thresholds, block_stats, median_lower
from massive.measure.defaults import COUNTS

LAYER_COLUMNS = ["layer", "hook", "seq_id", "median_abs", "top1_abs", "top2_abs", "top3_abs"]


def count_column(what: str, a: float, r: float) -> str:
    """The column of a count at one pair of thresholds: count_column("n_massive", 100, 1000) -> 'n_massive_100_1000'."""
    return f"{what}_{float(a):g}_{float(r):g}"


def is_ladder(thresholds: dict | None) -> bool:
    """Whether a capture's `thresholds` are ladders (lists: counts per pair) rather than one set (numbers)."""
    return bool(thresholds) and all(isinstance(v, (list, tuple)) for v in thresholds.values())


@dataclass
class Capture:
    """The capture's tables (schemas in docs/schemas.md).

    layer_stats  one row per (layer, sequence): layer, hook, seq_id, median_abs, top1/2/3_abs, and
                 n_massive_<a>_<r> for each (a, r) of the min_abs x min_ratio ladders (exact counts
                 of |a| > a and > r x median_abs)
    topk         one row per (layer, sequence, rank): layer, hook, seq_id, rank, position, dim,
                 token_id, token, value (signed), abs_value
    dim_max      one row per (layer, dim): layer, hook, dim, max_abs, n_outlier_<a>_<r> (positions
                 with |a| > a and > r x median_abs, for each pair of the outlier ladders),
                 n_massive_<a>_<r> (positions above each massive pair), n_positions
    vision       whether the inputs were images (tokens named by the ViT layout)
    thresholds   the ladders the counts were made at ({min_abs: [...], min_ratio: [...], outlier_abs:
                 [...], outlier_ratio: [...]}); `at(...)` gives the tables at one pair of them, with
                 the columns n_massive (layer_stats), n_outlier and n_massive (dim_max) that
                 detection reads (and thresholds holding numbers: tables of one set of thresholds)
    """

    layer_stats: pd.DataFrame
    topk: pd.DataFrame
    dim_max: pd.DataFrame | None = None
    vision: bool = False
    thresholds: dict | None = None

    @property
    def n_layers(self) -> int:
        return int(self.layer_stats["layer"].max()) + 1

    def save(self, folder, meta: dict | None = None):
        """The files the capture rule writes (massive/core/results.py); `meta`: more schema metadata."""
        from massive.core.results import save_capture

        return save_capture(self, folder, meta)

    @classmethod
    def load(cls, folder) -> "Capture":
        """A capture saved with `save`, or a pipeline run's capture folder."""
        from massive.core.results import load_capture

        return load_capture(folder, cls)

    def at(
        self, min_abs: float, min_ratio: float, outlier_abs: float | None = None, outlier_ratio: float | None = None
    ) -> "Capture":
        """The capture with its counts at one set of thresholds, each one of its ladders' values
        (None: the ladder's only value): layer_stats.n_massive, dim_max.n_outlier and n_massive, as
        massive.detect reads them. A threshold the capture did not count at is a MassiveError
        naming it, never a count at another one.

            >>> stats.at(100, 500).layer_stats["n_massive"].max()
            3
        """
        if not is_ladder(self.thresholds):  # tables of one set of thresholds already (detect checks them)
            return self
        chosen = {}
        for key, value in (
            ("min_abs", min_abs),
            ("min_ratio", min_ratio),
            ("outlier_abs", outlier_abs),
            ("outlier_ratio", outlier_ratio),
        ):
            ladder = [float(v) for v in self.thresholds[key]]
            shown = ", ".join(f"{v:g}" for v in ladder)
            if value is None and len(ladder) != 1:
                raise MassiveError(f"{key}: the capture counted at {shown}: name one of them")
            value = ladder[0] if value is None else float(value)
            if value not in ladder:
                raise MassiveError(
                    f"{key}={value:g} is not a threshold the capture counted at ({key}: {shown}): add it "
                    f"to capture.counts.{key} (the capture runs again) or use one of those"
                )
            chosen[key] = value
        a, r, oa, orr = chosen.values()
        layer_stats = self.layer_stats[LAYER_COLUMNS].assign(
            n_massive=self.layer_stats[count_column("n_massive", a, r)]
        )
        dim_max = None
        if self.dim_max is not None:
            dim_max = self.dim_max[["layer", "hook", "dim", "max_abs"]].assign(
                n_outlier=self.dim_max[count_column("n_outlier", oa, orr)],
                n_massive=self.dim_max[count_column("n_massive", a, r)],
                n_positions=self.dim_max["n_positions"],
            )
        return Capture(layer_stats=layer_stats, topk=self.topk, dim_max=dim_max, vision=self.vision, thresholds=chosen)

    @property
    def k(self) -> int:
        """The top-k entries kept per layer and sequence."""
        return int(self.topk["rank"].max()) + 1

    def per_layer(self) -> pd.DataFrame:
        """One row per layer: layer, hook, median_abs and top1_abs (means over the sequences),
        top1_over_median.

            >>> stats.per_layer().set_index("layer")["top1_over_median"].idxmax()
            11
        """
        agg = self.layer_stats.groupby(["layer", "hook"], as_index=False)[["median_abs", "top1_abs"]].mean()
        agg["top1_over_median"] = agg["top1_abs"] / agg["median_abs"].clip(lower=1e-12)
        return agg


def check_output(h: torch.Tensor, name: str, seq_ids: Sequence | str | None = None) -> None:
    """Nothing when block output `h` [batch, ...] is finite; else a NonFiniteError naming the
    block, how many inf and NaN it holds, the first sequence with one (`seq_ids` number the rows,
    or a string names the input) and the dtype.

        >>> check_output(torch.tensor([[1.0, float("inf")]]).half(), "blocks.3.hook_resid_post")
        NonFiniteError: capture: block 3's output (blocks.3.hook_resid_post) holds 1 inf (first in sequence 0): the
        first block with a non-finite value (dtype float16; run the model in float32 or bfloat16 ...)
    """
    finite = torch.isfinite(h)
    if bool(finite.all()):
        return
    n_inf, n_nan = int(torch.isinf(h).sum()), int(torch.isnan(h).sum())
    found = " and ".join(f"{n} {what}" for n, what in ((n_inf, "inf"), (n_nan, "NaN")) if n)
    row = int(torch.nonzero(~finite.reshape(len(h), -1).all(dim=1))[0])
    at = seq_ids if isinstance(seq_ids, str) else f"sequence {seq_ids[row] if seq_ids is not None else row}"
    dtype = str(h.dtype).replace("torch.", "")
    raise NonFiniteError(
        f"capture: block {hooks.layer_of(name)}'s output ({name}) holds {found} (first in {at}): "
        f"the first block with a non-finite value (dtype {dtype}; {DTYPE_HINT})"
    )


def median_abs(h: torch.Tensor) -> np.ndarray:
    """The median |a| of each sequence h[i] (the lower middle value, as torch.median), in float32,
    selected without a sort (massive.kernels.block.median_lower on the CPU, torch.kthvalue on a GPU).

        >>> median_abs(torch.tensor([[[1.0, -3.0], [2.0, 5.0]]]))
        array([2.], dtype=float32)
    """
    a = h.detach().to(torch.float32).abs().reshape(h.shape[0], -1)
    if a.is_cuda:
        return a.kthvalue((a.shape[1] - 1) // 2 + 1, dim=1).values.cpu().numpy()
    return median_lower(a, h.shape[-1]).numpy()


FIELDS = ("median", "values", "signed", "indices", "counts", "finite", "tied")  # per (layer, sequence)


class Reducer:
    """The capture's hook function: reduces each block output it is given, per sequence, in
    float32 (massive.kernels.block.block_stats: one call per block), and keeps only the reductions, on the
    model's device: nothing goes to the host inside the forward pass. Set `batch(seq_ids,
    token_ids)` before each forward pass (token_ids None: images, the token id is the position);
    `flush()` after it checks the batch (non-finite values, ties the device path cannot cut) and
    copies its statistics to the host at once.

        >>> reducer = Reducer(k=8, min_abs=[100], min_ratio=[500, 1000], outlier_abs=6)
        >>> with hooks.hooked(model, reducer.hooks(model)):
        ...     reducer.batch([0, 1], ids)
        ...     model(ids)
        >>> reducer.flush()
        True
        >>> layer_stats, topk, dim_max = reducer.tables(lambda ids: {i: str(i) for i in ids})
    """

    def __init__(
        self,
        k: int,
        backend: str = "auto",
        min_abs=COUNTS["min_abs"],
        min_ratio=COUNTS["min_ratio"],
        outlier_abs=COUNTS["outlier_abs"],
        outlier_ratio=COUNTS["outlier_ratio"],
        sync: bool | None = None,
    ):
        self.k, self.backend, self.sync = k, backend, sync
        self.thr = Thresholds(min_abs, min_ratio, outlier_abs, outlier_ratio)  # each a threshold or a ladder
        self.dim_counts: dict[int, torch.Tensor] = {}  # layer -> [outlier pairs + massive pairs, D]
        self.dim_max: dict[int, torch.Tensor] = {}  # layer -> [D], on the device until tables()
        self.positions: dict[int, int] = {}
        self.seq_ids: list[int] = []
        self.token_ids: torch.Tensor | None = None
        self.seq_len = self.width = 0
        self.pending: list[tuple[int, str, BlockStats]] = []  # this batch's blocks, on the device
        self.done: dict[str, list] = defaultdict(list)  # flushed batches, on the host
        self._buf: torch.Tensor | None = None

    def hooks(self, model: nn.Module) -> dict:
        """{hook name: self} for every block's output."""
        return {name: self for name in hooks.names(model, "blocks.*.hook_resid_post")}

    def batch(self, seq_ids: Sequence[int], token_ids: torch.Tensor | None = None) -> None:
        self.seq_ids, self.token_ids = list(seq_ids), token_ids
        self.pending = []

    def _abs_buffer(self, h: torch.Tensor) -> torch.Tensor | None:
        """A float32 buffer of h's shape for |h| on the CPU, reused from block to block (a fresh
        one per block would be paged in anew each time)."""
        if h.is_cuda:
            return None
        if self._buf is None or self._buf.shape != h.shape:
            self._buf = torch.empty(h.shape, dtype=torch.float32)
        return self._buf

    def __call__(self, h: torch.Tensor, name: str) -> None:
        layer = hooks.layer_of(name)
        n, d = len(self.seq_ids), h.shape[-1]
        h = h[:n]
        if self.k > h[0].numel():
            raise MassiveError(
                f"k={self.k} is above the {h[0].numel()} entries of one layer and sequence "
                f"({h.shape[1]} tokens x {d} dims)"
            )
        r = block_stats(h, self.k, self.thr, backend=self.backend, sync=self.sync, out=self._abs_buffer(h))
        self.pending.append((layer, name, r))
        self.seq_len, self.width = h.shape[1], d
        self.dim_max[layer] = r.dim_max if layer not in self.dim_max else torch.maximum(self.dim_max[layer], r.dim_max)
        self.dim_counts[layer] = r.dim_counts if layer not in self.dim_counts else self.dim_counts[layer] + r.dim_counts
        self.positions[layer] = self.positions.get(layer, 0) + n * h[0].numel() // d

    def flush(self) -> bool:
        """Check the batch's blocks and move their statistics to the host (one copy per field).
        A NonFiniteError names the first block (in forward order) with an inf or NaN; False means a
        tie at the k-th value that the device path cannot cut: redo the batch with `sync=True`
        (the batch's statistics are dropped, the per-dim ones included)."""
        if not self.pending:
            return True
        layers = [layer for layer, _, _ in self.pending]
        got = {f: torch.stack([getattr(r, f) for _, _, r in self.pending]).cpu() for f in FIELDS}
        finite = got["finite"].numpy()
        if not finite.all():
            i, row = (int(v[0]) for v in np.nonzero(~finite))
            top = float(got["values"][i, row, 0])
            raise NonFiniteError(
                f"capture: block {layers[i]}'s output ({self.pending[i][1]}) holds "
                f"{'NaN' if np.isnan(top) else 'inf'} (first in sequence {self.seq_ids[row]}): the first "
                f"block with a non-finite value ({DTYPE_HINT})"
            )
        if got["tied"].any():
            for layer, _, r in self.pending:  # (the redo's dim maxima are these again)
                self.dim_counts[layer] = self.dim_counts[layer] - r.dim_counts
                self.positions[layer] -= len(self.seq_ids) * self.seq_len
            self.pending = []
            return False
        n, k = len(self.seq_ids), got["values"].shape[2]
        pos = got["indices"].numpy() // self.width
        ids = (
            pos
            if self.token_ids is None
            else np.take_along_axis(
                np.broadcast_to(self.token_ids[:n].cpu().numpy(), (len(layers), *self.token_ids[:n].shape)), pos, axis=2
            )
        )
        out = self.done
        out["token_id"].append(ids.reshape(len(layers) * n, k))
        out["layer"].append(np.repeat(layers, n))
        out["seq_id"].append(np.tile(self.seq_ids, len(layers)))
        for f in ("median", "values", "signed", "indices", "counts"):
            out[f].append(got[f].numpy().reshape(len(layers) * n, *got[f].shape[2:]))
        self.pending = []
        return True

    @property
    def layer_rows(self) -> list[dict]:
        """The layer_stats rows made so far (flushing the current batch)."""
        return self.tables(lambda ids: {})[0].to_dict("records") if self.flush() and self.done else []

    def tables(
        self, token_names: Callable[[np.ndarray], dict[int, str]]
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(layer_stats, topk, dim_max), sorted; `token_names(token_ids)` names the tokens."""
        if not self.flush():
            raise MassiveError(
                "capture: a tie at the k-th |a| that the device path cannot cut: "
                "redo the batch with Reducer(sync=True) (massive.capture does)"
            )
        got = {key: np.concatenate(v) for key, v in self.done.items()}
        layer, seq_id, values, counts = got["layer"], got["seq_id"], got["values"], got["counts"]
        rows, k = values.shape
        names = {int(i): hooks.resid_post(int(i)) for i in np.unique(layer)}
        top = lambda j: values[:, min(j, k - 1)]  # noqa: E731
        layer_stats = pd.DataFrame(
            {
                "layer": layer,
                "hook": [names[i] for i in layer],
                "seq_id": seq_id,
                "median_abs": got["median"].astype(np.float64),
                "top1_abs": top(0),
                "top2_abs": top(1),
                "top3_abs": top(2),
                **{count_column("n_massive", a, r): counts[:, c] for c, (a, r) in enumerate(self.thr.massive)},
            }
        )
        layer_stats = layer_stats.sort_values(["layer", "seq_id"], kind="stable").reset_index(drop=True)
        idx = got["indices"].ravel()
        topk = pd.DataFrame(
            {
                "layer": np.repeat(layer, k),
                "seq_id": np.repeat(seq_id, k),
                "rank": np.tile(np.arange(k), rows),
                "position": idx // self.width,
                "dim": idx % self.width,
                "token_id": got["token_id"].ravel(),
                "value": got["signed"].ravel(),
                "abs_value": values.ravel(),
            }
        )
        topk.insert(
            topk.columns.get_loc("token_id") + 1,
            "token",
            topk["token_id"].map(token_names(topk["token_id"].to_numpy())),
        )
        topk.insert(1, "hook", topk["layer"].map(names))
        topk = topk.sort_values(["layer", "seq_id", "rank"], kind="stable").reset_index(drop=True)
        layers = sorted(self.dim_max)
        dm = torch.stack([self.dim_max[i] for i in layers]).cpu().numpy() if layers else np.zeros((0, 0), np.float32)
        pairs = [("n_outlier", a, r) for a, r in self.thr.outlier] + [("n_massive", a, r) for a, r in self.thr.massive]
        dc = (
            torch.stack([self.dim_counts[i] for i in layers]).cpu().numpy()
            if layers
            else np.zeros((0, len(pairs), 0), np.int64)
        )
        d = dm.shape[1]
        dim_max = pd.DataFrame(
            {
                "layer": np.repeat(np.asarray(layers, dtype=np.int64), d),
                "hook": np.repeat([hooks.resid_post(i) for i in layers], d).astype(object),
                "dim": np.tile(np.arange(d), len(layers)),
                "max_abs": dm.ravel().astype(np.float64),
                **{count_column(what, a, r): dc[:, c].ravel().astype(np.int64) for c, (what, a, r) in enumerate(pairs)},
                "n_positions": np.repeat([self.positions[i] for i in layers], d).astype(np.int64),
            }
        )
        return layer_stats, topk, dim_max

    @property
    def thresholds(self) -> dict:
        """The ladders counted at: {min_abs: [...], min_ratio: [...], outlier_abs: [...], outlier_ratio: [...]}."""
        return {key: list(getattr(self.thr, key)) for key in COUNTS}


def decoder(tok) -> Callable[[np.ndarray], dict[int, str]]:
    """token ids -> {id: text}: each id decoded alone by `tok` (its text as a table shows it), or
    the id as a string when there is no tokenizer."""
    if tok is None:
        return lambda ids: {int(i): str(int(i)) for i in np.unique(ids)}
    return lambda ids: {int(i): tok.decode([int(i)]) for i in np.unique(ids)}


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def default_forward(model: nn.Module, device=None) -> Callable[[torch.Tensor], object]:
    """How a batch goes through `model`: token ids as input_ids (no KV cache), pixel values
    with arch.forward_kwargs (MAE keeps every patch in place). The capture reads block outputs, not
    logits: a model whose forward takes `logits_to_keep` computes the last position's only (the
    unembedding of every position is about a third of SmolLM2-135M's forward pass)."""
    device = _device(model, device)
    fewer = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    def forward(batch: torch.Tensor):
        if batch.is_floating_point():
            return model(**arch.forward_kwargs(model, batch.to(device)))
        return model(batch.to(device), use_cache=False, **fewer)

    return forward


def capture(
    model: nn.Module,
    inputs: torch.Tensor,
    k: int = 64,
    tok=None,
    batch_size: int = 4,
    backend: str = "auto",
    seq_ids: Sequence[int] | None = None,
    device=None,
    forward: Callable[[torch.Tensor], object] | None = None,
    progress: Callable | None = None,
    min_abs=COUNTS["min_abs"],
    min_ratio=COUNTS["min_ratio"],
    outlier_abs=COUNTS["outlier_abs"],
    outlier_ratio=COUNTS["outlier_ratio"],
) -> Capture:
    """The per-layer statistics of `inputs`: token ids [n, seq_len] (a language model; `tok`
    names the tokens, else they are named by their id) or pixel values [n, 3, H, W] (a ViT;
    tokens named by its layout). `seq_ids` number the sequences (default 0..n-1); `forward(batch)`
    replaces the default forward pass; `backend` picks the top-k path (auto | torch | triton);
    `progress` wraps the batch iterator (e.g. tqdm). `min_abs`, `min_ratio` (detection's massive
    thresholds), `outlier_abs` and `outlier_ratio` (the outlier-feature magnitude: above both it and
    outlier_ratio x the median), each a threshold or a ladder of them (default COUNTS), set what the
    exact counts count: every pair of a ladder's values is counted, so detection may use any of them.

        >>> stats = capture(model, ids, k=64, tok=tok)
        >>> stats.layer_stats.groupby("layer")["top1_abs"].mean().idxmax()
        11
        >>> capture(vit, pixels, k=16).topk["token"].iloc[0]
        '[REG3]'
    """
    vision = inputs.is_floating_point()
    seq_ids = list(range(len(inputs))) if seq_ids is None else list(seq_ids)
    if len(seq_ids) != len(inputs):
        raise MassiveError(f"{len(seq_ids)} seq_ids for {len(inputs)} inputs")
    forward = forward or default_forward(model, device)
    reducer = Reducer(
        k, backend, min_abs=min_abs, min_ratio=min_ratio, outlier_abs=outlier_abs, outlier_ratio=outlier_ratio
    )
    starts = range(0, len(inputs), batch_size)
    with torch.inference_mode():
        for start in progress(starts) if progress else starts:
            batch, ids = inputs[start : start + batch_size], seq_ids[start : start + batch_size]
            with hooks.hooked(model, reducer.hooks(model)):
                reducer.batch(ids, None if vision else batch)
                forward(batch)
            try:
                exact = reducer.flush()
            except NonFiniteError:  # the forward pass again, checking each block as it comes: the exact message
                with hooks.hooked(
                    model,
                    {name: lambda h, name: check_output(h[: len(ids)], name, ids) for name in reducer.hooks(model)},
                ):
                    forward(batch)
                raise
            if not exact:  # a tie at the k-th value on the device path: this batch again, on the exact path
                reducer.sync = True
                with hooks.hooked(model, reducer.hooks(model)):
                    reducer.batch(ids, None if vision else batch)
                    forward(batch)
                reducer.sync = None
                reducer.flush()
    if vision:
        lay = arch.layout(model.config, inputs.shape, reducer.seq_len)
        names = lambda ids: {p: lay.name(p) for p in range(reducer.seq_len)}  # noqa: E731
    else:
        names = decoder(tok)
    layer_stats, topk, dim_max = reducer.tables(names)
    return Capture(layer_stats=layer_stats, topk=topk, dim_max=dim_max, vision=vision, thresholds=reducer.thresholds)


def full_stream(model: nn.Module, forward: Callable[[], object]) -> dict[int, np.ndarray]:
    """{layer: the whole residual stream [positions, dims] after the block, float32} for the first
    input of the one forward pass `forward()`.

        >>> stream = full_stream(model, lambda: model(ids))
        >>> stream[11].shape
        (9, 576)
    """
    out: dict[int, np.ndarray] = {}

    def keep(h: torch.Tensor, name: str) -> None:
        check_output(h[:1], name, "the prompt")
        out[hooks.layer_of(name)] = h[0].detach().to(torch.float32).cpu().numpy()

    with (
        torch.inference_mode(),
        hooks.hooked(model, {name: keep for name in hooks.names(model, "blocks.*.hook_resid_post")}),
    ):
        forward()
    return out


def prompt_table(stream: dict[int, np.ndarray], token_ids: Sequence[int], tokens: Sequence[str]) -> pd.DataFrame:
    """One row per (layer, position) of a full stream: layer, hook, position, token_id, token,
    values (the whole signed vector): capture/prompt.parquet.

        >>> prompt_table(full_stream(model, lambda: model(ids)), ids[0].tolist(), ["Summer", " is", ...])
    """
    return pd.DataFrame(
        [
            {
                "layer": layer,
                "hook": hooks.resid_post(layer),
                "position": pos,
                "token_id": token_ids[pos],
                "token": tokens[pos],
                "values": h[pos],
            }
            for layer, h in stream.items()
            for pos in range(h.shape[0])
        ]
    )


def prompt(model: nn.Module, inputs: torch.Tensor, tok=None, device=None) -> pd.DataFrame:
    """The prompt table of one input: token ids [1, n] (the paper's Fig. 1 prompt, named by
    `tok`) or pixel values [1, 3, H, W] (one image, named by the ViT layout).

        >>> ids = massive.encode_prompt(tok, "Summer is warm. Winter is cold.")
        >>> prompt(model, ids, tok).query("layer == 11").shape
        (9, 6)
    """
    forward = default_forward(model, device)
    stream = full_stream(model, lambda: forward(inputs[:1]))
    n = next(iter(stream.values())).shape[0]
    if inputs.is_floating_point():
        lay = arch.layout(model.config, inputs.shape, n)
        return prompt_table(stream, list(range(n)), [lay.name(p) for p in range(n)])
    ids = [int(i) for i in inputs[0]]
    names = decoder(tok)(np.asarray(ids))
    return prompt_table(stream, ids, [names[i] for i in ids])
