"""The lm-evaluation-harness path, on a small local task (no network), with the ablation hooks."""

import json

import pandas as pd
import pytest

from pipeline import capture, detect, fetch_model, zeroshot
from pipeline.io import read_table, run_dir, tokens_file, write_table

import tiny

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[zeroshot]')")

TASK = """task: tiny_yesno
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}} Answer:"
doc_to_choice: [" no", " yes"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_task(tmp_path):
    data = tmp_path / "tasks" / "yesno.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(json.dumps({"question": f"Is {i} even?", "label": int(i % 2 == 0)}) for i in range(12)))
    (tmp_path / "tasks" / "tiny_yesno.yaml").write_text(TASK.format(data=data))
    return tmp_path / "tasks"


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
