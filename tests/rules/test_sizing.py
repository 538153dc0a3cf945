"""Cluster sizing from the model (pipeline/sizing.py): the parameter count from config.json, GPUs and memory
per rule, the time from the work, overrides per model, and no silent default for a model it cannot size."""

import json

import pytest

from massive.core.errors import MassiveError
from pipeline import sizing

from hub import model_cache, model_configs


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


@pytest.mark.parametrize("model,rule,gpus80,gpus40,weights_gb", CASES)
def test_gpus_and_memory_from_the_parameter_count(model, rule, gpus80, gpus40, weights_gb, compose_in, offline_models):
    job = sized(compose_in, rule, f"model={model}")
    assert job.gpus == gpus80
    assert weights_gb + 1.5 < job.gpu_gb < weights_gb * 1.2 + 12, job  # + one batch of activations
    assert job.mem_mb >= 1e3 * weights_gb * (0.5 if rule == "inference" else 1)  # host memory holds what it loads
    if gpus40 is None:
        with pytest.raises(MassiveError, match=f"model '{model}', rule {rule}: .* more than the 8 of a node"):
            sized(compose_in, rule, f"model={model}", gpu_mem_gb=40)
    else:
        assert sized(compose_in, rule, f"model={model}", gpu_mem_gb=40).gpus == gpus40


def test_small_model_one_gpu_and_time_follows_the_work(tmp_path, compose_in):
    small = sized(compose_in, "capture", "model=smollm2_135m", *local_model(tmp_path, "HuggingFaceTB/SmolLM2-135M"))
    assert (small.gpus, small.mem_mb) == (1, 16000) and small.gpu_gb < 4
    more = sized(
        compose_in,
        "capture",
        "model=smollm2_135m",
        *local_model(tmp_path, "HuggingFaceTB/SmolLM2-135M"),
        "tokenize.num_sequences=100000",
    )
    assert more.runtime > small.runtime and more.tokens == 100000 / 16 * small.tokens


def test_an_unknown_model_is_sized_or_stops_with_one_line(tmp_path, compose_in, offline_models):
    # a model no table names: a new architecture, sized from its config.json alone
    new = {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "brand_new"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(new))
    job = sized(
        compose_in, "capture", "model=llama2_7b", "model.name=brand_new", "model.source=local", f"model.path={path}"
    )
    assert job.gpus == 1 and 15.2 < job.gpu_gb < 45  # 7.6B parameters in float16, one batch (152k-word logits)
    assert (
        sized(
            compose_in,
            "capture",
            "model=llama2_7b",
            "model.name=brand_new",
            "model.source=local",
            f"model.path={path}",
            "model.sizing.gpus=4",
            "model.sizing.runtime_factor=3",
        ).gpus
        == 4
    )
    # no config.json at hand (a hub model not in the offline cache, a GGUF before its fetch): one line, never a default
    with pytest.raises(MassiveError, match=r"cannot size model 'gone'.*model\.sizing\.params"):
        sized(compose_in, "capture", "model=llama2_7b", "model.name=gone", "model.hub_id=org/not-here")
    with pytest.raises(MassiveError, match=r"cannot size model 'smollm2_135m' \(source=wheel\)"):
        sized(compose_in, "capture", "model=smollm2_135m", "model.sizing.params=null")
    stated = sized(compose_in, "capture", "model=smollm2_135m")  # its YAML states sizing.params
    assert stated.gpus == 1 and stated.gpu_gb > 134515008 * 4 / 1e9


def test_a_fetched_model_is_sized_from_its_files(tmp_path, compose_in):
    from pipeline import paths

    hf = tmp_path / "cache/models/llama2_7b/hf"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text(json.dumps(model_configs()["meta-llama/Llama-2-7b-hf"]))
    (hf / "model-00001-of-00001.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / paths.fetched("llama2_7b")).write_text(json.dumps({"hf_dir": str(hf)}))
    w = sizing.weights(compose_in("model=llama2_7b").model, tmp_path)
    assert w.params == sizing.params_from_config(model_configs()["meta-llama/Llama-2-7b-hf"])
    assert w.download_bytes == 1000 and "fetched" in w.source
