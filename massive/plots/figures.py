"""Every figure of the project: tables (and tensors) in, a matplotlib `Figure` out.

Nothing here reads or writes a file or touches pyplot's global state: each function builds a
`Figure` on its own Agg canvas, so it works the same in a script, a worker process or a notebook
(where a returned figure displays itself). Saving is the caller's job (`fig.savefig(path)`).

    >>> import pandas as pd
    >>> from massive.plots import figures as plots
    >>> stats = pd.DataFrame({"layer": [0, 1], "top1_abs": [3.0, 900.0], "top2_abs": [2.0, 80.0],
    ...                       "top3_abs": [1.5, 40.0], "median_abs": [0.4, 0.5]})
    >>> fig = plots.layerwise(stats, "tiny on news")
    >>> fig.savefig("layerwise.png", dpi=150, bbox_inches="tight")  # doctest: +SKIP

Figures of one model and corpus (rule figures): `layerwise`, `prompt_3d`, `token_map` (its
data: `token_grid`); of a sweep's ablation: `ablation`, `regrowth`; of attention: `heatmaps`, `sink_curve`; of the
retraining comparison: `train_emergence`, `train_layerwise`; of the origins of massive
activations: `contributions`; of what they cost at inference: `headroom`, `quantization`. The report's
interactive versions (Plotly) are in massive.plots.interactive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def new_figure(figsize: tuple[float, float]) -> Figure:
    """An empty figure on its own Agg canvas (no pyplot, nothing to close).

    >>> fig = new_figure((4, 3)); ax = fig.subplots()
    """
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _texts(fig: Figure) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def min_font_px(fig: Figure, dpi: float) -> float | None:
    """The smallest font of the figure's visible text (tick labels included: drawn first), in pixels of
    the PNG saved at `dpi` (None: no text).

        >>> fig = new_figure((4, 3)); ax = fig.subplots(); _ = ax.set_title("t", fontsize=9)
        >>> ax.tick_params(labelsize=12); round(min_font_px(fig, 80), 1)
        10.0
    """
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in _texts(fig)]
    return min(sizes) * dpi / 72 if sizes else None


def legible(fig: Figure, dpi: float, shown_px: float = 1000, min_px: float = 10.5) -> Figure:
    """Raise every font of `fig` that would be smaller than `min_px` pixels when the PNG saved at `dpi`
    is shown at most `shown_px` wide (a report page shrinks a wider image to fit), then lay it out again.

        >>> fig = legible(new_figure((20, 3)), dpi=100)  # shown at 1000 px: half size, so fonts of >= 21 px in the PNG
    """
    scale = min(1.0, shown_px / (fig.get_figwidth() * dpi))
    floor = min_px / scale * 72 / dpi  # points
    fig.canvas.draw()  # tick labels get their text when drawn
    for ax in fig.axes:  # tick labels: through tick_params, so ticks made at the next draw get the size too
        for name in ("x", "y", "z"):
            axis = getattr(ax, f"{name}axis", None)
            labels = [
                lab for lab in (axis.get_ticklabels(which="both") if axis is not None else []) if lab.get_text().strip()
            ]
            if labels and min(lab.get_fontsize() for lab in labels) < floor:
                ax.tick_params(axis=name, which="both", labelsize=floor)
    for text in _texts(fig):
        if text.get_fontsize() < floor:
            text.set_fontsize(floor)
    if fig.get_layout_engine() is None:
        try:
            fig.tight_layout()
        except (ValueError, RuntimeError):  # a 3-D axes or a colorbar it cannot place: keep the layout
            pass
    return fig


# ---------------------------------------------------------------- one model on one corpus
def layerwise(layer_stats: pd.DataFrame, title: str) -> Figure:
    """Top-1, top-2, top-3 and median |a| per layer, averaged over sequences, log axis (the paper's Fig. 2).

    `layer_stats`: capture's layer_stats table (layer, top1_abs, top2_abs, top3_abs, median_abs, ...).

        >>> fig = layerwise(read_table("results/m/c/capture/layer_stats.parquet"), "m on c")  # doctest: +SKIP
    """
    agg = layer_stats.groupby("layer")[["top1_abs", "top2_abs", "top3_abs", "median_abs"]].mean()
    fig = new_figure((6, 3.6))
    ax = fig.subplots()
    for col, label, style in [
        ("top1_abs", "top 1", "o-"),
        ("top2_abs", "top 2", "s-"),
        ("top3_abs", "top 3", "^-"),
        ("median_abs", "median", "x--"),
    ]:
        ax.plot(agg.index, agg[col], style, ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (blocks.L.hook_resid_post)")
    ax.set_ylabel("|a|")
    ax.set_title(title)
    ax.legend(frameon=False, ncol=4, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def prompt_3d(prompt: pd.DataFrame, layer: int, title: str) -> Figure:
    """|a| over token x feature dim at one layer (the paper's Fig. 1), the three largest entries named.

    `prompt`: capture's prompt table (layer, position, token, values: one vector per token).

        >>> fig = prompt_3d(read_table("results/m/c/capture/prompt.parquet"), 15, "m: 'Summer is warm.'")  # doctest: +SKIP
    """
    rows = prompt[prompt["layer"] == layer].sort_values("position")
    values = np.abs(np.stack(rows["values"].to_numpy()))  # [tokens, dims]
    n_tok, n_dim = values.shape
    fig = new_figure((7, 4.5))
    ax = fig.add_subplot(projection="3d")
    dims = np.arange(n_dim)
    for t in range(n_tok):
        ax.plot(dims, np.full(n_dim, t), values[t], lw=0.8)
    top = np.dstack(np.unravel_index(np.argsort(values.ravel())[::-1][:3], values.shape))[0]
    for t, d in top:
        ax.text(d, t, values[t, d], f"dim {d}", fontsize=7)
    gap = max(
        1, n_tok // 7
    )  # ticks at least this many tokens apart (the largest entries' tokens first): labels do not overlap
    ticks = []
    for t in [
        *dict.fromkeys(top[:, 0].tolist()),
        *np.linspace(0, n_tok - 1, min(n_tok, 8)).round().astype(int).tolist(),
    ]:
        if all(abs(t - k) >= gap for k in ticks):
            ticks.append(int(t))
    ticks = sorted(ticks)
    labels = rows["token"].tolist()
    ax.set_yticks(ticks)
    ax.set_yticklabels([repr(labels[t])[1:-1] for t in ticks], fontsize=7)
    ax.set_xlabel("feature dim")
    ax.set_zlabel("|a|")
    ax.set_title(f"{title}\nblocks.{layer}.hook_resid_post", fontsize=9)
    ax.view_init(elev=25, azim=-60)
    return fig


def token_grid(prompt: pd.DataFrame, shown: int = 40) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, str]:
    """The token map's data: max |a| over dims and the dim where it is, per token (rows, by
    position) and layer (columns); the tokens; and a note of which tokens are shown. With more
    than `shown` tokens (a ViT's patches), the first 6 (CLS, registers) and the largest others.

        >>> p = pd.DataFrame([{"layer": 0, "position": t, "token": f"t{t}", "values": np.array([t, -2.0 * t])} for t in range(3)])
        >>> grid, argmax, tokens, note = token_grid(p)
        >>> grid[0].tolist(), argmax[0].tolist(), note
        ([0.0, 2.0, 4.0], [0, 1, 1], '')
    """
    a = np.abs(np.stack(prompt["values"].to_numpy()))
    flat = prompt.assign(max_abs=a.max(axis=1), argmax=a.argmax(axis=1))
    grid = flat.pivot(index="position", columns="layer", values="max_abs")
    argmax = flat.pivot(index="position", columns="layer", values="argmax")
    tokens = prompt[prompt["layer"] == prompt["layer"].min()].set_index("position")["token"]
    note, n_tok = "", len(grid)
    if n_tok > shown:  # a ViT's hundreds of patches: the first tokens (CLS, registers) and the largest others
        first = np.arange(6)
        largest = [p for p in np.argsort(grid.max(axis=1).to_numpy())[::-1] if p not in first][: shown - len(first)]
        keep = np.sort(np.r_[first, largest])
        grid, argmax, note = (
            grid.iloc[keep],
            argmax.iloc[keep],
            f"the first 6 and the {shown - 6} largest of {n_tok} tokens",
        )
    return grid, argmax, tokens.loc[grid.index], note


def token_map(prompt: pd.DataFrame, title: str, shown: int = 40) -> Figure:
    """Max |a| over dims for every token (rows) after every block (columns), log color.

    With more than `shown` tokens (a ViT's patches), the first 6 (CLS, registers) and the largest others.

        >>> fig = token_map(read_table("results/m/c/capture/prompt.parquet"), "m: 'Summer is warm.'")  # doctest: +SKIP
    """
    grid, _, tokens, note = token_grid(prompt, shown)
    title = f"{title}\n{note}" if note else title
    fig = new_figure((min(12, 3 + 0.25 * grid.shape[1]), 1.5 + 0.18 * len(grid)))
    ax = fig.subplots()
    image = ax.imshow(np.log10(grid.to_numpy().clip(min=1e-6)), aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_yticks(range(len(grid)))
    ax.set_yticklabels([repr(t)[1:-1] for t in tokens], fontsize=6)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_xticklabels(grid.columns, fontsize=6)
    ax.set_xlabel("layer (blocks.L.hook_resid_post)")
    ax.set_ylabel("token")
    fig.colorbar(image, ax=ax, label="log10 max |a| over dims")
    ax.set_title(title, fontsize=9)
    return fig


# ---------------------------------------------------------------- a sweep's ablation
CONTROLS = ("random_zero", "top_zero", "same_token_zero")  # the ablation's controls, marked as such in the forest plot


def ablation(table: pd.DataFrame) -> Figure:
    """A forest plot of the ablation: per (model, corpus, layers) a panel row, per intervention its
    perplexity ratio to `none` (a dot) with its 95% interval (a bar, from ratio_lo and ratio_hi when the
    table has them), on a log axis with 1 (no change) marked; controls (random_zero, top_zero,
    same_token_zero) drawn hollow and grey, the massive interventions filled. Without ratio the
    ratio is computed from the perplexities.

        >>> t = pd.DataFrame({"model": "m", "corpus": "c", "layers": "emerge", "intervention": ["none", "zero", "random_zero"],
        ...                   "perplexity": [20.0, 4000.0, 20.2]})
        >>> fig = ablation(t)
    """
    t = table.copy()
    if "ratio" not in t:
        base = t[t["intervention"] == "none"].set_index(["model", "corpus", "layers"])["perplexity"]
        t["ratio"] = [
            p / base.get((m, c, la), np.nan)
            for m, c, la, p in zip(t["model"], t["corpus"], t["layers"], t["perplexity"])
        ]
    t = t[t["intervention"] != "none"]
    runs = list(t.groupby(["model", "corpus", "layers"], sort=False))
    order = list(dict.fromkeys(t["intervention"]))
    rows = [(key, name) for key, g in runs for name in order if name in set(g["intervention"])]
    fig = new_figure((7.5, 0.9 + 0.32 * (len(rows) + len(runs))))
    ax = fig.subplots()
    y, labels, ticks, y0 = 0.0, [], [], []
    for key, g in runs:
        y0.append((y, " / ".join(map(str, key))))
        y += 0.8
        for name in order:
            r = g[g["intervention"] == name]
            if r.empty:
                continue
            r = r.iloc[0]
            control = name in CONTROLS
            color = "0.45" if control else ("tab:red" if name == "zero" else "tab:blue")
            if {"ratio_lo", "ratio_hi"} <= set(r.index) and pd.notna(r["ratio_lo"]):
                ax.plot([r["ratio_lo"], r["ratio_hi"]], [y, y], color=color, lw=2, solid_capstyle="butt")
            ax.plot([r["ratio"]], [y], "o", ms=6, color=color, mfc="white" if control else color)
            v = r["ratio"]
            ax.annotate(
                f"×{v:.3g}" if v < 100 else f"×{round(v, 2 - int(np.floor(np.log10(v)))):,.0f}",  # 3 significant digits
                (r["ratio"], y),
                xytext=(6, 3),
                textcoords="offset points",
                fontsize=9,
                color=color,
            )
            labels.append(f"{name} (control)" if control else name)
            ticks.append(y)
            y += 1
        y += 0.4
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(ticks, labels)
    for y_, title in y0:
        ax.text(0.0, y_ + 0.2, title, transform=ax.get_yaxis_transform(), fontsize=10, fontweight="bold", va="center")
    ax.set_ylim(y - 0.6, -0.6)
    lo, hi = (
        np.nanmin(t[[c for c in ("ratio_lo", "ratio") if c in t]].to_numpy()),
        np.nanmax(t[[c for c in ("ratio_hi", "ratio") if c in t]].to_numpy()),
    )
    ax.set_xlim(min(lo, 0.9) / 1.3, max(hi, 1.1) * 3)
    ax.set_xlabel("perplexity / none (×), 95% interval; log axis; dashed: no change")
    ax.grid(alpha=0.3, axis="x", which="major")
    fig.tight_layout()
    return fig


def regrowth(table: pd.DataFrame, title: str) -> Figure:
    """The targeted massive entries downstream of an intervention (massive.measure.regrowth): their mean
    |a| per block under none, zero and mean, one panel per corpus, one line style per layers value
    (none drawn once), with the block's top-1 and median |a| without intervention in gray; a
    symmetric-log axis, so that zeroed entries show at 0. `table`: columns corpus, layers,
    intervention, block, target_abs, top1_abs, median_abs.

        >>> t = pd.DataFrame({"corpus": "c", "layers": "emerge", "intervention": ["none", "none", "zero", "zero"],
        ...                   "block": [1, 2, 1, 2], "target_abs": [900.0, 950.0, 0.0, 400.0],
        ...                   "top1_abs": [900.0, 950.0, 5.0, 400.0], "median_abs": [0.5, 0.5, 0.5, 0.6]})
        >>> fig = regrowth(t, "m")
    """
    corpora = list(dict.fromkeys(table["corpus"])) if len(table) else []
    fig = new_figure((5.5 * max(1, len(corpora)), 3.8))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(corpora)), squeeze=False)[0])
    colors, styles = {"none": "k", "zero": "tab:red", "mean": "tab:green"}, ["-", "--", ":", "-."]
    for ax, corpus in zip(axes, corpora):
        g = table[table["corpus"] == corpus]
        layers = list(dict.fromkeys(g["layers"]))
        floor = float(g["median_abs"].min())
        for i, lay in enumerate(layers):
            for name in ("none", "zero", "mean"):
                r = g[(g["layers"] == lay) & (g["intervention"] == name)].sort_values("block")
                if r.empty or (name == "none" and i > 0):
                    continue
                ax.plot(
                    r["block"],
                    r["target_abs"],
                    styles[i % 4],
                    color=colors[name],
                    marker="o",
                    ms=2.5,
                    label=f"{name}" + ("" if name == "none" else f" ({lay})"),
                )
                if name == "none":
                    ax.plot(r["block"], r["top1_abs"], "-", color="0.6", lw=0.8, label="top-1 |a| (none)")
                    ax.plot(r["block"], r["median_abs"], "--", color="0.6", lw=0.8, label="median |a| (none)")
        ax.set_yscale("symlog", linthresh=max(floor, 1e-3))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("block (blocks.L.hook_resid_post)")
        ax.set_title(f"{title} on {corpus}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=7)
    axes[0].set_ylabel("mean |a| of the targeted entries")
    if not corpora:
        axes[0].text(0.5, 0.5, "nothing targeted", ha="center", va="center", transform=axes[0].transAxes)
    return fig


# ---------------------------------------------------------------- origins
def contributions(table: pd.DataFrame, title: str) -> Figure:
    """Each block's contribution to each massive activation (dim at its token role): stacked bars
    of the attention and MLP output (and what they leave unexplained) in that dim, per block;
    `table`: massive.measure.origins.Origins.contributions (dim, role, block, part, contribution, writes).

        >>> t = pd.DataFrame({"dim": 7, "role": "first", "block": [0, 0, 1, 1], "part": ["attn", "mlp"] * 2,
        ...                   "contribution": [0.1, 0.2, 1.0, 900.0], "writes": [False, False, False, True]})
        >>> fig = contributions(t, "m on c")
    """
    acts = list(dict.fromkeys(zip(table["dim"], table["role"]))) if len(table) else []
    fig = new_figure((7, 2.6 * max(1, len(acts))))
    axes = np.atleast_1d(fig.subplots(max(1, len(acts)), 1, squeeze=False)[:, 0])
    colors = {"attn": "tab:blue", "mlp": "tab:orange", "other": "tab:gray"}
    for ax, (dim, role) in zip(axes, acts):
        g = table[(table["dim"] == dim) & (table["role"] == role)]
        pivot = g.pivot_table(index="block", columns="part", values="contribution", aggfunc="sum").fillna(0.0)
        pos, neg = np.zeros(len(pivot)), np.zeros(len(pivot))
        for part in [p for p in ("attn", "mlp", "other") if p in pivot]:
            v = pivot[part].to_numpy()
            base = np.where(v >= 0, pos, neg)
            ax.bar(pivot.index, v, bottom=base, color=colors[part], label=part, width=0.8)
            pos, neg = pos + np.clip(v, 0, None), neg + np.clip(v, None, 0)
        tops = dict(zip(pivot.index, pos))
        for _, w in g[g["writes"].astype(bool)].iterrows():  # above its stack, with room kept for it (margins)
            ax.annotate(
                f"{w['part']} writes it",
                (w["block"], tops.get(w["block"], w["contribution"])),
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=9,
                ha="center",
                va="bottom",
            )
        ax.margins(y=0.25)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"dim {dim} ({role})")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(frameon=False, fontsize=7, ncol=3)
    if not acts:
        axes[0].text(0.5, 0.5, "no massive activation", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("block (blocks.L.hook_attn_out, blocks.L.hook_mlp_out)")
    axes[0].set_title(title)
    return fig


# ---------------------------------------------------------------- inference
FORMAT_COLORS = {"float16": "tab:red", "bfloat16": "tab:purple"}


def headroom(table: pd.DataFrame, title: str) -> Figure:
    """Max |a| per block against the largest finite value of each format (left, log axis; the
    largest |a| measured by the run in that format beside it, a cross at its first block with inf or
    NaN), and each format's spacing at that magnitude (right). `table`: massive.inference.precision.headroom.

        >>> t = pd.DataFrame({"layer": [0, 1] * 2, "format": ["float16"] * 2 + ["bfloat16"] * 2,
        ...                   "max_abs": [10.0, 24000.0] * 2, "limit": [65504.0] * 2 + [3.39e38] * 2,
        ...                   "spacing": [0.0078, 16.0, 0.0625, 128.0], "measured_max_abs": [10.0, 24000.0, 10.0, 24064.0],
        ...                   "first_nonfinite": [False] * 4})
        >>> fig = headroom(t, "m on c")
    """
    fig = new_figure((11, 3.8))
    left, right = fig.subplots(1, 2)
    ref = table.drop_duplicates("layer").sort_values("layer")
    left.plot(ref["layer"], ref["max_abs"], "o-", ms=3, color="k", label="max |a| (reference run)")
    top = 30 * max(
        float(ref["max_abs"].max()), min(float(v) for v in table["limit"])
    )  # a limit far above: named, not drawn
    for fmt, g in table.groupby("format", sort=False):
        g = g.sort_values("layer")
        color = FORMAT_COLORS.get(fmt, "tab:gray")
        lim = float(g["limit"].iloc[0])
        if lim <= top:
            left.axhline(lim, color=color, ls="--", lw=1, label=f"{fmt} limit {lim:,.6g}")
        else:
            left.plot(
                [],
                [],
                ls="--",
                color=color,
                label=f"{fmt} limit {lim:.3g} (far above: {lim / float(ref['max_abs'].max()):.2g}x)",
            )
        measured = pd.to_numeric(g["measured_max_abs"], errors="coerce")
        if measured.notna().any():
            left.plot(g["layer"], measured, "x:", ms=3, color=color, lw=0.8, label=f"max finite |a|, run in {fmt}")
        first = g[g["first_nonfinite"].fillna(False).astype(bool)]
        for _, r in first.iterrows():
            left.plot(
                [r["layer"]],
                [r["max_abs"]],
                "X",
                ms=10,
                color=color,
                label=f"first inf/NaN in {fmt}: block {int(r['layer'])}",
            )
        right.plot(g["layer"], g["spacing"], "o-", ms=3, color=color, label=f"{fmt} spacing at max |a|")
    left.set_yscale("log")
    left.set_ylim(top=top)
    left.set_xlabel("block (blocks.L.hook_resid_post)")
    left.set_ylabel("|a|")
    left.set_title(title, fontsize=9)
    left.legend(frameon=False, fontsize=6)
    left.grid(alpha=0.3, which="both")
    right.set_yscale("log")
    right.set_xlabel("block")
    right.set_ylabel("gap to the next value of the format")
    right.set_title("rounding step at the largest |a|", fontsize=9)
    right.legend(frameon=False, fontsize=7)
    right.grid(alpha=0.3, which="both")
    return fig


def quantization(table: pd.DataFrame, title: str) -> Figure:
    """Perplexity per quantization configuration (one row per scheme, bars per `massive` arm: as
    is, mean), log axis; a scheme whose loss was not finite is marked "inf/NaN". `table`:
    massive.inference.quantize.perplexities (scheme, massive, perplexity), with the rule's dtype rows.

        >>> t = pd.DataFrame({"scheme": ["float", "a8_per_tensor", "float16"], "massive": "as is",
        ...                   "perplexity": [20.0, 45.0, None]})
        >>> fig = quantization(t, "m on c")
    """
    schemes = list(dict.fromkeys(table["scheme"]))
    arms = list(dict.fromkeys(table["massive"]))
    fig = new_figure((7, 0.35 * len(schemes) * max(1, len(arms)) + 1.2))
    ax = fig.subplots()
    height = 0.8 / max(1, len(arms))
    finite = pd.to_numeric(table["perplexity"], errors="coerce")
    top = float(finite.max()) if finite.notna().any() else 1.0
    for j, arm in enumerate(arms):
        g = table[table["massive"] == arm].set_index("scheme")
        y = np.array([i + j * height for i in range(len(schemes))])
        vals = [pd.to_numeric(g["perplexity"].get(s), errors="coerce") if s in g.index else np.nan for s in schemes]
        ax.barh(y, [v if pd.notna(v) else 0 for v in vals], height=height, label=f"massive {arm}")
        for yy, s, v in zip(y, schemes, vals):
            if s in g.index and pd.isna(v):
                ax.text(1.0, yy, " inf/NaN", va="center", fontsize=7, color="tab:red")
            elif pd.notna(v):
                ax.text(v, yy, f" {v:,.4g}", va="center", fontsize=6)
    base = table[(table["scheme"] == "float") & (table["massive"] == arms[0])]["perplexity"] if arms else []
    if len(base):
        ax.axvline(float(base.iloc[0]), color="k", lw=0.8, ls="--", label="float")
    ax.set_yticks([i + height * (len(arms) - 1) / 2 for i in range(len(schemes))], schemes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(1.0, top * 5)
    ax.set_xlabel("perplexity (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3, axis="x", which="both")
    return fig


# ---------------------------------------------------------------- attention
def heatmaps(kept: dict, layers: list[int], tokens: list[str], emerge: int | None, title: str) -> Figure:
    """Head-mean attention logits of one prompt at a few layers (the paper's Fig. 5).

    `kept[layer]["logits"]`: a [batch, heads, queries, keys] tensor, -inf where masked (shown blank).

        >>> logits = torch.randn(1, 2, 3, 3).tril().masked_fill(torch.ones(3, 3).triu(1).bool(), float("-inf"))
        >>> fig = heatmaps({0: {"logits": logits}}, [0], ["a", "b", "c"], None, "m: 'abc'")
    """
    fig = new_figure((3.6 * len(layers), 3.4))
    axes = fig.subplots(1, len(layers), squeeze=False)
    labels = [repr(t)[1:-1] for t in tokens]
    for ax, layer in zip(axes[0], layers):
        lg = kept[layer]["logits"][0].mean(0)  # head mean of the visible logits [queries, keys]
        lg = torch.where(torch.isfinite(lg), lg, torch.tensor(float("nan"))).numpy()
        im = ax.imshow(lg, cmap="coolwarm", interpolation="nearest")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        held = "yes" if emerge is not None and layer > emerge else "no"
        ax.set_title(f"layer {layer} (massive in input: {held})", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{title}: attention logits, mean over heads", fontsize=9)
    fig.tight_layout()
    return fig


def sink_curve(layers: pd.DataFrame, emerge: int | None, concentration: int | None, title: str) -> Figure:
    """Per-layer attention on the first and the massive tokens (and the Sink_1 share), beside top-1 / median |a|.

    `layers`: the attention rule's layers table (layer, mass_first, mass_massive, sink_1_share[, top1_over_median]).

        >>> t = pd.DataFrame({"layer": [0, 1], "mass_first": [0.2, 0.9], "mass_massive": [0.2, 0.9],
        ...                   "sink_1_share": [0.0, 1.0], "top1_over_median": [3.0, 2000.0]})
        >>> fig = sink_curve(t, emerge=0, concentration=1, title="m on c")
    """
    fig = new_figure((10, 3.4))
    a, b = fig.subplots(1, 2)
    a.plot(layers["layer"], layers["mass_first"], "o-", ms=3, label="on first token")
    a.plot(layers["layer"], layers["mass_massive"], "s--", ms=3, label="on massive tokens")
    a.plot(layers["layer"], layers["sink_1_share"], "^:", ms=3, label="Sink_1 share of heads")
    if "mass_sink" in layers and (layers["mass_sink"] > 0).any():
        a.plot(layers["layer"], layers["mass_sink"], "d-.", ms=3, label="on the learned sink")
    a.set_ylim(-0.02, 1.02)
    a.set_xlabel("layer (attention of block L)")
    a.set_ylabel("mean attention (queries >= 1)")
    if concentration is not None:
        a.axvline(concentration, color="grey", ls="--", lw=0.8, label=f"concentration (layer {concentration})")
    if emerge is not None:
        a.axvline(emerge + 0.5, color="C3", ls=":", lw=0.8, label=f"massive from block {emerge}'s output")
    a.legend(frameon=False, fontsize=7)
    a.grid(alpha=0.3)
    if "top1_over_median" in layers:
        b.plot(layers["layer"], layers["top1_over_median"], "o-", ms=3, color="C3")
        b.set_yscale("log")
    b.set_xlabel("layer (blocks.L.hook_resid_post)")
    b.set_ylabel("top-1 |a| / median |a|")
    if emerge is not None:
        b.axvline(emerge, color="C3", ls=":", lw=0.8)
    b.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- retraining comparison
def train_emergence(histories: dict[str, pd.DataFrame]) -> Figure:
    """Against the training step, per variant, the two halves of the paper's claim side by side: the
    attention sink (block 0's attention on the start token, solid, and on the bias slot, dashed) and
    the start token's magnitude (largest |a| / median over layers; share of sequences whose top-1
    entry it is), then the start token's value-state norm over the median token's in block 0.

    `histories[variant]`: its metrics table (step, layer, first_attn, slot_attn, start_over_median,
    top1_at_start, start_value_ratio).

        >>> m = pd.DataFrame({"step": [0, 0, 10, 10], "layer": [0, 1, 0, 1], "first_attn": [0.1, 0.1, 0.9, 0.5],
        ...                   "slot_attn": [0.0] * 4, "start_over_median": [2.0, 3.0, 40.0, 90.0],
        ...                   "top1_at_start": [0.0, 0.0, 1.0, 1.0], "start_value_ratio": [1.0, 1.0, 0.2, 0.5]})
        >>> fig = train_emergence({"default": m})
    """
    fig = new_figure((10, 7))
    axes = fig.subplots(2, 2).ravel()
    for i, (variant, m) in enumerate(histories.items()):
        color = f"C{i}"
        b0 = m[m["layer"] == 0].sort_values("step")
        per_step = m.groupby("step").agg(start=("start_over_median", "max"), top1=("top1_at_start", "max"))
        axes[0].plot(b0["step"], b0["first_attn"], marker=".", color=color, label=f"{variant}: start token")
        if b0["slot_attn"].max() > 0:
            axes[0].plot(
                b0["step"], b0["slot_attn"], marker=".", color=color, linestyle="--", label=f"{variant}: bias slot"
            )
        axes[1].plot(per_step.index, per_step["start"], marker=".", color=color, label=variant)
        axes[2].plot(per_step.index, per_step["top1"], marker=".", color=color, label=variant)
        axes[3].plot(b0["step"], b0["start_value_ratio"], marker=".", color=color, label=variant)
    axes[0].set(title="sink: block 0's attention\non the start token / slot", xlabel="step", ylim=(-0.05, 1.05))
    axes[1].set(title="start token: largest |a| / median\n(max over layers)", xlabel="step", yscale="log")
    axes[2].set(title="share of sequences whose top-1 |a|\nis the start token", xlabel="step", ylim=(-0.05, 1.05))
    axes[3].set(title="start token's value norm / median\ntoken's (block 0)", xlabel="step", yscale="log")
    axes[0].legend(fontsize="small")
    axes[1].legend()
    fig.tight_layout()
    return fig


def train_layerwise(finals: dict[str, list[dict]]) -> Figure:
    """Per variant at the final step: top-1/median and the start token's largest |a| / median after each block.

    `finals[variant]`: one dict per layer with layer, top1_over_median, start_over_median.

        >>> fig = train_layerwise({"softmax": [{"layer": 0, "top1_over_median": 3.0, "start_over_median": 1.0},
        ...                                    {"layer": 1, "top1_over_median": 90.0, "start_over_median": 60.0}]})
    """
    fig = new_figure((6.5, 4))
    ax = fig.subplots()
    x = []
    for i, (variant, layers) in enumerate(finals.items()):
        x = [r["layer"] for r in layers]
        ax.plot(
            x,
            [r["top1_over_median"] for r in layers],
            marker="o",
            color=f"C{i}",
            label=f"{variant}: top-1 |a| / median",
        )
        start = [r["start_over_median"] for r in layers]
        if start != [r["top1_over_median"] for r in layers]:  # the start token is not the top-1 entry everywhere
            ax.plot(x, start, marker="s", ls="--", color=f"C{i}", label=f"{variant}: start token |a| / median")
    ax.set(
        title="after each block, final step\n(top-1 = start token where one line is drawn)",
        xlabel="layer",
        yscale="log",
    )
    ax.set_xticks(x)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def train_scale(table: pd.DataFrame) -> Figure:
    """Against width (n_embd), one line per (variant, n_layer): the start token's |a| / median, the
    same over sqrt(n_embd) (how much one entry dominates the normalised vector, width-free), block
    0's attention on the start token (solid) and on the bias slot (dashed), and the validation loss.

        >>> t = pd.DataFrame({"variant": ["default"] * 2, "n_layer": [2, 2], "n_embd": [128, 256],
        ...                   "start_over_median": [30.0, 50.0], "start_over_median_sqrt_d": [2.6, 3.1],
        ...                   "start_attn": [0.9, 0.95], "slot_attn": [0.0, 0.0], "val_loss": [2.85, 2.84]})
        >>> fig = train_scale(t)
    """
    fig = new_figure((19, 4.2))
    axes = fig.subplots(1, 4)
    groups = list(table.groupby(["variant", "n_layer"], sort=False))
    for i, ((variant, n_layer), part) in enumerate(groups):
        part = part.sort_values("n_embd")
        style = {"marker": "o", "color": f"C{i}", "label": f"{variant}, {n_layer} layers"}
        axes[0].plot(part["n_embd"], part["start_over_median"], **style)
        axes[1].plot(part["n_embd"], part["start_over_median_sqrt_d"], **style)
        axes[2].plot(part["n_embd"], part["start_attn"], **style)
        if part["slot_attn"].max() > 0:
            axes[2].plot(
                part["n_embd"],
                part["slot_attn"],
                marker="s",
                color=f"C{i}",
                linestyle="--",
                label=f"{variant}, {n_layer} layers: slot",
            )
        axes[3].plot(part["n_embd"], part["val_loss"], **style)
    axes[0].set(title="start token: largest |a| / median", xlabel="width (n_embd)", yscale="log")
    axes[1].set(title="start token: |a| / (median × sqrt(width))", xlabel="width (n_embd)", yscale="log")
    axes[2].set(title="block 0's attention on the start token / slot", xlabel="width (n_embd)", ylim=(-0.05, 1.05))
    axes[3].set(title="validation loss", xlabel="width (n_embd)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(table["n_embd"].unique()), [str(v) for v in sorted(table["n_embd"].unique())])
    axes[0].legend(fontsize="small")
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    return fig


def retrofit_curves(curves: pd.DataFrame, title: str) -> Figure:
    """Perplexity over the intact model's (log scale, with the bootstrap interval) against the
    training step, one line per retrofit arm (massive/retrain/retrofit.py; rule retrofit): the untrained
    ablation as a dashed line, arms trained with the massive activations kept dotted.

        >>> c = pd.DataFrame({"arm": ["none", "attn_bias", "attn_bias"], "massive": ["ablated"] * 3, "step": [0, 0, 10],
        ...                   "params": [0, 10, 10], "ratio_to_intact": [9.0, 9.0, 2.0], "ratio_lo": [8.0, 8.0, 1.8],
        ...                   "ratio_hi": [10.0, 10.0, 2.2]})
        >>> fig = retrofit_curves(c, "m / c")
    """
    fig = new_figure((9, 4.8))
    ax = fig.subplots()
    end = max(int(curves["step"].max()), 1)
    for i, (arm, c) in enumerate(curves.groupby("arm", sort=False)):
        c = c.sort_values("step")
        label = f"{arm} ({int(c['params'].iloc[0]):,} params)"
        if len(c) == 1:  # untrained: a level across the plot
            ax.hlines(c["ratio_to_intact"].iloc[0], 0, end, colors=f"C{i}", linestyles="--", label=label)
            ax.axhspan(c["ratio_lo"].iloc[0], c["ratio_hi"].iloc[0], color=f"C{i}", alpha=0.1)
            continue
        style = ":" if (c["massive"] == "kept").all() else "-"
        ax.plot(c["step"], c["ratio_to_intact"], marker=".", color=f"C{i}", linestyle=style, label=label)
        ax.fill_between(c["step"], c["ratio_lo"], c["ratio_hi"], color=f"C{i}", alpha=0.15)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set(yscale="log", xlabel="training step", ylabel="perplexity / intact model's", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
