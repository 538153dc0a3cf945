"""What tests/unit/test_zeroshot.py and tests/rules/test_zeroshot_rule.py share: a small local lm-eval task."""

import json

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
