"""Interventions on massive activations: exact targets, mean as a fixed bias, perplexity (the
library, in memory), and rule ablate through its command line: the layers spec and non-finite
perplexities (issue #12, defects 1 and 2)."""

import hashlib
import math

import pandas as pd
import pytest

from massive.core.models import byte_tokenizer
from massive.core.sequences import perplexity_chunks

import tiny
from helpers import assert_one_line_error, only_id, run_module
from topics.ablation import DIM, LAYER

A = 66  # the byte tokenizer's id of "a"


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
    base = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={path}",
        "model.seq_len=32",
        "capture.top_k=8",
        "ablate.max_chunks=4",
        f"paths.root={root}",
        "wandb.mode=disabled",
    ]
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
    table = pd.read_parquet(only_id(ablate_dir(root) / "1_2") / "perplexity.parquet")
    assert table["layers"].tolist() == ["1_2"] * 3 and table["blocks"].tolist() == ["1,2"] * 3
    assert table["dims"].tolist() == [str(DIM)] * 3
    n_a = int((perplexity_chunks(byte_tokenizer(), DOCS, 32, 4) == A).sum())  # each "a" holds one
    # zeroed after block 1 and kept at 0 after block 2 (sustained); set to its mean, it is there again
    assert table.set_index("intervention")["entries_changed"].to_dict() == {"none": 0, "zero": 2 * n_a, "mean": 2 * n_a}
    assert table["perplexity"].map(math.isfinite).all()


def test_out_of_range_block_fails_with_one_line(detected):
    root, base = detected
    assert_one_line_error(run_module("ablate", *base, "ablate.layers=[1,99]"), "99", "0..3")
    assert not (ablate_dir(root) / "1_99").exists()


def test_float16_overflow_fails_with_one_line_and_keeps_the_good_table(detected):
    import shutil

    from pipeline import ablate
    from pipeline.cli import compose, main
    from pipeline.io import run_dir

    root, base = detected
    main("ablate", ablate.run, argv=[*base, "ablate.interventions=[none,zero]"])  # float32: a good table
    # model.dtype is part of every stage's identity: float16's detection, here the float32 one's tables
    shutil.copytree(
        run_dir(compose(base), "detect"), run_dir(compose([*base, "model.dtype=float16"]), "detect"), dirs_exist_ok=True
    )
    good = only_id(ablate_dir(root) / "emerge") / "perplexity.parquet"
    record = good.parent / ".hydra" / "config.yaml"  # the record: in the keyed folder, beside the outputs
    before = digest(good), digest(record)
    proc = run_module("ablate", *base, "ablate.interventions=[none,zero]", "model.dtype=float16")
    line = assert_one_line_error(
        proc, "ablate", "intervention 'none' at blocks 1", "nan", "float16", "float32 or bfloat16"
    )
    assert "perplexity" in line or "cross-entropy" in line
    assert (digest(good), digest(record)) == before
    assert not list(good.parent.glob(".perplexity.parquet.*"))  # no temporary file left


def test_bad_inputs_fail_with_one_line(tmp_path):
    base = ["model=tiny_random", f"paths.root={tmp_path}"]
    assert_one_line_error(run_module("ablate", *base, "ablate.interventions=[none,halve]"), "halve")
    assert_one_line_error(run_module("ablate", *base, "ablate.max_chunks=0"), "ablate.max_chunks=0")
    assert_one_line_error(run_module("ablate", *base, "tokenize.num_sequences=0"), "tokenize.num_sequences=0")


def test_layers_keyword_and_bootstrap_count_fail_with_one_line(tmp_path):
    base = ["model=tiny_random", f"paths.root={tmp_path}"]
    assert_one_line_error(run_module("ablate", *base, "ablate.bootstrap=0"), "ablate.bootstrap=0")
    assert_one_line_error(run_module("ablate", *base, "ablate.layers=from_emerg"), "from_emerg", "'from_emerge'")
    assert_one_line_error(
        run_module("ablate", *base, "ablate.harmless_factor=3"), "ablate.harmless_factor=3", "harmful_factor"
    )


@pytest.fixture(scope="module")
def regrown(tmp_path_factory):
    """A planted massive activation that block 2 writes again when block 1's is zeroed (block 2's unit
    reads the carrier after the norm, which the massive dim dominates), ablated at emerge, from_emerge
    and block 0 through the command line, then gathered by rule ablation."""
    from pipeline import capture, detect, fetch_model
    from pipeline.cli import compose
    from pipeline.io import corpus_file, tokens_file, write_table

    root = tmp_path_factory.mktemp("regrown")
    model = tiny.plant(
        tiny.plant(tiny.build("llama"), layer=LAYER, dim=DIM, token_id=A, gain=2000.0),
        layer=LAYER + 1,
        dim=DIM,
        token_id=A,
        gain=2000.0,
    )
    base = [
        "model=tiny_random",
        "model.source=local",
        f"model.path={tiny.save(model, root / 'hf')}",
        "model.seq_len=32",
        "capture.top_k=8",
        "ablate.max_chunks=8",
        "ablate.bootstrap=400",
        f"paths.root={root}",
        "wandb.mode=disabled",
    ]
    cfg = compose(base)
    fetch_model.run(cfg)
    write_table(
        pd.DataFrame({"seq_id": range(4), "input_ids": tiny.sequences(4, 32, first=A).tolist()}), tokens_file(cfg), cfg
    )
    write_table(pd.DataFrame({"id": range(len(DOCS)), "text": DOCS}), corpus_file(cfg), cfg)
    capture.run(cfg)
    detect.run(cfg)
    for layers in ("emerge", "from_emerge", "[0]"):
        proc = run_module(
            "ablate", *base, f"ablate.layers={layers}", "ablate.interventions=[none,zero,mean,top_zero,same_token_zero]"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = root / "regrown.yaml"
    sweep.write_text(
        "models: [tiny_random]\ncorpora: [wiki_sample]\n"  # the settings the ablate jobs ran with
        f"overrides: [model.source=local, 'model.path={base[2].split('=', 1)[1]}', model.seq_len=32, capture.top_k=8,"
        " ablate.max_chunks=8, ablate.bootstrap=400]\n"
        "ablate: {interventions: [none, zero, mean, top_zero, same_token_zero], layers: [emerge, from_emerge, [0]]}\n"
    )
    proc = run_module(
        "ablation",
        f"sweep_name={sweep}",
        f"paths.root={root}",
        "wandb.mode=disabled",
        "ablate.harmful_factor=1.05",
        "ablate.harmless_factor=1.02",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_zeroing_once_shows_regrowth_and_from_emerge_keeps_it_at_zero(regrown):
    ablate = ablate_dir(regrown)
    once = pd.read_parquet(only_id(ablate / "emerge") / "regrowth.parquet").set_index(["intervention", "block"])
    kept = pd.read_parquet(only_id(ablate / "from_emerge") / "regrowth.parquet").set_index(["intervention", "block"])
    assert sorted({b for _, b in once.index}) == [
        LAYER,
        LAYER + 1,
        LAYER + 2,
    ]  # the first targeted block and every later one
    n_a = int((perplexity_chunks(byte_tokenizer(), DOCS, 32, 8) == A).sum())
    assert (once["n_targets"] == n_a).all() and once.loc[("none", LAYER), "target_abs"] > 1e5
    assert once.loc[("zero", LAYER), "target_abs"] == 0  # zeroed at block 1 ...
    assert once.loc[("zero", LAYER + 1), "share"] > 0.9  # ... block 2 writes it again
    assert once.loc[("zero", LAYER + 1), "top1_abs"] > 1e5 and once.loc[("zero", LAYER + 1), "median_abs"] < 10
    for block in (LAYER, LAYER + 1, LAYER + 2):
        assert kept.loc[("zero", block), "target_abs"] == 0  # zeroed at every block from 1: it stays at 0
        assert once.loc[("top_zero", block), "share"] == pytest.approx(1, rel=1e-3)  # the controls leave them be
    from massive.measure.regrowth import comes_back

    assert comes_back(once.reset_index(), "zero", 0.5).back_at == LAYER + 1
    assert comes_back(kept.reset_index(), "zero", 0.5).back_at is None
    assert pd.read_parquet(
        only_id(ablate / "0") / "regrowth.parquet"
    ).empty  # nothing massive at block 0: nothing to follow


def test_intervals_are_the_bootstrap_of_the_stored_chunk_nlls(regrown):
    import numpy as np

    table = pd.read_parquet(only_id(ablate_dir(regrown) / "from_emerge") / "perplexity.parquet").set_index(
        "intervention"
    )
    nll, base = np.array(table.loc["zero", "chunk_nll"]), np.array(table.loc["none", "chunk_nll"])
    draws = np.random.default_rng(1).integers(0, len(nll), (400, len(nll)))  # seed=1, ablate.bootstrap=400
    lo, hi = np.percentile([math.exp(nll[i].mean() - base[i].mean()) for i in draws], [2.5, 97.5])
    assert (table.loc["zero", "ratio_lo"], table.loc["zero", "ratio_hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert table.loc["zero", "perplexity"] == pytest.approx(math.exp(nll.mean()))
    assert table.loc["none", "ratio_lo"] == table.loc["none", "ratio_hi"] == 1.0
    once = pd.read_parquet(only_id(ablate_dir(regrown) / "emerge") / "perplexity.parquet").set_index("intervention")[
        "entries_changed"
    ]
    assert once["top_zero"] == once["same_token_zero"] == once["zero"] > 0  # on the tensor zero sees: as many entries
    # sustained: the first block's targets at every later block, for zero and the controls alike
    assert table.loc["zero", "entries_changed"] == table.loc["top_zero", "entries_changed"] == 3 * once["zero"]


def test_verdicts_and_the_report_read_the_evidence(regrown):
    table = pd.read_parquet(regrown / "results" / "ablation_regrown.parquet")
    verdict = table.groupby("layers")["verdict"].first().to_dict()
    # zeroed at every block from 1 the model loses > 5%; zeroed once, block 2 writes it again; at block 0 nothing changes
    assert verdict == {"from_emerge": "harmful", "emerge": "harmless", "0": "harmless"}, table[
        ["layers", "intervention", "ratio_lo", "ratio_hi"]
    ]
    zero = table[table["intervention"] == "zero"].set_index("layers")
    assert zero.loc["from_emerge", "ratio_lo"] > 1.05 and zero.loc["emerge", "ratio_hi"] < 1.02
    assert zero.loc["0", "ratio_lo"] == zero.loc["0", "ratio_hi"] == 1.0
    page = (regrown / "results" / "ablation_regrown.html").read_text()
    assert "at every block from 1 on (from_emerge) is <strong>harmful</strong>" in page
    assert "at block 1 (emerge) is <strong>harmless</strong>" in page
    assert "they come back: by block 2" in page and "they do not come back" in page
    assert (
        "zeroing hurts most at every block from 1 on (from_emerge) (&times;" in page and "not established" not in page
    )
    assert "they stay at 0 at every later block" in page
    assert page.count("data:image/png;base64,") == 2 and 'alt="tiny_random"' in page  # the regrowth figure
    assert 'alt="ablation"' in page  # and the forest plot
    assert (regrown / "results" / "ablation_regrown_regrowth_tiny_random.png").read_bytes().startswith(b"\x89PNG")
    assert len(pd.read_parquet(regrown / "results" / "ablation_regrown_regrowth.parquet")) > 0


HALVE = """from massive.intervene.interventions import intervention


@intervention("halve_plugin")
def halve(h, mask, ctx):
    h[mask] /= 2
    ctx.changed += int(mask.sum())
"""


def test_an_intervention_registered_in_user_code_runs_and_is_in_the_table(detected, tmp_path):
    """A sweep's `plugins` (here a .py file) register interventions; the schema and the job take them."""
    from pipeline.cli import compose
    from pipeline.io import run_dir

    root, base = detected
    plugin = tmp_path / "halve.py"
    plugin.write_text(HALVE)
    argv = [*base, f"plugins=['{plugin}']", "ablate.interventions=[none,halve_plugin]"]
    proc = run_module("ablate", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(run_dir(compose(argv), "ablate") / "perplexity.parquet").set_index("intervention")
    assert list(table.index) == ["none", "halve_plugin"] and table.loc["halve_plugin", "entries_changed"] > 0
    assert_one_line_error(
        run_module("ablate", *base, "plugins=[no_such_plugin_module]"), "no_such_plugin_module", "does not import"
    )
