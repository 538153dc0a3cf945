"""Rule zeroshot: zero-shot accuracy under each intervention, through EleutherAI's lm-evaluation-harness.

The paper's second test of "massive activations are fixed biases": accuracy on BoolQ, PIQA,
WinoGrande, ARC-Easy and ARC-Challenge with the massive activations zeroed or set to their mean.
The model is loaded once; the harness (lm_eval.simple_evaluate with an HFLM wrapping the loaded
model) runs every task under every intervention of ablate.interventions, with the same hooks as
the ablate rule. Tasks come from ablate.zeroshot_tasks; their datasets come from the Hugging Face
hub (cluster runs), or from local task YAMLs in ablate.zeroshot_include (a folder).
Output: results/<model>/<corpus>/ablate/<layers>/zeroshot.parquet, one row per (intervention,
task, metric).
"""

from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig

from pipeline import cli, tracking
from pipeline.ablate import intervening, targets
from pipeline.cli import PipelineError
from pipeline.io import run_dir, write_table
from pipeline.model import load_model, load_tokenizer, num_layers, pick_device


def evaluate(model, tok, tasks: list[str], include: str | None, limit: int | None, batch_size: int, seed: int) -> pd.DataFrame:
    """One row per (task, metric) from the harness, for the model as it is hooked now."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise PipelineError("zero-shot evaluation needs lm-eval (pip install -e '.[zeroshot]')") from None
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    manager = TaskManager(include_path=include) if include else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise PipelineError(f"unknown zero-shot task {unknown[0]!r}")
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, random_seed=seed,
                          numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed, log_samples=False)
    rows = []
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            if isinstance(value, (int, float)) and not name.endswith("_stderr") and name != "alias":
                rows.append({"task": task, "metric": name, "value": float(value),
                             "stderr": float(metrics.get(f"{name}_stderr,{_filter}", float("nan")) or float("nan"))})
    return pd.DataFrame(rows)


def run(cfg: DictConfig) -> None:
    tasks = list(cfg.ablate.zeroshot_tasks)
    if not tasks:
        raise PipelineError("ablate.zeroshot_tasks is empty: nothing to evaluate")
    device = pick_device(cfg.capture.device)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, device)
    layers, dims, means = targets(cfg, num_layers(model.config))
    frames = []
    for name in cfg.ablate.interventions:
        with torch.inference_mode(), intervening(cfg, model, tok, name, layers, dims, means):
            df = evaluate(model, tok, tasks, cfg.ablate.zeroshot_include, cfg.ablate.zeroshot_limit,
                          cfg.ablate.batch_size, cfg.seed)
        df.insert(0, "intervention", name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "model", cfg.model.name)
    table.insert(1, "layers", cfg.ablate.layers)
    write_table(table, run_dir(cfg, "ablate") / cfg.ablate.layers / "zeroshot.parquet", cfg)
    with tracking.stage_run(cfg, name=f"zeroshot/{cfg.model.name}/{cfg.ablate.layers}") as wb:
        wb.log({"zeroshot": tracking.table(table)})


if __name__ == "__main__":
    cli.main("zeroshot", run)
