"""Cluster sizing from the model (pipeline/sizing.py): the parameter count from config.json, GPUs and memory
per rule, the time from the work, overrides per model, and no silent default for a model it cannot size."""

import json

import pytest

from pipeline import sizing

from hub import model_cache, model_configs

# the parameter counts the repositories publish (safetensors metadata): the count from config.json is within 0.1%
PUBLISHED = {
    "HuggingFaceTB/SmolLM2-135M": 134_515_008,
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-2-70b-hf": 68_976_648_192,
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    "microsoft/phi-2": 2_779_683_840,
    "openai-community/gpt2": 124_439_808,
}


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_parameter_count_from_config_json(hub_id):
    assert sizing.params_from_config(model_configs()[hub_id]) == pytest.approx(PUBLISHED[hub_id], rel=1e-3)


@pytest.fixture
def offline_models(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(model_cache(tmp_path / "hf")))
    return tmp_path / "hf"


def local_model(tmp_path, hub_id: str) -> list[str]:
    """A model directory with only the config.json of `hub_id` (model.source=local)."""
    path = tmp_path / hub_id.replace("/", "--")
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model_configs()[hub_id]))
    return ["model.source=local", f"model.path={path}"]


def sized(compose_in, rule: str, *overrides: str, gpu_mem_gb: float = 80):
    cfg = compose_in(*overrides)
    return sizing.size(rule, cfg, sizing.weights(cfg.model, cfg.paths.root), sizing.Site(gpu_mem_gb=gpu_mem_gb))


# (model YAML, rule, GPUs on 80 GB GPUs, on 40 GB GPUs, GB of weights in the rule's dtypes)
CASES = [
    ("llama2_7b", "capture", 1, 1, 13.5),  # float16 weights + one batch of 4 x 4096 tokens
    ("llama2_7b", "inference", 1, 2, 40.4),  # the float32 reference + a float16 copy: over one 40 GB GPU
    ("llama2_70b", "capture", 3, 5, 138.0),
    ("mixtral_8x7b", "capture", 2, 3, 93.4),
    ("mixtral_8x7b", "inference", 5, None, 280.2),  # 8 GPUs of 40 GB are too few: an error, not a silent size
]
