"""Rule figures: the paper's plots for one model and corpus (PNG), drawn by massive.plots.figures.

layerwise.png  top-1, top-2, top-3 and median |a| per layer, averaged over sequences, log
               axis (the paper's Fig. 2)
prompt_3d.png  |a| over token x feature dim at one layer for capture.prompt (Fig. 1; beginning as
               the sequences do, with a BOS where model.bos has one), or for
               the first image (vision transformers); the layer is figures.layer_3d, or the
               middle block
token_map.png  max |a| over dims for every token (rows) after every block (columns), log
               color, for the same prompt or image: which tokens carry the massive activations
               from which block on (for a ViT: the CLS token, the registers, and the patches
               with the largest activations)
"""

from __future__ import annotations

from omegaconf import DictConfig

from massive.core.errors import MassiveError
from pipeline import cli, tracking
from pipeline.config import is_images
from pipeline.io import read_table, run_dir


def middle_layer(cfg: DictConfig, n_layers: int) -> int:
    """figures.layer_3d, or the middle block when it is unset."""
    layer = n_layers // 2 if cfg.figures.layer_3d is None else cfg.figures.layer_3d
    if not 0 <= layer < n_layers:
        raise MassiveError(f"figures.layer_3d={layer} is outside 0..{n_layers - 1}")
    return layer


def run(cfg: DictConfig) -> None:
    from massive.plots import figures as plots
    from pipeline.html import save_figure
    from pipeline.model import protocol

    cap, out = run_dir(cfg, "capture"), run_dir(cfg, "figures")
    layer_stats = read_table(cap / "layer_stats.parquet")
    prompt = read_table(cap / "prompt.parquet")
    name = f"{cfg.model.name} on {cfg.data.name}"
    shown = f"{cfg.model.name}: " + (
        "the first image"
        if is_images(cfg.data)
        else repr(cfg.capture.prompt) + (" after the BOS" if protocol(cfg).bos else "")
    )
    figs = {
        "layerwise": plots.layerwise(layer_stats, name),
        "prompt_3d": plots.prompt_3d(prompt, middle_layer(cfg, int(layer_stats["layer"].max()) + 1), shown),
        "token_map": plots.token_map(prompt, shown),
    }
    for key, fig in figs.items():
        save_figure(fig, out / f"{key}.png", cfg.figures.dpi)
    with tracking.stage_run(cfg) as wb:
        wb.log({key: tracking.image(out / f"{key}.png") for key in figs})


if __name__ == "__main__":
    cli.main("figures", run)
