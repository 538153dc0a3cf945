"""Rule ablate_images: what each intervention does to a vision transformer's output.

The ViT half of the paper's causal test (massive.vision.vit.evaluate_interventions): `zero`, `mean`
and `random_zero` on the detected massive activations at the blocks of ablate.layers (as rule
ablate), and `fix_register_mean`: every register token replaced, before every block, by its mean
over the calibration images (the tokenize rule's images, the capture's inputs). The model is
loaded once and serves every intervention.

Evaluated on ablate.max_images images of the corpus (a seeded sample; all when it has fewer),
streamed in batches of ablate.batch_size (each image decoded once, every intervention run on
each batch): cls_cosine (mean cosine similarity of the final CLS embedding to the model's own
without intervention: 1 = unchanged), cls_cosine_min, cls_rel_change, top1 (when the model has a
classification head and the images have labels) and zeroshot_top1 (CLIP, prompt
ablate.clip_prompt per class name of data.class_names).
Output: results/<model>/<images>/ablate/<layers>/<config id>/images.parquet, one row per intervention.
"""

from __future__ import annotations

from omegaconf import DictConfig

from massive.core.errors import MassiveError
from massive.core.results import ImagesTables
from pipeline import cli, tracking
from pipeline.config import is_images, layers_slug, layers_spec
from pipeline.io import corpus_file, provenance, read_detection, read_table, run_dir, tokens_file


def run(cfg: DictConfig) -> None:
    import torch

    from massive.core.arch import num_layers
    from massive.intervene import interventions as iv
    from massive.vision import images
    from massive.vision import vit as vision
    from pipeline.model import hf_dir, load_model, pick_device

    if not is_images(cfg.data):
        raise MassiveError(f"rule ablate_images needs image data; data={cfg.data.name!r} is text (use rule ablate)")
    if "none" not in cfg.ablate.interventions:
        raise MassiveError("ablate.interventions must include 'none': the baseline every change is measured against")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.capture.device)
    model = load_model(cfg, device)
    processor = images.load_processor(hf_dir(cfg), cfg.model.trust_remote_code)
    found = iv.targets(read_detection(cfg), layers_spec(cfg.ablate.layers), num_layers(model.config))
    layers, dims, means = found.layers, found.dims, found.means
    calibration = images.pixels_of(read_table(tokens_file(cfg)))
    corpus = images.sample(read_table(corpus_file(cfg)), cfg.ablate.max_images, cfg.seed)
    zeroshot = None
    if cfg.data.class_names:
        names = vision.read_class_names(cfg.data.class_names)
        zeroshot = vision.zeroshot_head(hf_dir(cfg), names, cfg.ablate.clip_prompt, device)

    table = vision.evaluate_interventions(
        model,
        images.ImageBatches(processor, corpus["path"], images.labels_of(corpus), cfg.ablate.batch_size),
        list(cfg.ablate.interventions),
        calibration=calibration,
        layers=layers,
        dims=dims,
        means=means,
        min_abs=cfg.detect.min_abs,
        min_ratio=cfg.detect.min_ratio,
        batch_size=cfg.ablate.batch_size,
        seed=cfg.seed,
        zeroshot=zeroshot,
        device=device,
        progress=f"ablate_images {cfg.model.name}/{cfg.data.name}",
    )
    slug = layers_slug(cfg.ablate.layers)
    for at, column, value in ((0, "model", cfg.model.name), (1, "corpus", cfg.data.name), (3, "layers", slug)):
        table.insert(at, column, value)  # the documented column order (docs/schemas.md)
    ImagesTables(images=table).save(run_dir(cfg, "ablate_images"), meta=provenance(cfg))
    with tracking.stage_run(cfg, name=f"ablate_images/{cfg.model.name}/{cfg.data.name}/{slug}") as wb:
        for row in table.itertuples():
            wb.log(
                {
                    f"cls_cosine/{row.intervention}": float(row.cls_cosine),
                    f"entries_changed/{row.intervention}": int(row.entries_changed),
                }
            )
        wb.log({"images": tracking.table(table)})


if __name__ == "__main__":
    cli.main("ablate_images", run)
