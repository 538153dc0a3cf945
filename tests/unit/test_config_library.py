"""Every config file composes; the schema rejects unknown keys and bad values at compose time."""

from topics.config import CORPORA, MODELS


def test_the_paper_models_and_corpora_are_there():
    assert {
        "llama2_7b",
        "llama2_13b",
        "mixtral_8x7b",
        "mistral_7b",
        "phi2",
        "gpt2",
        "gpt2_medium",
        "gpt2_large",
        "gpt2_xl",
        "smollm2_135m",
    } <= set(MODELS)
    assert {"wiki_sample", "news_sample", "wikitext2", "c4", "pg19", "redpajama_sample"} <= set(CORPORA)
