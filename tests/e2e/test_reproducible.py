"""The same config gives the same tables: two runs in two folders, in one process (cell by cell)
and in two processes of the command line (byte for byte, provenance metadata included)."""

import hashlib
import os
import subprocess
import sys

import pandas as pd

from massive.measure.capture import capture
from massive.measure.detect import detect
from pipeline import capture as capture_rule
from pipeline import detect as detect_rule
from pipeline import fetch_corpus, fetch_model
from pipeline.cli import compose
from pipeline.io import read_provenance, read_table, run_dir

import tiny
from helpers import DIM, LAYER, REPO, prepare

TABLES = [
    ("capture", "layer_stats"),
    ("capture", "topk"),
    ("capture", "dim_max"),
    ("capture", "prompt"),
    ("detect", "massive"),
    ("detect", "summary"),
    ("detect", "per_layer"),
]


def test_rerun_reproduces_every_table(tmp_path):
    runs = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()

        def compose_in(*overrides, root=root):
            return compose([f"paths.root={root}", "wandb.mode=disabled", *overrides])

        cfg, _, _ = prepare(root, compose_in, "mistral", planted=True)
        capture_rule.run(cfg)
        detect_rule.run(cfg)
        runs.append(cfg)
    for stage, table in TABLES:
        a, b = (read_table(run_dir(cfg, stage) / f"{table}.parquet") for cfg in runs)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    meta = read_provenance(run_dir(runs[0], "capture") / "topk.parquet")
    assert meta["seed"] == "1" and meta["git_commit"] and "transformers" in meta["packages"]


def test_library_is_deterministic_in_memory():
    model = tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM)
    ids = tiny.sequences(4, 32)
    a, b = capture(model, ids, k=16), capture(model, ids, k=16, batch_size=1)  # the batching changes nothing
    for name in ("layer_stats", "topk", "dim_max"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)
    fa, fb = detect(a), detect(b)
    pd.testing.assert_frame_equal(fa.summary, fb.summary, check_exact=True)
    assert fa.result == fb.result


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_processes_write_byte_identical_tables(tmp_path):
    """tokenize, capture and detect on the command line, in two folders, with one config: every
    table (Parquet bytes, provenance metadata included) and summary.json are the same files."""
    from massive.core.models import byte_tokenizer

    period = byte_tokenizer()(".", add_special_tokens=False)["input_ids"][0]
    model = tiny.save(tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, token_id=period), tmp_path / "hf")
    text = tmp_path / "corpus.txt"
    text.write_text(
        "\n\n".join(f"Document {i}: some words, a delimiter. And more text; then a stop!" for i in range(150))
    )
    args = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={model}",
        "model.name=tiny_llama",
        "model.seq_len=32",
        "data=news_sample",
        "data.kind=text_file",
        f"data.path={text}",
        "tokenize.num_sequences=6",
        "capture.top_k=16",
        "capture.batch_size=4",
        "paths.root=.",
        "wandb.mode=disabled",
    ]
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:  # the inputs, fetched in this process
        cfg = compose([*args, f"paths.root={folder}"])
        fetch_model.run(cfg)
        fetch_corpus.run(cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    for stage in ("tokenize", "capture", "detect"):
        procs = []
        for folder in folders:  # the two folders' processes run at the same time
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"pipeline.{stage}", *args],
                    cwd=folder,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, (stage, err[-3000:])
    from helpers import only_id

    out = "results/tiny_llama/news_sample"
    at = lambda folder, stage: only_id(folder / out / stage).relative_to(folder)  # noqa: E731 (the same config id in both)
    files = [at(folders[0], "tokenize") / "tokens.parquet"] + [
        at(folders[0], stage) / f"{table}.parquet" for stage, table in TABLES
    ]
    files += [at(folders[0], "detect") / "summary.json"]
    for rel in files:
        a, b = (folder / rel for folder in folders)
        assert digest(a) == digest(b), rel
    summary = read_table(folders[0] / at(folders[0], "detect") / "summary.parquet")
    assert summary[["dim", "role", "emerge_layer"]].values.tolist() == [
        [DIM, "delimiter", LAYER]
    ]  # the planted one, found
