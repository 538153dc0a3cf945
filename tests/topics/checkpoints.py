"""What tests/unit/test_checkpoints.py and tests/rules/test_checkpoints_rule.py share: a sweep file of no
models on news_sample."""

import yaml


def sweep_file(tmp_path, **sweep) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"models": [], "corpora": ["news_sample"], **sweep}))
    return str(path)
