"""The paper's hub corpora and zero-shot tasks load with the pinned `datasets` (5.x, no loading scripts),
each from a local copy laid out like its hub repository (tests/hub.py: a huggingface_hub cache read with
HF_HUB_OFFLINE=1), through the code a cluster runs: fetch_corpus (massive.data.corpora.hub_files +
datasets' packaged builders) and the zero-shot tasks' own dataset_path/dataset_name/revision."""

import pytest
import yaml

from helpers import REPO
from hub import dataset_repo, hub_env


def docs(prefix: str, n: int, **extra) -> list[dict]:
    return [{"text": f"{prefix} document {i}.", **extra} for i in range(n)]


def data_yaml(name: str) -> dict:
    return yaml.safe_load((REPO / f"conf/data/{name}.yaml").read_text())


# Each repository as the hub holds it (at the revision the data YAML names): the files the YAML reads, and
# files beside them that it must not read (scripts, other splits and configurations).
REPOS = {
    "redpajama_sample": lambda: {
        "RedPajama-Data-1T-Sample.py": "# a loading script: datasets>=4 refuses it",
        "README.md": "---\nlicense: apache-2.0\n---\n",
        # each source's metadata has its own fields: the files are read one by one
        "arxiv_sample.jsonl": docs("arxiv", 3, meta={"arxiv_id": "1", "timestamp": "t"}),
        "book_sample.jsonl": docs("book", 2, meta={"title": "x", "publication_date": 1900}),
        "wikipedia_sample.jsonl": docs("wikipedia", 2, meta={"url": "u", "language": "en"}),
    },
    "pg19": lambda: {  # refs/convert/parquet: <config>/<split>/NNNN.parquet
        "default/train/0000.parquet": docs("train book", 2, short_book_title="t", publication_date=1900, url="u"),
        "default/validation/0000.parquet": docs(
            "validation book", 3, short_book_title="v", publication_date=1901, url="u"
        ),
        "default/test/0000.parquet": docs("test book", 2, short_book_title="s", publication_date=1902, url="u"),
    },
    "c4": lambda: {
        "c4.py": "# the old loading script, still in the repository",
        "en/c4-train.00000-of-01024.json.gz": docs("train", 2, timestamp="t", url="u"),
        "en/c4-validation.00000-of-00008.json.gz": docs("validation", 4, timestamp="t", url="u"),
        "en/c4-validation.00001-of-00008.json.gz": docs("second shard", 2, timestamp="t", url="u"),
        "realnewslike/c4-validation.00000-of-00001.json.gz": docs("realnews", 2, timestamp="t", url="u"),
    },
    "wikitext2": lambda: {
        "wikitext-2-raw-v1/test-00000-of-00001.parquet": [{"text": t} for t in ["", " = Valkyria = \n", " It met .\n"]],
        "wikitext-2-raw-v1/train-00000-of-00001.parquet": docs("train", 2),
        "wikitext-103-raw-v1/test-00000-of-00001.parquet": docs("103", 2),
    },
}
REDPAJAMA = (
    [f"arxiv document {i}." for i in range(3)]
    + [f"book document {i}." for i in range(2)]
    + [f"wikipedia document {i}." for i in range(2)]
)
EXPECTED = {
    "redpajama_sample": REDPAJAMA,  # max_documents above the 7 rows: all of them, in order
    "pg19": [f"validation book document {i}." for i in range(3)],
    "c4": [f"validation document {i}." for i in range(4)],
    "wikitext2": ["= Valkyria =", "It met ."],
}


def hub_cache(tmp_path, name: str):
    cfg = data_yaml(name)
    dataset_repo(tmp_path / "hf", cfg["hub_id"], REPOS[name](), cfg.get("revision") or "main")
    return tmp_path / "hf"


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """huggingface_hub in this process reading only tmp_path/hf (as HF_HUB_OFFLINE=1 HF_HUB_CACHE=... would)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for key, value in hub_env(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    return tmp_path / "hf"


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
