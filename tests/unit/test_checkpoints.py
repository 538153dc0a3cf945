"""Training checkpoints as a sweep axis: a sweep's `revisions` section makes each revision a run
<model>@<revision> with its own fetch (hub code with revision=, offline from a hub-shaped cache here:
tests/hub.py) and results, and the report draws the emergence against the training step."""

import re

import pytest

from massive.core.errors import MassiveError
from pipeline import jobs, paths
from pipeline import sweep as sweeps

from topics.checkpoints import sweep_file


def test_each_revision_is_a_run_with_its_own_fetch(tmp_path):
    s = sweeps.load(
        sweep_file(
            tmp_path,
            models=["tiny_random"],
            revisions={"tiny_random": ["step1", "checkpoint-20", "1234567"]},
            protocols=["bos"],
        )
    )
    runs = ["tiny_random@step1", "tiny_random@checkpoint-20", "tiny_random@1234567"]
    assert s["models"] == ["tiny_random", *runs]
    assert sweeps.protocol_pairs(s) == [("tiny_random@bos", "news_sample")]  # not for the revision runs
    assert sweeps.run_args("tiny_random@step1") == [
        "model=tiny_random",
        "model.name=tiny_random@step1",
        "model.revision=step1",
    ]
    assert sweeps.run_args("tiny_random@1234567")[-1] == "model.revision='1234567'"  # a string to Hydra, not a number
    assert [paths.model_dir(r) for r in ("tiny_random@step1", "tiny_random@bos")] == [
        "cache/models/tiny_random@step1",
        "cache/models/tiny_random",
    ]
    plan = jobs.Plan(s, "x")
    fetches = [w["model"] for rule, w in plan.jobs() if rule == "fetch_model"]
    assert fetches == ["tiny_random", *runs]
    assert plan.args("fetch_model", model="tiny_random@checkpoint-20")[:3] == [
        "model=tiny_random",
        "model.name=tiny_random@checkpoint-20",
        "model.revision=checkpoint-20",
    ]


@pytest.mark.parametrize(
    "revisions, overrides, needle",
    [
        ({"tiny_random": ["bos"]}, [], "is a sequence protocol's name"),
        ({"tiny_random": ["step1", "step1"]}, [], "lists 'step1' twice"),
        ({"tiny_random": ["../up"]}, [], "revisions/tiny_random/0"),
        ({"no_such_model": ["step1"]}, [], "has no conf/model/no_such_model.yaml"),
        ({"tiny_random": ["step1"]}, ["model.revision=step2"], "sets model.revision"),
    ],
)
def test_bad_revisions_are_refused_in_one_line(tmp_path, revisions, overrides, needle):
    with pytest.raises(MassiveError, match=re.escape(needle)) as exc:
        sweeps.load(sweep_file(tmp_path, revisions=revisions, overrides=overrides))
    assert "\n" not in str(exc.value)


def test_step_of_a_revision_name():
    from pipeline.checkpoints import step_of

    assert [
        step_of(r)
        for r in (
            "step0",
            "step143000",
            "stage2-ingredient1-step11931-tokens50B",
            "checkpoint-500",
            "global_step20",
            "main",
            "a1b2c3d",
        )
    ] == [0, 143000, 11931, 500, 20, None, None]
