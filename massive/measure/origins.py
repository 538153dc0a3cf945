"""Where massive activations come from: the sublayer that writes them, the super weight behind
it (Yu et al. 2024, "The Super Weight in Large Language Models"), and causal tests with controls.

Nothing is typed in per model: every massive activation of a detection (dim, token role) is
traced at the tokens where detection found it, and the per-family facts (the down projection, its
orientation, Mixtral's experts and router, parallel blocks) come from massive.core.arch.

  sublayers     at the block where it emerges (its writing block), the residual update of the
                massive dim split into `attn` (blocks.L.hook_attn_out), `mlp` (blocks.L.hook_mlp_out)
                and `other` (what the two do not explain: ~0, as attn_out and mlp_out are what the
                residual stream receives, after post-norms and multipliers; a family where
                resid_pre + attn_out + mlp_out != resid_post has no `other` row and says why in
                Origins.note, massive.core.hooks.decomposition_note); parallel
                blocks (Phi-2, GPT-J: both parts read the same input) are flagged. Later blocks
                are listed when a part changes the value by more than `min_share` of its value
                after the peak block (detect's peak_layer).
  super weight  in the MLP that writes it, the down projection's input channels whose product
                with the weight, x[channel] * W[dim, channel], makes up `channel_share` of the
                MLP's write (at most `max_channels`; the first is the super weight), with the
                input spike at that channel and token (its ratio to the median |x| of the token),
                the coordinate in the weight's own orientation (nn.Linear [dim, channel], GPT-2's
                Conv1D [channel, dim], Mixtral's experts [expert, dim, channel]), its value and
                its magnitude rank in that matrix (1: the largest |w|). For a mixture of experts,
                the expert that writes it is found per token (the routed expert with the largest
                contribution); a row per (activation, expert).
  interventions weight edits as registered context managers (`@weight_intervention`), applied
                by `ablated`, which restores every edited entry bit for bit when the block exits,
                even on an exception:
                  none                        nothing (the baseline; records where the massive
                                              activations are, for the factorial)
                  zero_super_weight           W[dim, channel] = 0 for every super weight
                  random_weight               control: a weight of the same matrix in the same
                                              magnitude-rank band (rank +- rank_band, outside the
                                              super weights' input channels), drawn with the seed
                  zero_channel                control: the whole down-projection input channel = 0
                  zero_super_weight_restore   the super weight zeroed, but the massive activation
                                              set to its mean at its block's output
                  zero_activation             the weight kept, the massive activation zeroed at
                                              its block's output
                The factorial two act at the positions the baseline pass recorded (its massive
                entries at the writing block), so `perplexities` runs `none` first.

    >>> found = massive.detect(stats)
    >>> o = origins.find(model, ids, found)
    >>> o.superweights[["dim", "block", "coordinate", "weight", "abs_rank"]]
    >>> table = origins.perplexities(model, o, chunks, origins.INTERVENTIONS, seed=1)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.intervene.comparison import COLUMNS, HARMFUL, HARMLESS, RESAMPLES, compare
from massive.intervene.interventions import ROLES, massive_means
from massive.intervene.registry import (  # noqa: F401 - the registry's public names, also importable from here
    ACTIVATION,
    KINDS,
    WEIGHT_INTERVENTIONS,
    weight_intervention,
)
from massive.measure.defaults import CHANNEL_SHARE, MAX_CHANNELS, MIN_SHARE, RANK_BAND
from massive.measure.detect import thresholds

PARTS = ("attn", "mlp", "other")
SUBLAYER_COLUMNS = ["dim", "role", "block", "part", "contribution", "value", "share", "n_tokens", "writes", "parallel"]
SUPERWEIGHT_COLUMNS = [
    "dim",
    "role",
    "block",
    "expert",
    "n_tokens",
    "positions",
    "channel",
    "channel_rank",
    "product",
    "share",
    "input_value",
    "input_ratio",
    "param",
    "orientation",
    "coordinate",
    "weight",
    "abs_rank",
    "n_weights",
    "primary",
]


@dataclass
class Origins:
    """What `find` found.

    sublayers      the listed rows (SUBLAYER_COLUMNS): the writing block's parts, and later blocks
                   whose part changes the value by more than min_share of it
    contributions  every block x part of every massive activation (what the figure shows)
    superweights   SUPERWEIGHT_COLUMNS, one row per (activation, expert, channel); primary: the super weight
    weights        block -> its down-projection weights (massive.core.arch.DownWeights)
    writers        (dim, role) -> writing block
    means          (block, dim, role) -> mean value at the block's output (massive_means of the detection)
    """

    sublayers: pd.DataFrame
    contributions: pd.DataFrame
    superweights: pd.DataFrame
    weights: dict[int, arch.DownWeights] = field(default_factory=dict)
    writers: dict[tuple[int, str], int] = field(default_factory=dict)
    means: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    note: str | None = None  # why the family's sublayer writes do not add up to the block's update (no `other` rows)

    @property
    def primary(self) -> pd.DataFrame:
        """The super weights: the first channel of each (activation, expert)."""
        return self.superweights[self.superweights["primary"]] if len(self.superweights) else self.superweights


# ---------------------------------------------------------------- tracing
def _tokens(found: Any, seq_ids: Sequence[int]) -> tuple[list[tuple[int, int]], dict]:
    """The (row, position) of every massive entry at its emergence block, per (dim, role)."""
    row = {int(s): i for i, s in enumerate(seq_ids)}
    m, s = found.massive, found.summary
    per = {}
    for _, r in s.iterrows():
        g = m[
            (m["layer"] == r["emerge_layer"])
            & (m["dim"] == r["dim"])
            & (m["role"] == r["role"])
            & m["seq_id"].isin(row)
        ]
        per[(int(r["dim"]), r["role"])] = (
            int(r["emerge_layer"]),
            int(r["peak_layer"]),
            sorted({(row[int(a)], int(b)) for a, b in zip(g["seq_id"], g["position"])}),
        )
    every = sorted({t for _, _, toks in per.values() for t in toks})
    return every, per


@torch.inference_mode()
def _trace(
    model: nn.Module, ids: torch.Tensor, tokens: list[tuple[int, int]], names: list[str], batch_size: int, device
) -> dict[str, torch.Tensor]:
    """The rows of every named hook at `tokens` ((row, position) of ids), float32 on the CPU: name -> [tokens, width]."""
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    sel: dict[str, torch.Tensor] = {}

    def keep(h: torch.Tensor, name: str) -> None:
        store[name].append(h[sel["b"].to(h.device), sel["t"].to(h.device)].detach().to(torch.float32).cpu())

    with hooks.hooked(model, [(n, keep) for n in names]):
        for start in range(0, len(ids), batch_size):
            here = [(i - start, t) for i, t in tokens if start <= i < start + batch_size]
            if not here:
                continue
            batch = ids[start : start + batch_size]
            sel.update(b=torch.tensor([i for i, _ in here]), t=torch.tensor([t for _, t in here]))
            model(batch.to(device), use_cache=False)
    return {n: torch.cat(v) for n, v in store.items()}


def _rank(matrix: torch.Tensor, value: float) -> int:
    """The magnitude rank of `value` in `matrix` (1: the largest |w|)."""
    return int((matrix.abs() > abs(value)).sum()) + 1


def _channels(products: torch.Tensor, share: float, most: int) -> list[int]:
    """The channels whose mean products (signed, in the direction of their sum) make up `share` of it."""
    total = float(products.sum())
    signed = products * (1.0 if total >= 0 else -1.0)
    order = torch.argsort(signed, descending=True, stable=True).tolist()
    out, acc = [], 0.0
    for c in order[:most]:
        out.append(int(c))
        acc += float(signed[c])
        if acc >= share * abs(total):
            break
    return out


def find(
    model: nn.Module,
    ids: torch.Tensor,
    found: Any,
    seq_ids: Sequence[int] | None = None,
    min_share: float = MIN_SHARE,
    channel_share: float = CHANNEL_SHARE,
    max_channels: int = MAX_CHANNELS,
    batch_size: int = 4,
    device=None,
) -> Origins:
    """The sublayers and super weights of the massive activations of `found` (a massive.detect
    result) on `ids` (the captured sequences; `seq_ids`: their seq_id in found.massive, default 0..n-1).

        >>> o = find(model, ids, found, min_share=0.1)
        >>> o.sublayers[o.sublayers.writes][["dim", "block", "part", "contribution"]]
    """
    device = next(model.parameters()).device if device is None else device
    seq_ids = list(range(len(ids))) if seq_ids is None else list(seq_ids)
    parts = arch.find_parts(model)
    n, d_model = len(parts.blocks), arch.hidden_size(model.config)
    tokens, per = _tokens(found, seq_ids)
    empty = Origins(
        pd.DataFrame(columns=SUBLAYER_COLUMNS),
        pd.DataFrame(columns=SUBLAYER_COLUMNS),
        pd.DataFrame(columns=SUPERWEIGHT_COLUMNS),
        means=massive_means(found.massive),
    )
    per = {k: v for k, v in per.items() if v[2]}
    if not per:
        return empty
    emerge = sorted({e for e, _, _ in per.values()})
    weights = {
        e: arch.down_weights(parts.mlps[e], d_model) for e in emerge
    }  # an unknown MLP fails here, before any pass
    note = hooks.decomposition_note(model, parts)
    names = [hooks.resid_pre(L) for L in range(n)] + [hooks.resid_post(L) for L in range(n)]
    names += [hooks.attn_out(L) for L in range(n)] + [hooks.mlp_out(L) for L in range(n)]
    names += [hooks.mlp_in(e) if weights[e].experts else hooks.mlp_post(e) for e in emerge]
    rows = _trace(model, ids, tokens, names, batch_size, device)
    index = {t: k for k, t in enumerate(tokens)}

    contrib, listed, sws, writers = [], [], [], {}
    for (dim, role), (e, peak, toks) in per.items():
        k = torch.tensor([index[t] for t in toks])
        at = lambda name: float(rows[name][k, dim].mean())  # noqa: E731
        ref = at(hooks.resid_post(peak))
        sign = 1.0 if ref >= 0 else -1.0
        writes_part = "mlp" if sign * at(hooks.mlp_out(e)) >= sign * at(hooks.attn_out(e)) else "attn"
        for L in range(n):
            delta = at(hooks.resid_post(L)) - at(hooks.resid_pre(L))
            values = {"attn": at(hooks.attn_out(L)), "mlp": at(hooks.mlp_out(L))}
            if note is None:
                values["other"] = delta - values["attn"] - values["mlp"]
            for part, v in values.items():
                r = {
                    "dim": dim,
                    "role": role,
                    "block": L,
                    "part": part,
                    "contribution": v,
                    "value": at(hooks.resid_post(L)),
                    "share": v / ref if ref else float("nan"),
                    "n_tokens": len(toks),
                    "writes": L == e and part == writes_part,
                    "parallel": arch.is_parallel(parts.blocks[L]),
                }
                contrib.append(r)
                if (L == e and (part != "other" or abs(r["share"]) > min_share)) or (
                    L > e and abs(r["share"]) > min_share
                ):
                    listed.append(r)
        writers[(dim, role)] = e
        if writes_part == "mlp":
            sws += _superweights(
                model, parts.mlps[e], weights[e], rows, k, toks, dim, role, e, channel_share, max_channels
            )
    sub = pd.DataFrame(listed, columns=SUBLAYER_COLUMNS)
    sw = pd.DataFrame(sws, columns=SUPERWEIGHT_COLUMNS)
    sw["expert"] = sw["expert"].astype("Int64")
    return Origins(
        sublayers=sub,
        contributions=pd.DataFrame(contrib, columns=SUBLAYER_COLUMNS),
        superweights=sw,
        weights=weights,
        writers=writers,
        means=massive_means(found.massive),
        thresholds=dict(getattr(found, "thresholds", {}) or {}),
        note=note,
    )


def _superweights(model, mlp, w: arch.DownWeights, rows, k, toks, dim, role, block, share, most) -> list[dict]:
    """The super weight rows of one massive activation written by the MLP of `block`."""
    name = w.name(model)
    if not w.experts:
        x = rows[hooks.mlp_post(block)][k]  # [tokens, d_mlp]
        groups = {None: (x, torch.ones(len(k)), list(range(len(k))))}
    else:
        x_in = rows[hooks.mlp_in(block)][k]
        with torch.inference_mode():
            rw, idx = arch.route(mlp, w, x_in.to(device=w.weight.device, dtype=w.weight.dtype))
        rw, idx = rw.float().cpu(), idx.cpu()
        best: dict[int, list] = {}
        for j in range(len(k)):
            cands = []
            for slot in range(idx.shape[1]):
                ex = int(idx[j, slot])
                with torch.inference_mode():
                    h = (
                        arch.expert_hidden(w, x_in[j : j + 1].to(device=w.weight.device, dtype=w.weight.dtype), ex)[0]
                        .float()
                        .cpu()
                    )
                c = float(rw[j, slot]) * float(h @ w.matrix(ex)[dim].float().cpu())
                cands.append((c, ex, h, float(rw[j, slot])))
            sign = 1.0 if sum(c for c, *_ in cands) >= 0 else -1.0
            c, ex, h, weight = max(cands, key=lambda t: sign * t[0])
            best.setdefault(ex, []).append((j, h, weight))
        groups = {
            ex: (torch.stack([h for _, h, _ in v]), torch.tensor([g for *_, g in v]), [j for j, _, _ in v])
            for ex, v in sorted(best.items())
        }
    out = []
    for expert, (x, gate, js) in groups.items():
        matrix = w.matrix(expert).float().cpu()
        products = (x * gate[:, None] * matrix[dim]).mean(0)
        total = float(products.sum())
        median = x.abs().median(dim=1).values.clamp_min(torch.finfo(torch.float32).tiny)
        for rank, c in enumerate(_channels(products, share, most), start=1):
            value = float(w.weight.detach()[w.index(dim, c, expert)])
            out.append(
                {
                    "dim": dim,
                    "role": role,
                    "block": block,
                    "expert": expert,
                    "n_tokens": len(js),
                    "positions": ", ".join(str(p) for p in sorted({toks[j][1] for j in js})[:5]),
                    "channel": c,
                    "channel_rank": rank,
                    "product": float(products[c]),
                    "share": float(products[c]) / total if total else float("nan"),
                    "input_value": float(x[:, c].mean()),
                    "input_ratio": float((x[:, c].abs() / median).mean()),
                    "param": name,
                    "orientation": w.orientation,
                    "coordinate": str(list(w.index(dim, c, expert))),
                    "weight": value,
                    "abs_rank": _rank(matrix, value),
                    "n_weights": matrix.numel(),
                    "primary": rank == 1,
                }
            )
    return out


# ---------------------------------------------------------------- weight interventions
@dataclass
class Edit:
    """One edit of a weight: weight[index] = value (index may hold slices: a whole channel)."""

    weight: nn.Parameter
    index: tuple
    value: float = 0.0


@dataclass
class Context:
    """What a weight intervention may need, and what it did. recorded: the baseline's massive
    entries at each writing block, per forward pass ([entries, 3] batch, position, dim; and the
    mean each takes), in order; edited: the coordinates it edited; changed_weights, entries_changed."""

    generator: torch.Generator
    rank_band: int = RANK_BAND
    recorded: list = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    changed_weights: int = 0
    entries_changed: int = 0
    abs_sum: float = (
        0.0  # |a| summed over the recorded entries at the writing blocks' output (before any activation edit)
    )
    abs_count: int = 0

    @property
    def massive_abs(self) -> float:
        """Mean |a| of the recorded massive entries at their writing block's output, under the intervention."""
        return self.abs_sum / self.abs_count if self.abs_count else float("nan")


def _sw(o: Origins):
    for _, r in o.primary.iterrows():
        expert = None if pd.isna(r["expert"]) else int(r["expert"])
        yield o.weights[int(r["block"])], int(r["dim"]), int(r["channel"]), expert, int(r["abs_rank"])


@weight_intervention("none")
def _none(o: Origins, ctx: Context) -> list[Edit]:
    return []


@weight_intervention("zero_super_weight")
def zero_super_weight(o: Origins, ctx: Context) -> list[Edit]:
    return [Edit(w.weight, w.index(d, c, e)) for w, d, c, e, _ in _sw(o)]


@weight_intervention("zero_channel")
def zero_channel(o: Origins, ctx: Context) -> list[Edit]:
    return [Edit(w.weight, w.index(slice(None), c, e)) for w, d, c, e, _ in _sw(o)]


@weight_intervention("random_weight")
def random_weight(o: Origins, ctx: Context) -> list[Edit]:
    edits = []
    for w, d, c, e, rank in _sw(o):
        matrix = w.matrix(e).float().cpu()
        avoid = {c2 for w2, _, c2, e2, _ in _sw(o) if w2 is w and e2 == e}  # the super weights' input channels
        order = torch.argsort(matrix.abs().flatten(), descending=True, stable=True)
        lo, hi = max(0, rank - 1 - ctx.rank_band), rank + ctx.rank_band
        band = [int(i) for i in order[lo:hi] if int(i) % matrix.shape[1] not in avoid]
        if not band:
            raise MassiveError(
                f"random_weight: no weight of the down projection ranks {lo + 1}..{hi} outside the super weights' channels"
            )
        pick = band[int(torch.randint(len(band), (1,), generator=ctx.generator))]
        edits.append(Edit(w.weight, w.index(pick // matrix.shape[1], pick % matrix.shape[1], e)))
    return edits


weight_intervention("zero_super_weight_restore", activation="restore")(zero_super_weight)
WEIGHT_INTERVENTIONS["zero_activation"] = _none
ACTIVATION["zero_activation"] = "zero"
INTERVENTIONS = list(KINDS)  # the baseline, the super weight, the controls, the factorial


def lookup(name: str) -> Callable:
    if name not in WEIGHT_INTERVENTIONS:
        raise MassiveError(f"unknown weight intervention {name!r} (known: {', '.join(WEIGHT_INTERVENTIONS)})")
    return WEIGHT_INTERVENTIONS[name]


@contextmanager
def edited(edits: Sequence[Edit]) -> Iterator[int]:
    """Apply `edits` for the duration of the block; every edited entry is restored bit for bit on exit,
    exception or not. Yields the number of entries edited."""
    saved = []
    try:
        with torch.no_grad():
            for e in edits:
                saved.append((e, e.weight.data[e.index].clone()))
                e.weight.data[e.index] = e.value
        yield sum(old.numel() for _, old in saved)
    finally:
        with torch.no_grad():
            for e, old in reversed(saved):
                e.weight.data[e.index] = old


def _roles(ids: torch.Tensor, roles_of) -> torch.Tensor:
    if roles_of is not None:
        return roles_of(ids.cpu())
    r = torch.full(ids.shape, ROLES.index("other"), dtype=torch.long)
    r[:, 0] = ROLES.index("first")
    return r


@contextmanager
def recording(model: nn.Module, o: Origins, ctx: Context, roles_of=None) -> Iterator[Context]:
    """Record, per forward pass in the block, the massive entries of each writing block's output
    (the detection's rule on the dims written there) and the mean each takes: what the factorial
    interventions edit later, pass by pass in the same order."""
    from massive.intervene.interventions import massive_mask

    ctx.recorded.clear()
    state = {}
    dims = {}
    for (dim, _), block in o.writers.items():
        dims.setdefault(block, []).append(dim)

    def tokens(x, _name):
        state["roles"] = _roles(x, roles_of)
        ctx.recorded.append({})

    def record(h, name):
        block = hooks.layer_of(name)
        m = massive_mask(h, dims[block], *thresholds(o))
        where = m.nonzero().cpu()
        means = [
            o.means.get((block, int(dd), ROLES[int(state["roles"][b, t])]), o.means.get((block, int(dd), "any"), 0.0))
            for b, t, dd in where.tolist()
        ]
        ctx.recorded[-1][block] = (where, torch.tensor(means, dtype=torch.float32))
        ctx.abs_sum += float(h.detach()[m].abs().to(torch.float32).sum())
        ctx.abs_count += len(where)

    with hooks.hooked(model, [("hook_tokens", tokens)] + [(hooks.resid_post(b), record) for b in dims]):
        yield ctx


@contextmanager
def ablated(model: nn.Module, o: Origins, name: str, ctx: Context) -> Iterator[Context]:
    """Weight intervention `name` on `model` for the duration of the block: its weight edits
    (restored exactly on exit) and, for the factorial ones, the massive activation at its writing
    block's output set to its mean ("restore") or to 0 ("zero") at the entries `recording` saw,
    pass by pass. Yields ctx (edited, changed_weights, entries_changed)."""
    edits = lookup(name)(o, ctx)
    ctx.edited = sorted({str([x if isinstance(x, int) else ":" for x in e.index]) for e in edits})
    kind = ACTIVATION.get(name)
    fns = []
    if kind and not ctx.recorded and o.writers:
        raise MassiveError(f"weight intervention {name!r} edits the positions the baseline recorded: run 'none' first")
    if ctx.recorded:
        calls = {"n": -1}

        def tokens(_x, _name):
            calls["n"] += 1

        def edit(h, hook):
            rec = ctx.recorded[calls["n"] % len(ctx.recorded)].get(hooks.layer_of(hook))
            if rec is None or len(rec[0]) == 0:
                return None
            where, means = rec
            b, t, d = (where[:, i].to(h.device) for i in range(3))
            ctx.abs_sum += float(h.detach()[b, t, d].abs().to(torch.float32).sum())
            ctx.abs_count += len(where)
            if kind:
                h[b, t, d] = (
                    means.to(h.device, h.dtype)
                    if kind == "restore"
                    else torch.zeros((), device=h.device, dtype=h.dtype)
                )
                ctx.entries_changed += len(where)

        fns = [("hook_tokens", tokens)] + [(hooks.resid_post(b), edit) for b in sorted(set(o.writers.values()))]
    with edited(edits) as count, hooks.hooked(model, fns):
        ctx.changed_weights = count
        yield ctx


def perplexities(
    model: nn.Module,
    o: Origins,
    chunks: torch.Tensor,
    names: Sequence[str] = tuple(INTERVENTIONS),
    seed: int = 1,
    rank_band: int = RANK_BAND,
    batch_size: int = 4,
    device=None,
    roles_of=None,
    resamples: int = RESAMPLES,
    harmful_factor: float = HARMFUL,
    harmless_factor: float = HARMLESS,
    where: str = "origins",
) -> pd.DataFrame:
    """Perplexity of `chunks` under each weight intervention of `names` ("none" first: the baseline,
    which also records the factorial's positions), compared with massive.compare (paired bootstrap
    over the chunks, `resamples`, `seed`). One row per intervention: intervention, kind, edited
    (coordinates), weights_changed, entries_changed, massive_abs (mean |a| of the baseline's
    massive entries at their writing block's output under the intervention, before an activation
    edit), then massive.intervene.comparison.COLUMNS (ratio to none, its interval, verdict)."""
    if not names or names[0] != "none":
        raise MassiveError(f"the weight interventions must start with 'none' (the baseline), not {list(names)[:1]}")
    for name in names:
        lookup(name)
    recorded: list = []

    def condition(name: str):
        @contextmanager
        def applied():
            ctx = Context(generator=torch.Generator().manual_seed(seed), rank_band=rank_band)
            if name == "none":
                with recording(model, o, ctx, roles_of):
                    yield ctx
                recorded[:] = ctx.recorded
            else:
                ctx.recorded = recorded
                with ablated(model, o, name, ctx):
                    yield ctx

        return applied

    cmp = compare(
        model,
        chunks,
        {name: condition(name) for name in names},
        baseline="none",
        resamples=resamples,
        seed=seed,
        harmful_factor=harmful_factor,
        harmless_factor=harmless_factor,
        batch_size=batch_size,
        device=device,
        where=f"{where}: weight intervention",
    )
    info = pd.DataFrame(
        [
            {
                "intervention": name,
                "kind": KINDS.get(name, "other"),
                "edited": "; ".join(c.edited),
                "weights_changed": c.changed_weights,
                "entries_changed": c.entries_changed,
                "massive_abs": c.massive_abs,
            }
            for name, c in ((n, cmp.contexts[n]) for n in names)
        ]
    )
    return pd.concat([info, cmp.table[COLUMNS]], axis=1)
