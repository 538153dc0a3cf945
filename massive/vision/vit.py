"""What interventions on massive activations do to a vision transformer's output: the ViT half of
the paper's causal test.

The interventions are massive.intervene.interventions': `zero`, `mean` and `random_zero` on the detected
massive activations at the given blocks (as for LLMs), and `fix_register_mean`: every register
token replaced, before every block, by its mean over calibration images. Each is measured on the
final CLS embedding (the final norm's output at the CLS position; the pooled output where the
norm pools), against the model's own without intervention:

  cls_cosine        mean cosine similarity to the unchanged embedding (1 = unchanged)
  cls_cosine_min    its minimum over the images
  cls_rel_change    mean ||e' - e|| / ||e||
  top1              top-1 accuracy, when the model has a classification head and the images
                    have labels; null otherwise
  zeroshot_top1     CLIP zero-shot top-1 (a ZeroShotHead from the CLIP text tower), when given
                    and the images have labels; null otherwise

    >>> from massive.vision import images, vit as vision
    >>> calibration = images.preprocess(processor, paths[:16])
    >>> table = vision.evaluate_interventions(model, images.ImageBatches(processor, paths, labels, 32),
    ...                                       ["none", "zero", "fix_register_mean"], calibration=calibration,
    ...                                       layers=[6], dims=[183], means=means)
    >>> table.set_index("intervention")["cls_cosine"]
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError, check_finite
from massive.intervene import interventions as iv
from massive.measure.detect import MIN_ABS, MIN_RATIO
from massive.vision import images


# ---------------------------------------------------------------- what is measured
class FinalEmbedding:
    """While entered, keeps in `.value` the final CLS embedding (float32) of each forward pass:
    the final norm's output at position `cls_position`, its mean over positions when that is
    None, or the norm's output itself where it is already pooled.

        >>> with FinalEmbedding(model, cls_position=0) as embed:
        ...     model(pixel_values=pixels)
        >>> embed.value.shape
        torch.Size([8, 384])
    """

    def __init__(self, model: nn.Module, cls_position: int | None = 0):
        hooks.resolve(model, hooks.FINAL_NORM)  # a model without a final norm fails here, with one line
        self.model, self.cls, self.value, self._hooks = model, cls_position, None, None

    def _keep(self, h: torch.Tensor, _name: str) -> None:
        if h.dim() == 3:
            h = h[:, self.cls] if self.cls is not None else h.mean(1)
        self.value = h.detach().to(torch.float32)

    def __enter__(self) -> "FinalEmbedding":
        self._hooks = hooks.hooked(self.model, {hooks.FINAL_NORM: self._keep})
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


@dataclass
class ZeroShotHead:
    """CLIP zero-shot classification: the visual projection, and the normalised text embeddings
    of one prompt per class [classes, dim]."""

    projection: nn.Module
    text: torch.Tensor

    def predict(self, embedding: torch.Tensor) -> torch.Tensor:
        """The class index of each final CLS embedding [n, d] (before the projection)."""
        image = F.normalize(self.projection(embedding.to(self.projection.weight.dtype)).float(), dim=-1)
        return (image @ self.text.T).argmax(-1)


def read_class_names(path: str | Path) -> list[str]:
    """The class names in a text file, one a line (blank lines left out), in class-index order."""
    path = Path(path)
    if not path.is_file():
        raise MassiveError(f"class names file {str(path)!r} is not a file")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def zeroshot_head(
    model_dir: str | Path,
    class_names: Sequence[str],
    prompt: str = "a photo of a {}.",
    device: str | torch.device = "cpu",
) -> ZeroShotHead:
    """The zero-shot head of the CLIP model in `model_dir` (loaded in float32): its text tower
    embeds `prompt.format(name)` for every class name once.

        >>> head = zeroshot_head("cache/models/clip_b16/hf", ["cat", "dog"])
        >>> head.text.shape
        torch.Size([2, 512])
    """
    from transformers import AutoModel, AutoTokenizer

    full = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    if not (hasattr(full, "get_text_features") and hasattr(full, "visual_projection")):
        raise MassiveError(
            f"class names are given but the model in {model_dir} has no CLIP text tower for zero-shot classification"
        )
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok([prompt.format(n) for n in class_names], padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        text = full.get_text_features(**batch)
        text = getattr(text, "pooler_output", text)
    return ZeroShotHead(projection=full.visual_projection, text=F.normalize(text.to(torch.float32), dim=-1))


class Outcome:
    """What one intervention gives, batch by batch: final embeddings, top-1 and zero-shot hits."""

    def __init__(self):
        self.embedding, self.top1, self.zeroshot = [], [], []

    def add(self, result, embedding: torch.Tensor, y: torch.Tensor | None, zeroshot: ZeroShotHead | None) -> None:
        self.embedding.append(embedding.cpu())
        logits = getattr(result, "logits", None)
        if y is not None and logits is not None:
            self.top1.append((logits.argmax(-1).cpu() == y).numpy())
        if y is not None and zeroshot is not None:
            self.zeroshot.append((zeroshot.predict(embedding).cpu() == y).numpy())

    @staticmethod
    def accuracy(hits: list) -> float | None:
        return float(np.concatenate(hits).mean()) if hits else None


# ---------------------------------------------------------------- the evaluation
def _pairs(batches) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    for item in batches:
        yield item if isinstance(item, tuple) else (item, None)


def evaluate_interventions(
    model: nn.Module,
    batches,
    interventions: Sequence[str] = ("none", "zero", "mean", "random_zero"),
    *,
    calibration: torch.Tensor | None = None,
    layers: Sequence[int] = (),
    dims: Sequence[int] = (),
    means: dict | None = None,
    min_abs: float = MIN_ABS,
    min_ratio: float = MIN_RATIO,
    batch_size: int = 8,
    seed: int = 1,
    zeroshot: ZeroShotHead | None = None,
    device: str | torch.device | None = None,
    progress: str | None = None,
) -> pd.DataFrame:
    """One row per intervention (the baseline `none` first) of what it does to the final CLS
    embedding, top-1 and zero-shot top-1 (see the module's docstring).

    `batches`: pixel_values [n, 3, H, W] (split into `batch_size` batches), or an iterable of
    pixel_values batches or of (pixel_values, labels) pairs (images.ImageBatches). `calibration`:
    the images whose register means `fix_register_mean` uses (split into `batch_size` batches).
    `layers`, `dims`, `means`, `min_abs`, `min_ratio`: the detection's targets, as for
    massive.intervene.interventions.applied. Every intervention runs on each batch in turn, so each image
    is read once. `progress`: a progress bar's title (None: no bar).

        >>> vision.evaluate_interventions(model, pixels, ["none", "zero"], layers=[1], dims=[7])
          intervention blocks dims  n_images  ...  cls_cosine  ...  entries_changed note
        0         none      1    7         6  ...    1.000000  ...                0
        1         zero      1    7         6  ...    0.213771  ...                6
    """
    if "none" not in interventions:
        raise MassiveError("the interventions must include 'none': the baseline every change is measured against")
    order = ["none"] + [name for name in interventions if name != "none"]  # the baseline first
    unknown = [name for name in order if name not in iv.INTERVENTIONS]
    if unknown:
        raise MassiveError(f"unknown intervention {unknown[0]!r} (known: {', '.join(sorted(iv.INTERVENTIONS))})")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    total = None
    if isinstance(batches, torch.Tensor):
        batches = batches.split(batch_size)
    if hasattr(batches, "__len__"):
        total = len(batches)
    stream = iter(_pairs(batches))
    first = next(stream, None)
    if first is None:
        raise MassiveError("no image to evaluate the interventions on")
    stream = itertools.chain([first], stream)
    forward = lambda batch: model(**arch.forward_kwargs(model, batch.to(device)))  # noqa: E731
    lay = images.layout_of(model, (calibration if calibration is not None else first[0]).to(device))

    register_means = {}
    if any(name in iv.BEFORE_BLOCKS for name in order) and lay.n_registers:
        if calibration is None:
            raise MassiveError(f"{', '.join(n for n in order if n in iv.BEFORE_BLOCKS)} needs calibration images")
        register_means = iv.position_means(model, calibration.split(batch_size), forward, lay.positions("register"))
    ctxs = {
        name: iv.Context(
            layer=-1,
            roles=torch.zeros(0, 0, dtype=torch.long),
            means=dict(means or {}),
            generator=torch.Generator().manual_seed(seed),
            register_means=register_means,
        )
        for name in order
    }
    skipped = {name for name in order if name in iv.BEFORE_BLOCKS and not lay.n_registers}
    outcomes = {name: Outcome() for name in order}
    roles = images.ImageRoles(lay)
    if progress is not None:
        from tqdm import tqdm

        stream = tqdm(stream, desc=progress, unit=" batch", total=total)
    with FinalEmbedding(model, 0 if lay.n_cls else None) as embed:
        for batch, y in stream:  # batch by batch, every intervention on each batch
            batch = batch.to(device)
            for name in order:
                hooks = (
                    nullcontext()
                    if name in skipped
                    else iv.applied(model, name, list(layers), list(dims), min_abs, min_ratio, ctxs[name], roles)
                )
                with torch.inference_mode(), hooks:
                    result = forward(batch)
                    outcomes[name].add(result, embed.value, y, zeroshot)

    dtype = next(model.parameters()).dtype
    base = torch.cat(outcomes["none"].embedding)
    rows = []
    for name in order:
        e, o = torch.cat(outcomes[name].embedding), outcomes[name]
        cosine = F.cosine_similarity(e, base)
        stats = {
            "cls_cosine": float(cosine.mean()),
            "cls_cosine_min": float(cosine.min()),
            "cls_rel_change": float(((e - base).norm(dim=-1) / base.norm(dim=-1).clamp_min(1e-12)).mean()),
        }
        for key, value in stats.items():
            check_finite(value, f"{key} of intervention {name!r}", dtype)
        rows.append(
            {
                "intervention": name,
                "blocks": "all" if name in iv.BEFORE_BLOCKS else ",".join(map(str, layers)),
                "dims": ",".join(map(str, dims)),
                "n_images": len(base),
                "n_calibration": 0 if calibration is None else len(calibration),
                "n_registers": lay.n_registers,
                **stats,
                "top1": o.accuracy(o.top1),
                "zeroshot_top1": o.accuracy(o.zeroshot),
                "entries_changed": ctxs[name].changed,
                "note": "no register tokens: nothing to fix" if name in skipped else "",
            }
        )
    return pd.DataFrame(rows).astype({"top1": "float64", "zeroshot_top1": "float64"})  # null where not measured
