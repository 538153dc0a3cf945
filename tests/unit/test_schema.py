"""One definition per parameter: the config schema's nodes are the library's dataclasses and registries
(pipeline/schema.py), so a library field is a config key with the library's default, and a config's
allowed names are the registry's."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from massive.core.arch import DTYPES
from massive.core.sequences import BOS_MODES
from massive.measure.detect import MIN_ABS, MIN_RATIO
from massive.retrain import gpt, training
from massive.retrain.backcopy import BackcopySpec
from massive.retrain.retrofit import RetrofitConfig
from pipeline import config
from pipeline.schema import choices, node

# (config node, the library dataclass it is made of, the library fields it leaves to the pipeline)
NODES = [
    (config.GPTArch, gpt.GPTConfig, gpt.NOT_ARCH),
    (config.TrainConfig, training.TrainSpec, ("block_size",)),
    (config.RetrofitSection, RetrofitConfig, config.RETROFIT_FIXED),
    (config.BackcopyData, BackcopySpec, ()),
    (config.OpenWebTextData, training.OpenWebTextSpec, ()),
]


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@pytest.mark.parametrize("schema, source, drop", NODES, ids=lambda x: getattr(x, "__name__", None))
def test_every_library_field_is_a_config_key_with_the_librarys_default(schema, source, drop):
    # as Hydra reads the node: every key's default, enums as their names
    composed = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
    for f in dataclasses.fields(source):
        if f.name in drop:
            assert f.name not in composed, f"{schema.__name__}.{f.name}: the pipeline sets it from elsewhere"
            continue
        assert f.name in composed, f"{source.__qualname__}.{f.name} is no key of {schema.__name__}"
        assert composed[f.name] == _default(f), f"{schema.__name__}.{f.name}: not the library's default"


def test_the_config_enums_are_the_library_registries():
    for enum, names in (
        (config.Variant, gpt.VARIANTS),
        (config.Init, gpt.INITS),
        (config.Decay, gpt.DECAY),
        (config.Optimizer, training.OPTIMIZERS),
        (config.LrSchedule, training.SCHEDULES),
        (config.TrainData, training.DATA),
        (config.Dtype, DTYPES),
        (config.BosMode, BOS_MODES),
    ):
        assert [m.value for m in enum] == list(names), enum.__name__
    assert (config.DetectConfig().min_abs, config.DetectConfig().min_ratio) == (MIN_ABS, MIN_RATIO)


def test_keys_of_library_functions_take_their_defaults():
    import inspect

    from massive.measure import origins
    from massive.measure.attention import analyse
    from massive.measure.detect import detect

    for section, fn, keys in (
        (
            config.DetectConfig(),
            detect,
            ("min_abs", "min_ratio", "massive_max_share", "outlier_token_share", "outlier_layer_share"),
        ),
        (config.AttentionConfig(), analyse, ("sink_threshold", "concentrate_threshold", "sample_queries")),
        (config.OriginsConfig(), origins.find, ("min_share", "channel_share", "max_channels")),
        (config.OriginsConfig(), origins.perplexities, ("rank_band",)),
    ):
        for key in keys:
            assert getattr(section, key) == inspect.signature(fn).parameters[key].default, (fn.__name__, key)


def test_a_node_rejects_a_name_outside_its_registry_and_an_unknown_field():
    Arch = node(gpt.GPTConfig, "Arch", drop=gpt.NOT_ARCH, enums={"init": choices("Init", gpt.INITS)})
    cfg = OmegaConf.structured(Arch)
    cfg.init = "pytorch"
    with pytest.raises(Exception, match="expected one of \\[gpt2, pytorch\\]"):
        cfg.init = "xavier"
    with pytest.raises(TypeError, match="no field 'depth'"):
        node(gpt.GPTConfig, "Arch", drop=("depth",))
