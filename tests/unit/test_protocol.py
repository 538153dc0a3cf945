"""How sequences begin (model.bos: auto | always | never), one function for every rule's sequences,
protocol runs in a sweep (<model>@<protocol>), and the report's protocol and outlier sections."""

import pytest

from massive.core.errors import MassiveError
from massive.core.models import byte_tokenizer

from topics.protocol import DOCS, seqs


# ---------------------------------------------------------------- the library
def test_auto_follows_the_tokenizer_and_always_puts_a_bos_on_every_chunk():
    plain, adds = byte_tokenizer(), byte_tokenizer(add_bos=True)
    assert seqs.resolve(plain, "auto").name == "no_bos" and seqs.resolve(adds, "auto").name == "bos"
    assert seqs.resolve(adds, "never").warning and not seqs.resolve(plain, "never").warning
    text = "\n\n".join(DOCS)
    stream = plain(text, add_special_tokens=False)["input_ids"]
    for tok in (plain, adds):
        on = seqs.resolve(tok, "always")
        chunks = seqs.perplexity_chunks(tok, DOCS, seq_len=16, max_chunks=5, protocol=on)
        assert chunks.shape == (5, 16) and (chunks[:, 0] == 0).all() and not (chunks[:, 1:] == 0).any()
        assert chunks[:, 1:].flatten().tolist() == stream[: 5 * 15]  # BOS + seq_len - 1 consecutive text tokens
        off = seqs.perplexity_chunks(tok, DOCS, seq_len=16, max_chunks=5, protocol=seqs.resolve(tok, "never"))
        assert not (off == 0).any() and off.flatten().tolist() == stream[: 5 * 16]  # the paper's protocol
        sampled = seqs.sequences(tok, DOCS, seq_len=16, n=4, seed=1, num_documents=10, protocol=on)
        assert (sampled[:, 0] == 0).all() and not (sampled[:, 1:] == 0).any()
        assert seqs.encode_prompt(tok, "Summer is warm.", protocol=on)[0, :2].tolist() == [
            0,
            plain("S")["input_ids"][0],
        ]


def test_bos_always_without_a_bos_token_and_an_unknown_mode_are_errors():
    tok = byte_tokenizer()
    tok.bos_token = None
    with pytest.raises(MassiveError, match="model.bos=always, but the tokenizer of 'm' has no BOS token"):
        seqs.resolve(tok, "always", name="'m'")
    assert seqs.resolve(tok, "auto").name == "no_bos"
    with pytest.raises(MassiveError, match="model.bos='sometimes'"):
        seqs.resolve(tok, "sometimes")


def test_zero_shot_follows_the_protocol_through_the_tokenizer():
    from massive.intervene.zeroshot import with_bos

    assert with_bos(byte_tokenizer(), True)("hi")["input_ids"] == [0, 73, 74]
    assert with_bos(byte_tokenizer(add_bos=True), False)("hi")["input_ids"] == [73, 74]
    tok = byte_tokenizer()
    tok.bos_token = None
    with pytest.raises(MassiveError, match="no BOS token"):
        with_bos(tok, True)


# ---------------------------------------------------------------- sweeps
def test_protocol_runs_select_the_model_its_protocol_and_their_overrides():
    from pipeline import paths
    from pipeline import sweep as sweeps

    assert sweeps.run_args("gpt2") == ["model=gpt2"]
    assert sweeps.run_args("gpt2@bos") == ["model=gpt2", "model.name=gpt2@bos", "model.bos=always"]
    # any other tag is a revision (a training checkpoint: tests/unit/test_checkpoints.py), with a fetch of its own
    assert sweeps.run_args("gpt2@maybe") == ["model=gpt2", "model.name=gpt2@maybe", "model.revision=maybe"]
    assert (
        paths.model_dir("gpt2@bos") == paths.model_dir("gpt2")
        and paths.pair_dir("gpt2@bos", "c4") == "results/gpt2@bos/c4"
    )
    sweep = {
        "models": ["gpt2", "smollm2_135m"],
        "corpora": ["c4", "wikitext2"],
        "overrides": ["a=1"],
        "model_overrides": {},
        "protocols": {"names": ["bos", "no_bos"], "corpora": ["c4"], "overrides": ["tokenize.num_sequences=2"]},
    }
    # gpt2's YAML fixes the paper's protocol (no_bos): only its bos run; SmolLM2 (auto) gets both
    assert sweeps.protocol_pairs(sweep) == [
        ("gpt2@bos", "c4"),
        ("smollm2_135m@bos", "c4"),
        ("smollm2_135m@no_bos", "c4"),
    ]
    assert sweeps.overrides(sweep, "gpt2@bos") == ["a=1", "tokenize.num_sequences=2"] and sweeps.overrides(
        sweep, "gpt2"
    ) == ["a=1"]


def test_the_paper_models_state_the_paper_protocol():
    from pipeline import sweep as sweeps

    for m in ("llama2_7b", "llama2_13b", "llama2_70b", "mistral_7b", "mixtral_8x7b", "phi2", "gpt2", "gpt2_xl"):
        assert sweeps.own_protocol(m) == "no_bos", m
    assert sweeps.own_protocol("smollm2_135m") is None and sweeps.own_protocol("tiny_random") is None
