"""Every config file composes; the schema rejects unknown keys and bad values at compose time."""

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from massive.core.errors import MassiveError
from pipeline.cli import CONF_DIR, compose
from pipeline.config import SourceKind

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
CORPORA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_composes(model):
    cfg = compose([f"model={model}"])
    assert cfg.model.name == model  # the name used in paths is the file's name
    assert cfg.model.seq_len > 0
    assert isinstance(cfg.model.source, SourceKind)


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_corpus_config_composes(corpus):
    assert compose([f"data={corpus}"]).data.name == corpus


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=no_such_model"], "Could not find 'model/no_such_model'"),
        (["model.no_such_key=1"], "Key 'no_such_key' not in 'ModelConfig'"),
        (["no_such_key=1"], "Key 'no_such_key' not in 'Config'"),
        (["model.seq_len=long"], "could not be converted to Integer"),
        (["model.dtype=float8"], "Invalid value 'float8'"),
    ],
)
def test_bad_overrides_fail_at_compose_time(overrides, message):
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as info:
        compose(overrides)
    text = str(info.value) + str(info.value.__cause__)
    assert message in text


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tokenize.num_sequences=0"], "tokenize.num_sequences=0 must be positive"),
        (["capture.top_k=-1"], "capture.top_k=-1 must be positive"),
        (["model=gpt2", "model.hub_id=null"], "needs model.hub_id"),
    ],
)
def test_bad_values_fail_at_compose_time(overrides, message):
    with pytest.raises(MassiveError, match=message):
        compose(overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=smollm2_135m", "data=wiki_sample", "stage=ablate", "ablate.layers=[1,2]", "capture.top_k=8"],
        ["model=gpt2", "data=news_sample", "seed=3", "detect.min_ratio=500", "ablate.interventions=[none,zero]"],
        ["data=photos", "model=vit_random", "ablate.max_images=6", "model.seq_len=16"],
        ["+model.config_overrides.num_hidden_layers=2", "model=tiny_random"],
        ["model.no_such_key=1"],
        ["no_such_key=1"],
        ["model.seq_len=long"],
        ["model.dtype=float8"],
        ["capture.top_k=1,2"],
    ],
)
def test_value_overrides_on_a_cached_composition_equal_hydras_compose(overrides):
    """compose applies value overrides to a cached composition of the config groups: the same
    config, or the same error, as Hydra's compose of all the overrides at once."""
    from omegaconf import OmegaConf

    from pipeline import cli
    from pipeline.config import check_values

    def outcome(fn):
        try:
            return OmegaConf.to_yaml(fn())
        except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
            return type(exc).__name__, cli.one_line(exc)

    def hydra():
        cfg = cli._hydra_compose(overrides, "config", False)
        check_values(cfg)
        return cfg

    for _ in range(2):  # the second time from the cache
        assert outcome(lambda: compose(overrides)) == outcome(hydra)


def test_a_corpus_can_name_its_encoding():
    assert compose([]).data.encoding is None
    assert compose(["data=news_sample", "data.encoding=latin-1"]).data.encoding == "latin-1"


def test_unknown_key_in_a_group_file_is_rejected(tmp_path, monkeypatch):
    import shutil

    import pipeline.cli as cli

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "broken.yaml").write_text(
        "defaults: [schema]\nname: broken\nsource: hub\nhub_id: x/y\nlayers: 3\n"
    )
    monkeypatch.setattr(cli, "CONF_DIR", conf)
    with pytest.raises(ConfigCompositionException) as info:
        compose(["model=broken"])
    assert "layers" in str(info.value.__cause__) or "layers" in str(info.value)


def test_run_dir_derives_from_the_run_not_the_clock():
    a = compose(["model=gpt2", "data=c4", "stage=capture"], with_hydra=True)
    b = compose(["model=gpt2", "data=c4", "stage=capture"], with_hydra=True)
    assert a.hydra.run.dir == b.hydra.run.dir == "./results/gpt2/c4/capture"
