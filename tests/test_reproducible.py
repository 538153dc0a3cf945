"""The same config gives the same tables: two runs in two folders, compared cell by cell."""

import pandas as pd

from pipeline import capture, detect
from pipeline.cli import compose
from pipeline.io import read_provenance, read_table, run_dir
from test_detection import prepare


def test_rerun_reproduces_every_table(tmp_path):
    runs = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()

        def compose_in(*overrides, root=root):
            return compose([f"paths.root={root}", "wandb.mode=disabled", *overrides])

        cfg, _, _ = prepare(root, compose_in, "mistral", planted=True)
        capture.run(cfg)
        detect.run(cfg)
        runs.append(cfg)
    for stage, table in [("capture", "layer_stats"), ("capture", "topk"), ("capture", "dim_max"),
                         ("capture", "prompt"), ("detect", "massive"), ("detect", "summary")]:
        a, b = (read_table(run_dir(cfg, stage) / f"{table}.parquet") for cfg in runs)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    meta = read_provenance(run_dir(runs[0], "capture") / "topk.parquet")
    assert meta["seed"] == "1" and meta["git_commit"] and "transformers" in meta["packages"]
