"""The paper's hub corpora and zero-shot tasks load with the pinned `datasets` (5.x, no loading scripts),
each from a local copy laid out like its hub repository (tests/hub.py: a huggingface_hub cache read with
HF_HUB_OFFLINE=1), through the code a cluster runs: fetch_corpus (massive.data.corpora.hub_files +
datasets' packaged builders) and the zero-shot tasks' own dataset_path/dataset_name/revision."""

import pytest
import yaml

from helpers import REPO
from hub import dataset_repo, hub_env


# ---- the zero-shot tasks of the paper sweep (lm-eval 0.4.13), each from a copy of its hub repository
def readme(configs: dict[str, list[str]]) -> str:
    """A dataset card whose YAML names each configuration's split files, as these repositories do."""
    body = {
        "configs": [
            {"config_name": name, "data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in splits]}
            for name, splits in configs.items()
        ]
    }
    return "---\n" + yaml.safe_dump(body) + "---\n"


def arc(prefix: str) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "question": f"Which is {i}?",
            "answerKey": "B",
            "choices": {"text": ["one", "two", "three", "four"], "label": ["A", "B", "C", "D"]},
        }
        for i in range(3)
    ]


ZEROSHOT_REPOS = {
    "aps/super_glue": {
        "README.md": readme({"boolq": ["train", "validation"]}),
        **{
            f"boolq/{s}-00000-of-00001.parquet": [
                {"question": "is it", "passage": "It is.", "idx": i, "label": i % 2} for i in range(3)
            ]
            for s in ("train", "validation")
        },
    },
    "baber/piqa": {
        f"data/{s}-00000-of-00001.parquet": [{"goal": "open a jar", "sol1": "twist", "sol2": "pull", "label": 0}] * 3
        for s in ("train", "validation")
    },
    "allenai/winogrande": {
        "README.md": readme({"winogrande_xl": ["train", "validation"]}),
        **{
            f"winogrande_xl/{s}-00000-of-00001.parquet": [
                {
                    "sentence": "The cup fell off the table because _ was tilted.",
                    "option1": "the cup",
                    "option2": "the table",
                    "answer": "2",
                }
            ]
            * 3
            for s in ("train", "validation")
        },
    },
    "allenai/ai2_arc": {
        "README.md": readme(
            {"ARC-Easy": ["train", "validation", "test"], "ARC-Challenge": ["train", "validation", "test"]}
        ),
        **{
            f"{c}/{s}-00000-of-00001.parquet": arc(c)
            for c in ("ARC-Easy", "ARC-Challenge")
            for s in ("train", "validation", "test")
        },
    },
}


def test_paper_zeroshot_tasks_read_local_copies_of_their_hub_datasets(tmp_path, monkeypatch):
    """The sweep's five tasks, as the installed harness defines them, run from hub-shaped copies
    (ablate.zeroshot_datasets) with the network off: none of their datasets is a loading script."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[zeroshot]')")
    from massive.core.models import byte_tokenizer
    from massive.intervene.zeroshot import evaluate

    import tiny

    tasks = yaml.safe_load((REPO / "conf/sweep/paper.yaml").read_text())["ablate"]["zeroshot_tasks"]
    root = tmp_path / "datasets"
    for hub_id, files in ZEROSHOT_REPOS.items():
        snap = dataset_repo(tmp_path / "hf", hub_id, files)  # written as the hub cache holds them, then copied
        (root / hub_id).parent.mkdir(parents=True, exist_ok=True)
        snap.rename(root / hub_id)
    for key, value in hub_env(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    model, tok = tiny.build("llama"), byte_tokenizer()
    table = evaluate(model, tok, tasks, limit=2, batch_size=2, dataset_root=str(root))
    assert set(table["task"]) == set(tasks), table
    acc = table[table["metric"] == "acc"].set_index("task")["value"]
    assert acc.between(0, 1).all() and len(acc) == len(tasks)
