"""Zero-shot accuracy through EleutherAI's lm-evaluation-harness, for a model as it is hooked now.

The paper's second test of "massive activations are fixed biases": accuracy on BoolQ, PIQA,
WinoGrande, ARC-Easy and ARC-Challenge with the massive activations zeroed or set to their mean.
`evaluate` wraps the loaded model in the harness's HFLM, so the hooks of an intervention that is
active (massive.intervene) apply to every forward pass the harness makes. Tasks are the
harness's (datasets from the Hugging Face hub), or local task YAMLs in a folder (`include`).
`dataset_root`: a folder laid out like the hub (<root>/<org>/<name>/ with the repository's files,
e.g. `hf download allenai/ai2_arc --repo-type dataset --local-dir <root>/allenai/ai2_arc`):
each task whose dataset_path has a copy there reads it from there (compute nodes without internet).
Every task of the paper (boolq: aps/super_glue, piqa: baber/piqa, winogrande: allenai/winogrande,
arc_easy/arc_challenge: allenai/ai2_arc in lm-eval 0.4.13) is a parquet repository, none a loading
script (lm-eval issue #3171); a task whose repository is a script fails in the harness with
"Dataset scripts are no longer supported".
Needs the optional extra: pip install -e '.[zeroshot]'. `bos` (the run's Protocol.bos) sets
whether every input begins with the BOS, through the harness's own `add_bos_token` (and the
tokenizer's, so a tokenizer that adds none by default gets it); None keeps the tokenizer's default.

    >>> with massive.intervene(model, found, "zero", tokenizer=tok):
    ...     table = evaluate(model, tok, ["piqa", "arc_easy"], limit=100)
    >>> list(table.columns)
    ['task', 'metric', 'value', 'stderr']
"""

from __future__ import annotations

import copy
import functools

import pandas as pd
from torch import nn

from massive.core.errors import MassiveError


def evaluate(
    model: nn.Module,
    tok,
    tasks: list[str],
    include: str | None = None,
    limit: int | None = None,
    batch_size: int = 4,
    seed: int = 1,
    bos: bool | None = None,
    dataset_root: str | None = None,
) -> pd.DataFrame:
    """One row per (task, metric) from the harness (columns task, metric, value, stderr; stderr
    NaN where the harness gives none), for `model` as it is hooked now. `include`: a folder of
    local task YAMLs; `limit`: examples per task (None: all); `seed`: every seed of the harness;
    `bos`: every input begins with the BOS (True), never (False), as the tokenizer does (None);
    `dataset_root`: local copies of the tasks' hub datasets (task_specs)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise MassiveError("zero-shot evaluation needs lm-eval (pip install -e '.[zeroshot]')") from None
    if bos is not None:
        tok = with_bos(tok, bos)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, add_bos_token=bos)
    manager = task_manager(include)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise MassiveError(f"unknown zero-shot task {unknown[0]!r}")
    out = simple_evaluate(
        model=lm,
        tasks=task_specs(manager, tasks, dataset_root),
        task_manager=manager,
        limit=limit,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
    )
    rows = []
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            if isinstance(value, (int, float)) and not name.endswith("_stderr") and name != "alias":
                rows.append(
                    {
                        "task": task,
                        "metric": name,
                        "value": float(value),
                        "stderr": float(metrics.get(f"{name}_stderr,{_filter}", float("nan")) or float("nan")),
                    }
                )
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=8)
def task_manager(include: str | None = None):
    """The harness's TaskManager (every task it knows, and the YAMLs in `include`), built once per
    process and folder: building it reads every task YAML the harness ships (about 80,000 reads, 7-12 s
    here), which each evaluation under another intervention would otherwise repeat."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include) if include else TaskManager()


def task_specs(manager, tasks: list[str], dataset_root: str | None = None) -> list:
    """What the harness is asked to run: the task names, or with `dataset_root` each task's full
    config (its YAML, includes and functions resolved) reading its dataset from
    <dataset_root>/<dataset_path> where that copy exists (else from the hub, as named)."""
    if not dataset_root:
        return list(tasks)
    from pathlib import Path

    from lm_eval.tasks._yaml_loader import load_yaml

    specs = []
    for name in tasks:
        entry = manager.task_index[name]
        if entry.yaml_path is None:
            specs.append(name)
            continue
        cfg = load_yaml(entry.yaml_path, resolve_func=True)
        local = Path(dataset_root) / str(cfg.get("dataset_path"))
        if cfg.get("dataset_path") and local.is_dir():
            cfg = {**cfg, "dataset_path": str(local)}
            cfg.pop("revision", None)
        specs.append(cfg)
    return specs


def with_bos(tok, bos: bool):
    """A copy of `tok` that adds its BOS by default (bos=True) or never (False): what the harness
    tokenises with (transformers' `add_bos_token`).

        >>> with_bos(byte_tokenizer(), True)("hi")["input_ids"]
        [0, 73, 74]
    """
    if bos and getattr(tok, "bos_token_id", None) is None:
        raise MassiveError("zero-shot with a BOS, but the tokenizer has no BOS token (model.bos=never or auto)")
    tok = copy.deepcopy(tok)
    tok.add_bos_token = bos
    if bos and tok("a")["input_ids"][:1] != [tok.bos_token_id]:
        raise MassiveError(
            f"the tokenizer ({type(tok).__name__}) does not prepend its BOS when asked (add_bos_token): "
            "zero-shot cannot follow model.bos=always"
        )
    return tok
