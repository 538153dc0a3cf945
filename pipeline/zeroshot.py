"""Rule zeroshot: zero-shot accuracy under each intervention, through EleutherAI's lm-evaluation-harness.

The paper's second test of "massive activations are fixed biases": accuracy on BoolQ, PIQA,
WinoGrande, ARC-Easy and ARC-Challenge with the massive activations zeroed or set to their mean.
The model is loaded once; the harness (massive.intervene.zeroshot.evaluate: lm_eval.simple_evaluate with
an HFLM wrapping the loaded model) runs every task under every intervention of
ablate.interventions, with the same hooks as the ablate rule (massive.intervene.interventions.intervene).
Tasks come from ablate.zeroshot_tasks; their datasets come from the Hugging Face hub (cluster
runs; ablate.zeroshot_datasets: local copies laid out like the hub, for compute nodes without
internet), or from local task YAMLs in ablate.zeroshot_include (a folder).
Every input begins as model.bos says (the harness's add_bos_token).
Output: results/<model>/<corpus>/ablate/<layers>/<config id>/zeroshot.parquet, one row per (intervention,
task, metric).
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from massive.core.errors import MassiveError
from massive.core.results import ZeroshotTables
from pipeline import cli, tracking
from pipeline.config import layers_slug, layers_spec
from pipeline.io import provenance, read_detection, run_dir


def run(cfg: DictConfig) -> None:
    import torch

    from massive.core import arch
    from massive.intervene import interventions
    from massive.intervene.zeroshot import evaluate
    from pipeline.model import intervene, load_model, load_tokenizer, pick_device, protocol

    tasks = list(cfg.ablate.zeroshot_tasks)
    if not tasks:
        raise MassiveError("ablate.zeroshot_tasks is empty: nothing to evaluate")
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    found = interventions.targets(read_detection(cfg), layers_spec(cfg.ablate.layers), arch.num_layers(model.config))
    slug = layers_slug(cfg.ablate.layers)
    frames = []
    for name in cfg.ablate.interventions:
        with torch.inference_mode(), intervene(cfg, model, found, name, tok):
            df = evaluate(
                model,
                tok,
                tasks,
                cfg.ablate.zeroshot_include,
                cfg.ablate.zeroshot_limit,
                cfg.ablate.batch_size,
                cfg.seed,
                bos=protocol(cfg, tok).bos,
                dataset_root=cfg.ablate.zeroshot_datasets,
            )
        df.insert(0, "intervention", name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "model", cfg.model.name)
    table.insert(1, "layers", slug)
    ZeroshotTables(zeroshot=table).save(run_dir(cfg, "zeroshot"), meta=provenance(cfg))
    with tracking.stage_run(cfg, name=f"zeroshot/{cfg.model.name}/{slug}") as wb:
        wb.log({"zeroshot": tracking.table(table)})


if __name__ == "__main__":
    cli.main("zeroshot", run)
