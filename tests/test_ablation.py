"""Interventions on massive activations: exact targets, mean as a fixed bias, perplexity (the
library, in memory), and rule ablate through its command line: the layers spec and non-finite
perplexities (issue #12, defects 1 and 2)."""

import hashlib
import math
from contextlib import contextmanager

import pandas as pd
import pytest
import torch

import massive
import tiny
from conftest import assert_one_line_error, run_module
from massive import hooks, interventions
from massive.capture import capture
from massive.detect import detect
from massive.errors import MassiveError, NonFiniteError
from massive.models import byte_tokenizer
from massive.perplexity import Perplexity, perplexity
from massive.sequences import perplexity_chunks

LAYER, DIM = 1, 7
A = 66  # the byte tokenizer's id of "a"


def planted(family="llama", **kwargs):
    return tiny.plant(tiny.build(family), layer=LAYER, dim=DIM, **kwargs)


@contextmanager
def recording(model, seen: dict):
    """Keep a copy of every block's output (blocks.L.hook_resid_post) in seen[L]."""
    keep = lambda h, name: seen.__setitem__(hooks.layer_of(name), h.clone())  # noqa: E731
    with hooks.hooked(model, {name: keep for name in hooks.names(model, "blocks.*.hook_resid_post")}):
        yield


def outputs(model, ids, name=None, means=None, layers=(LAYER,), seed=0):
    """Every block's output (and the logits), under intervention `name` (None: untouched)."""
    seen = {}
    ctx = interventions.Context(roles=torch.zeros_like(ids), means=means or {}, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        if name is None:
            with recording(model, seen):
                logits = model(ids).logits
        else:  # the recording hooks are registered after the intervention's, so they see its result
            with interventions.applied(model, name, list(layers), [DIM], 100.0, 1000.0, ctx), recording(model, seen):
                logits = model(ids).logits
    return seen, logits, ctx


# ---------------------------------------------------------------- the interventions, in memory
def test_zero_changes_exactly_the_massive_entries():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    after, _, ctx = outputs(model, ids, "zero")
    diff = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert sorted(diff) == [[b, 0, DIM] for b in range(3)]
    assert ctx.changed == 3
    assert torch.all(after[LAYER][:, 0, DIM] == 0)
    for layer in range(LAYER):
        assert torch.equal(before[layer], after[layer])


def test_random_control_touches_no_massive_entry_and_as_many_others():
    model, ids = planted(), tiny.sequences(3, 20)
    before, _, _ = outputs(model, ids)
    after, _, ctx = outputs(model, ids, "random_zero", seed=3)
    changed = (before[LAYER] != after[LAYER]).nonzero().tolist()
    assert ctx.changed == 3 and len(changed) <= 3  # an entry that was already 0 stays "unchanged"
    assert all(not (t == 0 and d == DIM) for _, t, d in changed)
    assert torch.all(after[LAYER][:, 0, DIM] == before[LAYER][:, 0, DIM])


def test_mean_with_the_observed_value_reproduces_the_logits():
    model, ids = planted(), tiny.sequences(1, 20)
    before, logits, _ = outputs(model, ids)
    observed = float(before[LAYER][0, 0, DIM])
    _, logits_mean, ctx = outputs(model, ids, "mean", means={(LAYER, DIM, "first"): observed})
    assert ctx.changed == 1
    assert torch.equal(logits, logits_mean)


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi"])
def test_planted_bias_zero_breaks_mean_keeps(family):
    """The planted activation is constant across inputs: zero changes logits, mean does not."""
    model, ids = planted(family), tiny.sequences(4, 20, seed=1)
    before, logits, _ = outputs(model, ids)
    value = float(before[LAYER][:, 0, DIM].mean())
    _, zero_logits, _ = outputs(model, ids, "zero")
    _, mean_logits, _ = outputs(model, ids, "mean", means={(LAYER, DIM, "first"): value})
    assert (zero_logits - logits).abs().max() > 1e-2
    torch.testing.assert_close(mean_logits, logits, rtol=1e-4, atol=1e-4)


def test_unknown_intervention_is_a_massive_error():
    model, ids = planted(), tiny.sequences(1, 8)
    with pytest.raises(MassiveError, match="unknown intervention 'halve'"):
        with interventions.applied(model, "halve", [0], [DIM], 100, 1000, interventions.Context(0, ids)):
            pass
    with pytest.raises(MassiveError, match="unknown intervention 'halve'"):
        with massive.intervene(model, interventions.Targets([0], [DIM], {}), "halve"):
            pass


def test_parse_layers():
    assert interventions.parse_layers("emerge", 3, 10) == [3]
    assert interventions.parse_layers("emerge", None, 10) == []
    assert interventions.parse_layers("all", 3, 4) == [0, 1, 2, 3]
    assert interventions.parse_layers([2, 5], 3, 10) == [2, 5]
    assert interventions.parse_layers(4, 3, 10) == [4]
    with pytest.raises(MassiveError, match="ablate layer 12 is out of range: the model has blocks 0..9"):
        interventions.parse_layers([12], 3, 10)
    for bad in ("2_5", "12", [], [1.5], [True]):
        with pytest.raises(MassiveError, match="not 'emerge', 'all' or a list of block indices"):
            interventions.parse_layers(bad, 3, 10)


def test_position_means_is_the_mean_block_input():
    model, ids = planted(), tiny.sequences(4, 12)
    means = interventions.position_means(model, ids.split(3), lambda b: model(b), [0, 5])
    with torch.inference_mode(), hooks.cache(model, hooks.names(model, "blocks.*.hook_resid_pre")) as store:
        model(ids)
    assert sorted(means) == list(range(tiny.L))
    for layer, m in means.items():
        torch.testing.assert_close(m, store[hooks.resid_pre(layer)][:, [0, 5]].mean(0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the high-level API, in memory
def test_intervene_on_a_detection_in_memory():
    model, tok = planted(), byte_tokenizer()
    ids = tiny.sequences(4, 20)
    found = detect(capture(model, ids, k=8, tok=tok), min_abs=100, min_ratio=1000)
    assert found.dims == [DIM] and found.emerge_layer == LAYER

    base = perplexity(model, ids, batch_size=2)
    with massive.intervene(model, found, "zero", layers="emerge", tokenizer=tok, seed=1) as ctx:
        zero = perplexity(model, ids, batch_size=2)
    assert ctx.changed == 4 and zero.value != pytest.approx(base.value, rel=1e-3)
    with massive.intervene(model, found, "mean", tokenizer=tok) as ctx:  # position 0 is the same in every sequence
        mean = perplexity(model, ids, batch_size=2)
    assert ctx.changed == 4 and mean.value == pytest.approx(base.value, rel=1e-5)
    with massive.intervene(model, found, "zero", layers=[2, 3]) as ctx:  # zeroed after block 2: gone after block 3
        perplexity(model, ids)
    assert ctx.changed == 4
    with massive.intervene(model, found, "mean", layers="all", tokenizer=tok) as ctx:  # blocks 1..3 hold it, block 0 not
        perplexity(model, ids)
    assert ctx.changed == 12
    with pytest.raises(MassiveError, match="'mean' needs the token roles"):
        with massive.intervene(model, found, "mean"):
            pass
    with pytest.raises(MassiveError, match="ablate layer 9 is out of range: the model has blocks 0..3"):
        with massive.intervene(model, found, "zero", layers=[9]):
            pass


def test_perplexity_matches_an_independent_reference():
    model, ids = planted(), tiny.sequences(3, 16, seed=2)
    ppl = perplexity(model, ids, batch_size=2, device=torch.device("cpu"))
    with torch.inference_mode():
        losses = [model(ids[i : i + 1], labels=ids[i : i + 1]).loss.item() for i in range(3)]  # HF's own shift and mean
    assert isinstance(ppl, Perplexity) and ppl.n_tokens == 3 * 15
    value, n = ppl
    assert value == float(ppl) == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_float16_overflow_is_a_non_finite_error_naming_where_and_the_dtype():
    model = planted(gain=2000.0)  # the planted activation is about 127,000 > 65,504
    ids = tiny.sequences(2, 16)
    assert math.isfinite(perplexity(model, ids).value)
    with pytest.raises(NonFiniteError, match=r"^ablate: intervention 'none': the cross-entropy .* is nan "
                                             r"\(dtype float16; run the model in float32 or bfloat16"):
        perplexity(model.half(), ids, where="ablate: intervention 'none'")


# ---------------------------------------------------------------- rule ablate, through its command line
DOCS = [f"A banana and a papaya, said a man at a bazaar in Panama: number {i}." for i in range(12)]


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """A fetched planted model (an overflow in float16), its detection, and a corpus: the overrides."""
    from pipeline import capture, detect, fetch_model
    from pipeline.cli import compose
    from pipeline.io import corpus_file, tokens_file, write_table

    root = tmp_path_factory.mktemp("ablate")
    path = tiny.save(tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, token_id=A, gain=2000.0), root / "hf")
    base = ["model=tiny_random", "model.source=local", f"model.path={path}", "model.seq_len=32", "capture.top_k=8",
            "ablate.max_chunks=4", f"paths.root={root}", "wandb.mode=disabled"]
    cfg = compose(base)
    fetch_model.run(cfg)
    ids = tiny.sequences(4, 32, first=A)
    write_table(pd.DataFrame({"seq_id": range(4), "input_ids": ids.tolist()}), tokens_file(cfg), cfg)
    write_table(pd.DataFrame({"id": range(len(DOCS)), "text": DOCS}), corpus_file(cfg), cfg)
    capture.run(cfg)
    detect.run(cfg)
    return root, base


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ablate_dir(root):
    return root / "results" / "tiny_random" / "wiki_sample" / "ablate"


def test_joined_layers_override_is_rejected(detected):
    root, base = detected
    assert_one_line_error(run_module("ablate", *base, "ablate.layers=1_2"), "ablate.layers=[1,2]")
    assert not (ablate_dir(root) / "12").exists() and not (ablate_dir(root) / "1_2").exists()


def test_a_list_of_layers_ablates_those_blocks(detected):
    root, base = detected
    proc = run_module("ablate", *base, "ablate.layers=[1,2]", "ablate.interventions=[none,zero,mean]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(ablate_dir(root) / "1_2" / "perplexity.parquet")
    assert table["layers"].tolist() == ["1_2"] * 3 and table["blocks"].tolist() == ["1,2"] * 3
    assert table["dims"].tolist() == [str(DIM)] * 3
    n_a = int((perplexity_chunks(byte_tokenizer(), DOCS, 32, 4) == A).sum())  # each "a" holds one
    # zeroed after block 1, it is gone after block 2; set to its mean, it is there again
    assert table.set_index("intervention")["entries_changed"].to_dict() == {"none": 0, "zero": n_a, "mean": 2 * n_a}
    assert table["perplexity"].map(math.isfinite).all()


def test_out_of_range_block_fails_with_one_line(detected):
    root, base = detected
    assert_one_line_error(run_module("ablate", *base, "ablate.layers=[1,99]"), "99", "0..3")
    assert not (ablate_dir(root) / "1_99").exists()


def test_float16_overflow_fails_with_one_line_and_keeps_the_good_table(detected):
    from pipeline import ablate
    from pipeline.cli import main

    root, base = detected
    main("ablate", ablate.run, argv=[*base, "ablate.interventions=[none,zero]"])  # float32: a good table
    good = ablate_dir(root) / "emerge" / "perplexity.parquet"
    record = ablate_dir(root) / ".hydra" / "config.yaml"  # hydra.run.dir: results/<model>/<corpus>/ablate
    before = digest(good), digest(record)
    proc = run_module("ablate", *base, "ablate.interventions=[none,zero]", "model.dtype=float16")
    line = assert_one_line_error(proc, "ablate", "intervention 'none' at blocks 1", "nan", "float16", "float32 or bfloat16")
    assert "perplexity" in line or "cross-entropy" in line
    assert (digest(good), digest(record)) == before
    assert not list((ablate_dir(root) / "emerge").glob(".perplexity.parquet.*"))  # no temporary file left


def test_bad_inputs_fail_with_one_line(tmp_path):
    base = ["model=tiny_random", f"paths.root={tmp_path}"]
    assert_one_line_error(run_module("ablate", *base, "ablate.interventions=[none,halve]"), "halve")
    assert_one_line_error(run_module("ablate", *base, "ablate.max_chunks=0"), "ablate.max_chunks=0")
    assert_one_line_error(run_module("ablate", *base, "tokenize.num_sequences=0"), "tokenize.num_sequences=0")
