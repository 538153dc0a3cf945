"""The lm-evaluation-harness path, on a small local task (no network), with the ablation hooks."""

import pytest

from massive.core.errors import MassiveError
from massive.core.models import byte_tokenizer
from massive.intervene import interventions
from massive.intervene.zeroshot import evaluate
from massive.measure.capture import capture as capture_stats
from massive.measure.detect import detect as detect_massive

import tiny
from topics.zeroshot import write_task

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[zeroshot]')")


def test_evaluate_in_memory_under_an_intervention(tmp_path):
    include = write_task(tmp_path)
    model, tok = tiny.plant(tiny.build("llama"), layer=1, dim=7), byte_tokenizer()
    found = detect_massive(capture_stats(model, tiny.sequences(4, 32), k=8, tok=tok))
    base = evaluate(model, tok, ["tiny_yesno"], include=include, batch_size=4, seed=1)
    assert list(base.columns) == ["task", "metric", "value", "stderr"]
    assert set(base["task"]) == {"tiny_yesno"} and "acc" in set(base["metric"])
    with interventions.intervene(model, found, "mean", tokenizer=tok) as ctx:
        mean = evaluate(model, tok, ["tiny_yesno"], include=include, batch_size=4, seed=1)
    assert ctx.changed > 0  # the harness's forward passes went through the hooks (BOS first: the planted token)
    assert 0 <= mean.set_index("metric").loc["acc", "value"] <= 1
    with pytest.raises(MassiveError, match="unknown zero-shot task 'no_such_task'"):
        evaluate(model, tok, ["no_such_task"], include=include)
