"""What tests/unit/test_report.py and tests/rules/test_report_rule.py share: the golden fixture's tables laid out as a
results folder (placeholder figures), and rule ablate's table with intervals."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from golden import lay_out
from helpers import REPO, keyed

GOLDEN = REPO / "tests" / "fixtures" / "golden"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SWEEP = {
    "models": ["tiny_random"],
    "corpora": ["news_sample"],
    "ablate": {"interventions": ["none", "zero", "mean", "random_zero"], "layers": ["emerge", "all"]},
    "attention": {"num_sequences": 4},
    "vision": {"models": ["vit_random"], "images": ["photos"]},
    "train": {"configs": ["cpu_backcopy"]},
}


def ppl_table(layers: str, ppl: dict[str, float], dims: str = "7", spread: float = 0.02) -> pd.DataFrame:
    """Rule ablate's table, with 95% intervals of +-spread around each value."""
    base = ppl["none"]
    return pd.DataFrame(
        [
            {
                "model": "tiny_random",
                "corpus": "news_sample",
                "intervention": k,
                "layers": layers,
                "blocks": "1",
                "dims": dims,
                "perplexity": v,
                "ppl_lo": v * (1 - spread),
                "ppl_hi": v * (1 + spread),
                "n_tokens": 252,
                "n_chunks": 4,
                "entries_changed": 3,
                "ratio": v / base,
                "ratio_lo": v / base * (1 - spread * (k != "none")),
                "ratio_hi": v / base * (1 + spread * (k != "none")),
            }
            for k, v in ppl.items()
        ]
    )


@pytest.fixture
def results(tmp_path):
    """The golden fixture's tables as a results folder, with placeholder PNGs and a training comparison."""
    res = tmp_path / "results"
    shutil.copytree(GOLDEN, res)
    for pair in ("tiny_random/news_sample", "vit_random/photos"):
        (res / pair / "figures").mkdir()
        for f in ("layerwise", "prompt_3d", "token_map"):
            (res / pair / "figures" / f"{f}.png").write_bytes(PNG)
    for f in ("heatmaps", "sink_curve"):
        (res / "tiny_random/news_sample/attention" / f"{f}.png").write_bytes(PNG)
    train = res / "train" / "cpu_backcopy"
    train.mkdir(parents=True)
    pd.DataFrame(
        {
            "variant": ["default", "attn_bias"],
            "val_loss": [2.5, 2.4],
            "max_top1_over_median": [1234.5, 12.25],
            "start_over_median": [40.0, 10.0],
            "start_layer": [0, 1],
            "top1_at_start": [1.0, 0.25],
            "start_attn": [0.97, 0.0],
            "slot_attn": [0.0, 0.98],
            "val_loss_gap": [0.0, -0.1],
            "start_contrast": [1.0, 4.0],
            "matched_step": [500, 300],
            "matched_reference_step": [500, 500],
            "matched_val_gap": [0.0, -0.004],
            "matched_contrast": [1.0, 5.5],
            "massive": [True, False],
        }
    ).to_parquet(train / "comparison.parquet")
    for f in ("emergence", "layerwise"):
        (train / f"{f}.png").write_bytes(PNG)
    (res / "ablation_golden.png").write_bytes(PNG)
    sweep = tmp_path / "golden.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    lay_out(
        res, sweep
    )  # into the keyed folders a run of the golden sweep writes: results/<model>/<corpus>/<stage>/<id>
    return res


def job_dir(results, *job) -> Path:
    """The keyed folder of one job of the golden sweep (rule, model, corpus[, layers]) in the `results` fixture."""
    return keyed(results.parent, results.parent / "golden.yaml", *job)
