"""A prompt's attention logits per layer and the layers the heatmaps show."""

from __future__ import annotations

import torch

from massive.core.errors import MassiveError
from massive.measure.attention.recorder import Recorder, device_of, use_recording_attention


def heatmap_layers(emerge: int | None, n_layers: int, layers: list[int] | None = None) -> list[int]:
    """The layers of the logit heatmaps: `layers` (checked), or the layer before massive
    activations reach the input, the first that reads them, and one between it and the last.

        >>> heatmap_layers(emerge=1, n_layers=4)
        [1, 2]
    """
    if layers is not None:
        picks = list(layers)
        bad = [x for x in picks if not 0 <= x < n_layers]
        if bad:
            raise MassiveError(f"attention.heatmap_layers: layer {bad[0]} is outside 0..{n_layers - 1}")
        return picks
    if emerge is None:
        picks = [0, n_layers // 2, n_layers - 1]
    else:  # block `emerge` still reads no massive activation; block emerge + 1 is the first to
        first = min(emerge + 1, n_layers - 1)
        picks = [emerge, first, (first + n_layers - 1) // 2]
    return sorted(set(picks))


def prompt_logits(
    model: torch.nn.Module, ids: torch.Tensor, device: torch.device | str | None = None
) -> dict[int, dict[str, torch.Tensor]]:
    """Every layer's attention logits for one prompt ([1, tokens]): {layer: {"logits": [1, heads,
    q, k] float32 on the CPU, -inf where masked}}, the input of massive.plots.figures.heatmaps.

        >>> kept = prompt_logits(model, massive.encode_prompt(tok, "Summer is warm. Winter is cold."))
        >>> fig = plots.heatmaps(kept, [1, 2], tokens, emerge=1, title="m")
    """
    use_recording_attention(model)
    rec = Recorder(model)
    with torch.inference_mode(), rec.active("off", keep=True):
        model(ids.to(device or device_of(model)), use_cache=False)
    return {layer: {"logits": v["logits"].cpu()} for layer, v in rec.kept.items()}
