"""Rule ablate_images: what each intervention does to a vision transformer's output.

The ViT half of the paper's causal test. The interventions are those of pipeline/interventions.py:
`zero`, `mean` and `random_zero` on the detected massive activations at the blocks of the
`layers` spec (as rule ablate), and `fix_register_mean`: every register token replaced, before
every block, by its mean over the calibration images (the tokenize rule's images, the capture's
inputs). The model is loaded once and serves every intervention.

Evaluated on ablate.max_images images of the corpus (a seeded sample; all when it has fewer), streamed in batches of
ablate.batch_size (each image decoded once, every intervention run on each batch):
  cls_cosine        mean cosine similarity of the final CLS embedding (the final norm's output at
                    the CLS position; the pooled output where the norm pools) to the model's own
                    without intervention: 1 = unchanged. Offline, this is the measure.
  cls_cosine_min    its minimum over the images
  cls_rel_change    mean ||e' - e|| / ||e||
  top1              ImageNet-style top-1 accuracy, when the model has a classification head (e.g.
                    model.auto_class=AutoModelForImageClassification with DINOv2's linear heads)
                    and the images have labels (an ImageFolder); null otherwise
  zeroshot_top1     CLIP zero-shot top-1 (prompt ablate.clip_prompt per class name of
                    data.class_names), when the model directory holds a CLIP text tower; null otherwise
Output: results/<model>/<images>/ablate/<layers>/images.parquet, one row per intervention.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from pipeline import cli, images, interventions, tracking
from pipeline.ablate import targets
from pipeline.cli import PipelineError
from pipeline.config import is_images
from pipeline.io import corpus_file, read_table, root, run_dir, tokens_file, write_table
from pipeline.model import find_parts, hf_dir, load_model, num_layers, pick_device


class FinalEmbedding:
    """Forward hook on the final norm: keeps the CLS embedding (or the pooled one) of each pass."""

    def __init__(self, model, cls_position: int | None):
        norm = find_parts(model).final_norm
        if norm is None:
            raise PipelineError(f"no final norm found in {type(model).__name__}: cannot read the final CLS embedding")
        self.cls, self.value = cls_position, None
        self.handle = norm.register_forward_hook(self)

    def __call__(self, _module, _inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        if h.dim() == 3:
            h = h[:, self.cls] if self.cls is not None else h.mean(1)
        self.value = h.detach().to(torch.float32)


def zeroshot_head(cfg: DictConfig, device) -> tuple[object, torch.Tensor] | None:
    """(CLIP model, normalised text embeddings of the class prompts) when data.class_names is set
    and the model directory holds a CLIP text tower; else None."""
    if not cfg.data.class_names:
        return None
    from transformers import AutoModel, AutoTokenizer

    path = Path(cfg.data.class_names)
    if not path.is_file():
        raise PipelineError(f"data.class_names={cfg.data.class_names!r} is not a file")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    full = AutoModel.from_pretrained(hf_dir(cfg), dtype=torch.float32).to(device).eval()
    if not (hasattr(full, "get_text_features") and hasattr(full, "visual_projection")):
        raise PipelineError(f"data.class_names is set but {cfg.model.name!r} has no CLIP text tower for zero-shot classification")
    tok = AutoTokenizer.from_pretrained(hf_dir(cfg))
    batch = tok([cfg.ablate.clip_prompt.format(n) for n in names], padding=True, return_tensors="pt").to(device)
    with torch.inference_mode():
        text = full.get_text_features(**batch)
        text = getattr(text, "pooler_output", text)
    return full, F.normalize(text.to(torch.float32), dim=-1)


class Outcome:
    """What one intervention gives, image by image: final embeddings, top-1 and zero-shot hits."""

    def __init__(self):
        self.embedding, self.top1, self.zeroshot = [], [], []

    def add(self, result, embed: FinalEmbedding, y: torch.Tensor | None, clip) -> None:
        self.embedding.append(embed.value.cpu())
        logits = getattr(result, "logits", None)
        if y is not None and logits is not None:
            self.top1.append((logits.argmax(-1).cpu() == y).numpy())
        if y is not None and clip is not None:
            full, text = clip
            image = F.normalize(full.visual_projection(embed.value.to(full.visual_projection.weight.dtype)).float(), dim=-1)
            self.zeroshot.append(((image @ text.T).argmax(-1).cpu() == y).numpy())

    @staticmethod
    def accuracy(hits: list) -> float | None:
        return float(np.concatenate(hits).mean()) if hits else None


def run(cfg: DictConfig) -> None:
    if not is_images(cfg.data):
        raise PipelineError(f"rule ablate_images needs image data; data={cfg.data.name!r} is text (use rule ablate)")
    if "none" not in cfg.ablate.interventions:
        raise PipelineError("ablate.interventions must include 'none': the baseline every change is measured against")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    model = load_model(cfg, device)
    processor = images.load_processor(hf_dir(cfg), cfg.model.trust_remote_code)
    layers, dims, means = targets(cfg, num_layers(model.config))
    calibration = images.pixels_of(read_table(tokens_file(cfg)))
    corpus = images.sample(read_table(corpus_file(cfg)), cfg.ablate.max_images, cfg.seed)
    paths, labels = corpus["path"].tolist(), corpus["label"].to_numpy().copy()
    labelled = bool(len(labels)) and bool((labels >= 0).all())
    lay = images.layout_of(model, calibration.to(device))
    bs = cfg.ablate.batch_size
    forward = lambda batch: model(**images.forward_kwargs(model, batch.to(device)))  # noqa: E731

    register_means = {}
    if "fix_register_mean" in cfg.ablate.interventions and lay.n_registers:
        register_means = interventions.position_means(model, calibration.split(bs), forward, lay.positions("register"))
    clip = zeroshot_head(cfg, device)
    order = ["none"] + [n for n in cfg.ablate.interventions if n != "none"]  # the baseline first
    ctxs = {name: interventions.Context(layer=-1, roles=torch.zeros(0, 0, dtype=torch.long), means=means,
                                        generator=torch.Generator().manual_seed(cfg.seed), register_means=register_means)
            for name in order}
    skipped = {name for name in order if name in interventions.BEFORE_BLOCKS and not lay.n_registers}
    outcomes = {name: Outcome() for name in order}
    roles = images.ImageRoles(lay)
    embed = FinalEmbedding(model, 0 if lay.n_cls else None)
    try:  # batch by batch (each image decoded once), every intervention on each batch
        for start in tqdm(range(0, len(paths), bs), desc=f"ablate_images {cfg.model.name}/{cfg.data.name}", unit=" batch"):
            batch = images.preprocess(processor, paths[start : start + bs]).to(device)
            y = torch.tensor(labels[start : start + bs]) if labelled else None
            for name in order:
                hooks = nullcontext() if name in skipped else interventions.applied(
                    model, name, layers, dims, cfg.detect.min_abs, cfg.detect.min_ratio, ctxs[name], roles)
                with torch.inference_mode(), hooks:
                    outcomes[name].add(forward(batch), embed, y, clip)
    finally:
        embed.handle.remove()

    base = torch.cat(outcomes["none"].embedding)
    rows = []
    for name in order:
        e, o = torch.cat(outcomes[name].embedding), outcomes[name]
        cosine = F.cosine_similarity(e, base)
        rows.append({
            "model": cfg.model.name, "corpus": cfg.data.name, "intervention": name, "layers": cfg.ablate.layers,
            "blocks": "all" if name in interventions.BEFORE_BLOCKS else ",".join(map(str, layers)),
            "dims": ",".join(map(str, dims)),
            "n_images": len(paths), "n_calibration": len(calibration), "n_registers": lay.n_registers,
            "cls_cosine": float(cosine.mean()),
            "cls_cosine_min": float(cosine.min()),
            "cls_rel_change": float(((e - base).norm(dim=-1) / base.norm(dim=-1).clamp_min(1e-12)).mean()),
            "top1": o.accuracy(o.top1),
            "zeroshot_top1": o.accuracy(o.zeroshot),
            "entries_changed": ctxs[name].changed,
            "note": "no register tokens: nothing to fix" if name in skipped else "",
        })
    table = pd.DataFrame(rows).astype({"top1": "float64", "zeroshot_top1": "float64"})  # null where not measured
    out = run_dir(cfg, "ablate") / cfg.ablate.layers
    write_table(table, out / "images.parquet", cfg)
    with tracking.stage_run(cfg, name=f"ablate_images/{cfg.model.name}/{cfg.data.name}/{cfg.ablate.layers}") as wb:
        for row in rows:
            wb.log({f"cls_cosine/{row['intervention']}": row["cls_cosine"], f"entries_changed/{row['intervention']}": row["entries_changed"]})
        wb.log({"images": tracking.table(table)})


def report_section(cfg: DictConfig, sweep: dict) -> str:
    """The report's section: every images.parquet of the sweep's vision part, with the paper's numbers."""
    from pipeline.ablation import reference

    v = sweep["vision"]
    tables = [read_table(root(cfg) / cfg.paths.results / m / i / "ablate" / layers / "images.parquet")
              for m in v["models"] for i in v["images"] for layers in v["layers"]]
    table = pd.concat(tables, ignore_index=True)
    cols = ["model", "corpus", "intervention", "layers", "blocks", "dims", "n_images", "cls_cosine", "cls_cosine_min",
            "cls_rel_change", "top1", "zeroshot_top1", "entries_changed", "note"]
    fmt = lambda x: f"{x:.4f}"  # noqa: E731
    return ("<h2>Vision transformers: interventions</h2>"
            "<p>Rule <code>ablate_images</code>: the change of the final CLS embedding (cosine similarity to the "
            "model's own, 1 = unchanged) under each intervention; <code>zero</code>, <code>mean</code> and "
            "<code>random_zero</code> act on the detected massive activations at the blocks given by "
            "<code>layers</code>, <code>fix_register_mean</code> replaces every register token by its mean over "
            "the calibration images before every block. Top-1 where the model has a classification head and the "
            "images have labels; CLIP zero-shot top-1 where the data names its classes.</p>"
            + table[cols].to_html(index=False, border=0, float_format=fmt, na_rep="-")
            + "<h3>The paper's numbers, for comparison (ImageNet top-1, %)</h3>"
            + reference("vision_top1").to_html(index=False, border=0, na_rep="-"))


if __name__ == "__main__":
    cli.main("ablate_images", run)
