"""The lm-evaluation-harness path, on a small local task (no network), with the ablation hooks."""

import pandas as pd
import pytest

from pipeline import capture, detect, fetch_model, zeroshot
from pipeline.io import read_table, run_dir, tokens_file, write_table

import tiny
from topics.zeroshot import write_task

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[zeroshot]')")


def test_zeroshot_runs_the_harness_under_each_intervention(tmp_path, compose_in):
    include = write_task(tmp_path)

    model = tiny.plant(tiny.build("llama"), layer=1, dim=7)
    path = tiny.save(model, tmp_path / "hf")
    cfg = compose_in(
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.seq_len=32",
        "capture.top_k=8",
        "ablate.zeroshot_tasks=[tiny_yesno]",
        f"ablate.zeroshot_include={include}",
        "ablate.interventions=[none,zero,mean]",
    )
    fetch_model.run(cfg)
    ids = tiny.sequences(4, 32)
    write_table(pd.DataFrame({"seq_id": range(4), "input_ids": ids.tolist()}), tokens_file(cfg), cfg)
    capture.run(cfg)
    detect.run(cfg)
    zeroshot.run(cfg)
    table = read_table(run_dir(cfg, "zeroshot") / "zeroshot.parquet")
    acc = table[table.metric == "acc"].set_index("intervention")["value"]
    assert list(acc.index) == ["none", "zero", "mean"]
    assert ((acc >= 0) & (acc <= 1)).all()
    assert set(table["task"]) == {"tiny_yesno"}
