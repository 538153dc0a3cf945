"""Result objects a notebook saves and reloads: the same files the pipeline writes (massive/core/results.py)."""

import pandas as pd
import pytest

from massive.measure.capture import Capture, capture
from massive.measure.detect import Detection, detect

import tiny


@pytest.fixture(scope="module")
def found():
    model = tiny.plant(tiny.build("llama"), layer=1, dim=7)
    stats = capture(model, tiny.sequences(4, 32), k=8, min_abs=100.0, min_ratio=1000.0)
    return stats, detect(stats, min_abs=100.0, min_ratio=1000.0)


def test_a_capture_saved_loads_back_equal(found, tmp_path):
    stats, _ = found
    back = Capture.load(stats.save(tmp_path / "capture"))
    for name in ("layer_stats", "topk", "dim_max"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(stats, name))
    assert (back.thresholds, back.vision) == (stats.thresholds, stats.vision)


def test_a_detection_saved_loads_back_equal(found, tmp_path):
    _, det = found
    back = Detection.load(det.save(tmp_path / "detect"))
    for name in ("massive", "summary", "per_layer", "outliers"):
        pd.testing.assert_frame_equal(
            getattr(back, name), getattr(det, name), check_dtype=False, check_index_type=False
        )
    assert (back.result, back.n_layers, back.k, back.capped) == (det.result, det.n_layers, det.k, det.capped)
    assert back.thresholds == det.thresholds and back.found == det.found and back.dims == det.dims


def test_a_missing_result_is_one_line(tmp_path):
    from massive.core.errors import MassiveError

    with pytest.raises(MassiveError, match="summary.json is missing"):
        Detection.load(tmp_path)


@pytest.mark.parametrize("stage", sorted(__import__("massive.core.results", fromlist=["STAGE_TABLES"]).STAGE_TABLES))
def test_each_rule_s_result_saved_loads_back_equal(stage, tmp_path):
    """ablate, zeroshot, ablate_images, attention, origins, retrofit, inference: their tables (and
    summary.json) as the rule writes them, in the files its stage declares (pipeline/stages.py)."""
    from massive.core.results import STAGE_TABLES
    from pipeline.stages import STAGES

    cls = STAGE_TABLES[stage]
    frame = pd.DataFrame({"model": ["tiny", "tiny"], "value": [1.5, float("nan")], "n": [3, 4], "note": [None, "x"]})
    res = cls(
        result={"model": "tiny", "shares": [0.5, 0.25]} if cls.SUMMARY else None,
        **{name: frame.assign(table=name) for name in cls.TABLES},
    )
    back = cls.load(res.save(tmp_path / stage, meta={"seed": "1"}))
    assert sorted(p.name for p in (tmp_path / stage).iterdir()) == sorted(cls.files())
    assert set(cls.files()) <= set(STAGES[stage].files)
    for name in cls.TABLES:
        pd.testing.assert_frame_equal(back.tables[name], res.tables[name])
    assert back.result == res.result and getattr(back, cls.TABLES[0]) is back.tables[cls.TABLES[0]]
