"""Rule figures: the paper's plots for one model and corpus (PNG).

  layerwise.png  top-1, top-2, top-3 and median |a| per layer, averaged over sequences, log
                 axis (the paper's Fig. 2)
  prompt_3d.png  |a| over token x feature dim at one layer for capture.prompt (Fig. 1), or for
                 the first image (vision transformers); the layer is figures.layer_3d, or the
                 middle block
  roles.png      the detection summary as a table: dims, token roles, tokens, layers, magnitude
  token_map.png  max |a| over dims for every token (rows) after every block (columns), log
                 color, for the same prompt or image: which tokens carry the massive activations
                 from which block on (for a ViT: the CLS token, the registers, and the patches
                 with the largest activations)
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline import cli, tracking  # noqa: E402
from pipeline.config import is_images  # noqa: E402
from pipeline.io import atomic_path, read_table, run_dir  # noqa: E402


def save(fig, path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def layerwise(layer_stats: pd.DataFrame, title: str):
    agg = layer_stats.groupby("layer")[["top1_abs", "top2_abs", "top3_abs", "median_abs"]].mean()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for col, label, style in [("top1_abs", "top 1", "o-"), ("top2_abs", "top 2", "s-"), ("top3_abs", "top 3", "^-"), ("median_abs", "median", "x--")]:
        ax.plot(agg.index, agg[col], style, ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (blocks.L.hook_resid_post)")
    ax.set_ylabel("|a|")
    ax.set_title(title)
    ax.legend(frameon=False, ncol=4, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def prompt_3d(prompt: pd.DataFrame, layer: int, title: str):
    rows = prompt[prompt["layer"] == layer].sort_values("position")
    values = np.abs(np.stack(rows["values"].to_numpy()))  # [tokens, dims]
    n_tok, n_dim = values.shape
    fig = plt.figure(figsize=(7, 4.5))
    ax = fig.add_subplot(projection="3d")
    dims = np.arange(n_dim)
    for t in range(n_tok):
        ax.plot(dims, np.full(n_dim, t), values[t], lw=0.8)
    top = np.dstack(np.unravel_index(np.argsort(values.ravel())[::-1][:3], values.shape))[0]
    for t, d in top:
        ax.text(d, t, values[t, d], f"dim {d}", fontsize=7)
    ticks = np.unique(np.r_[np.linspace(0, n_tok - 1, min(n_tok, 8)).round().astype(int), top[:, 0]])
    labels = rows["token"].tolist()
    ax.set_yticks(ticks)
    ax.set_yticklabels([repr(labels[t])[1:-1] for t in ticks], fontsize=7)
    ax.set_xlabel("feature dim")
    ax.set_zlabel("|a|")
    ax.set_title(f"{title}\nblocks.{layer}.hook_resid_post", fontsize=9)
    ax.view_init(elev=25, azim=-60)
    return fig


def roles_table(summary: pd.DataFrame, title: str):
    cols = ["dim", "role", "tokens", "emerge_layer", "fade_layer", "peak_layer", "mean_value", "ratio_at_peak"]
    if summary.empty:
        cells = [["none found"] + [""] * (len(cols) - 1)]
    else:
        s = summary[cols].copy()
        s["tokens"] = s["tokens"].str.slice(0, 40)
        s["mean_value"] = s["mean_value"].map(lambda v: f"{v:.1f}")
        s["ratio_at_peak"] = s["ratio_at_peak"].map(lambda v: f"{v:.0f}x")
        s["fade_layer"] = s["fade_layer"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
        cells = s.astype(str).values.tolist()
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.3 * (len(cells) + 1)))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))
    ax.set_title(title, fontsize=9)
    return fig


def token_map(prompt: pd.DataFrame, title: str, shown: int = 40):
    grid = prompt.assign(max_abs=[float(np.abs(v).max()) for v in prompt["values"]]).pivot(
        index="position", columns="layer", values="max_abs")
    tokens = prompt[prompt["layer"] == prompt["layer"].min()].set_index("position")["token"]
    n_tok = len(grid)
    if n_tok > shown:  # a ViT's hundreds of patches: the first tokens (CLS, registers) and the largest others
        first = np.arange(6)
        largest = [p for p in np.argsort(grid.max(axis=1).to_numpy())[::-1] if p not in first][: shown - len(first)]
        keep = np.sort(np.r_[first, largest])
        grid, title = grid.iloc[keep], f"{title}\nthe first 6 and the {shown - 6} largest of {n_tok} tokens"
    fig, ax = plt.subplots(figsize=(min(12, 3 + 0.25 * grid.shape[1]), 1.5 + 0.18 * len(grid)))
    image = ax.imshow(np.log10(grid.to_numpy().clip(min=1e-6)), aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_yticks(range(len(grid)))
    ax.set_yticklabels([repr(tokens.loc[p])[1:-1] for p in grid.index], fontsize=6)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_xticklabels(grid.columns, fontsize=6)
    ax.set_xlabel("layer (blocks.L.hook_resid_post)")
    ax.set_ylabel("token")
    fig.colorbar(image, ax=ax, label="log10 max |a| over dims")
    ax.set_title(title, fontsize=9)
    return fig


def middle_layer(cfg: DictConfig, n_layers: int) -> int:
    layer = n_layers // 2 if cfg.figures.layer_3d is None else cfg.figures.layer_3d
    if not 0 <= layer < n_layers:
        raise cli.PipelineError(f"figures.layer_3d={layer} is outside 0..{n_layers - 1}")
    return layer


def run(cfg: DictConfig) -> None:
    cap, det, out = run_dir(cfg, "capture"), run_dir(cfg, "detect"), run_dir(cfg, "figures")
    layer_stats = read_table(cap / "layer_stats.parquet")
    prompt = read_table(cap / "prompt.parquet")
    summary = read_table(det / "summary.parquet")
    name = f"{cfg.model.name} on {cfg.data.name}"
    layer = middle_layer(cfg, int(layer_stats["layer"].max()) + 1)
    figs = {
        "layerwise": layerwise(layer_stats, name),
        "prompt_3d": prompt_3d(prompt, layer, f"{cfg.model.name}: "
                               + ("the first image" if is_images(cfg.data) else repr(cfg.capture.prompt))),
        "roles": roles_table(summary, f"massive activations: {name}"),
        "token_map": token_map(prompt, f"{cfg.model.name}: " + ("the first image" if is_images(cfg.data) else repr(cfg.capture.prompt))),
    }
    for key, fig in figs.items():
        save(fig, out / f"{key}.png", cfg.figures.dpi)
    with tracking.stage_run(cfg) as wb:
        wb.log({key: tracking.image(out / f"{key}.png") for key in figs})


if __name__ == "__main__":
    cli.main("figures", run)
