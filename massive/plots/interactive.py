"""The interactive figures of the report (Plotly): tables in, a `plotly.graph_objects.Figure` out.

The same data as the static PNGs of massive.plots.figures, for exploring in a browser: hover names the
model, corpus, layer, token and value; clicking a legend entry hides its line, or all the lines of
its model where the figure shows several models. Nothing here writes a file or needs a network: the report
embeds plotly.js once (pipeline.html).

    >>> stats = pd.DataFrame({"layer": [0, 1], "top1_abs": [3.0, 900.0], "median_abs": [0.4, 0.5]})
    >>> fig = layerwise({("tiny", "news"): stats})
    >>> [t.name for t in fig.data]
    ['news: top 1', 'news: median']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from massive.plots.figures import token_grid

STATS = {
    "top1_abs": ("top 1", "solid"),
    "top2_abs": ("top 2", "dash"),
    "top3_abs": ("top 3", "dashdot"),
    "median_abs": ("median", "dot"),
}
FONT = {"family": "system-ui, sans-serif", "size": 12}


def layerwise(
    runs: dict[tuple[str, str], pd.DataFrame], stats: tuple[str, ...] = ("top1_abs", "median_abs"), title: str = ""
) -> go.Figure:
    """|a| statistics per layer (mean over sequences, log axis), one line per run and statistic,
    grouped in the legend by model: with several models, clicking an entry hides or shows all the
    lines of its model (double-click: only that model); with one, each line.

    `runs[(model, corpus)]`: capture's layer_stats table (layer, top1_abs, top2_abs, top3_abs, median_abs).

        >>> s = pd.DataFrame({"layer": [0, 1], "top1_abs": [3.0, 900.0], "top2_abs": [2.0, 9.0],
        ...                   "top3_abs": [1.0, 8.0], "median_abs": [0.4, 0.5]})
        >>> len(layerwise({("a", "x"): s, ("b", "x"): s}, stats=tuple(STATS)).data)
        8
    """
    fig = go.Figure()
    palette = _palette(max(len(runs), len(stats)))
    for i, ((model, corpus), table) in enumerate(runs.items()):
        agg = table.groupby("layer")[list(stats)].mean()
        for j, col in enumerate(stats):
            name, dash = STATS[col]
            color = palette[j] if len(runs) == 1 else palette[i]  # one run: a color per statistic
            fig.add_trace(
                go.Scatter(
                    x=agg.index,
                    y=agg[col],
                    mode="lines+markers",
                    name=f"{corpus}: {name}",
                    legendgroup=model,
                    legendgrouptitle_text=model,
                    line={"color": color, "dash": dash},
                    marker={"size": 5},
                    hovertemplate=f"{model} on {corpus}<br>layer %{{x}}<br>{name} |a| %{{y:,.4~r}}<extra></extra>",
                )
            )
    fig.update_layout(
        title=title or None,
        font=FONT,
        height=420,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"groupclick": "togglegroup" if len({m for m, _ in runs}) > 1 else "toggleitem"},
        hovermode="closest",
        template="plotly_white",
    )
    n = _n_layers(runs)
    fig.update_xaxes(title_text="layer (blocks.L.hook_resid_post)", dtick=1 if n <= 32 else None, range=[-0.5, n - 0.5])
    fig.update_yaxes(title_text="|a| (mean over sequences)", type="log", dtick=1, tickformat=",~g")  # a tick per decade
    return fig


def token_map(prompt: pd.DataFrame, title: str = "", shown: int = 40) -> go.Figure:
    """Max |a| over dims for every token (rows) after every block (columns), log color; hover
    gives the token, its position, the layer, the value and the dim it is in.

    `prompt`: capture's prompt table (layer, position, token, values: one vector per token).

        >>> p = pd.DataFrame([{"layer": l, "position": t, "token": f"t{t}", "values": np.array([t + l, 1.0])}
        ...                   for l in range(2) for t in range(3)])
        >>> fig = token_map(p, "tiny: 'abc'")
        >>> fig.data[0].z.shape
        (3, 2)
    """
    grid, argmax, tokens, note = token_grid(prompt, shown)
    labels = [f"{p}: {repr(t)[1:-1]}" for p, t in zip(grid.index, tokens)]
    values = grid.to_numpy()
    custom = np.dstack([values, argmax.to_numpy()])
    fig = go.Figure(
        go.Heatmap(
            z=np.log10(values.clip(min=1e-6)),
            x=list(grid.columns),
            y=labels,
            customdata=custom,
            colorscale="Magma",
            colorbar={"title": {"text": "log10<br>max |a|"}},
            hovertemplate="token %{y}<br>layer %{x}<br>max |a| %{customdata[0]:,.4~r} (dim %{customdata[1]})<extra></extra>",
        )
    )
    title = " ".join(x for x in (title, f"({note})" if note else "") if x)
    fig.update_layout(
        title=title or None,
        font=FONT,
        height=max(260, 90 + 16 * len(grid)),
        margin={"l": 10, "r": 10, "t": 40, "b": 50},
        template="plotly_white",
    )
    fig.update_xaxes(title_text="layer (blocks.L.hook_resid_post)", dtick=1 if grid.shape[1] <= 32 else None)
    fig.update_yaxes(autorange="reversed", automargin=True, tickfont={"size": 10})
    return fig


def _palette(n: int) -> list[str]:
    base = [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#7f7f7f",
        "#bcbd22",
    ]
    return [base[i % len(base)] for i in range(n)]


def _n_layers(runs: dict) -> int:
    return max((int(t["layer"].max()) + 1 for t in runs.values() if len(t)), default=0)
