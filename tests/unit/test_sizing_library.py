"""Cluster sizing from the model (pipeline/sizing.py): the parameter count from config.json, GPUs and memory
per rule, the time from the work, overrides per model, and no silent default for a model it cannot size."""

import pytest

from pipeline import sizing

from hub import model_configs

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
