"""The retraining experiment: GPT variants (massive/retrain/gpt.py), Bigram-Backcopy (massive/retrain/backcopy.py),
training (massive/retrain/training/, in memory), and the rules train / train_compare."""

from __future__ import annotations

import math

import pytest
import torch

from massive.core import hooks
from massive.core.errors import MassiveError, NonFiniteError
from massive.retrain import training
from massive.retrain.backcopy import START, Backcopy, BackcopySpec
from massive.retrain.gpt import GPT, VARIANTS, GPTConfig

from topics.train import TINY, tiny

torch.set_num_threads(1)


def batch(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the variants
def test_attn_bias_with_slot_masked_equals_default_exactly():
    default, biased = tiny("default"), tiny("attn_bias", seed=1)
    result = biased.load_state_dict(default.state_dict(), strict=False)
    assert sorted(result.missing_keys) == [f"blocks.{i}.attn.{k}" for i in range(2) for k in ("k_bias", "v_bias")]
    assert not result.unexpected_keys
    x = batch()
    assert not torch.equal(biased(x).logits, default(x).logits)  # the slot does something ...
    for block in biased.blocks:
        block.attn.slot_enabled = False
    assert torch.equal(biased(x).logits, default(x).logits)  # ... and nothing else differs


def test_softmax_plus_one_equals_attn_bias_with_zero_slot():
    plus_one, biased = tiny("softmax_plus_one"), tiny("attn_bias", seed=1)
    biased.load_state_dict(plus_one.state_dict(), strict=False)
    x = batch()
    assert not torch.equal(biased(x).logits, plus_one(x).logits)
    with torch.no_grad():
        for block in biased.blocks:
            block.attn.k_bias.zero_()
            block.attn.v_bias.zero_()
    assert torch.equal(biased(x).logits, plus_one(x).logits)
    # the +1: every query's probabilities over the tokens sum to < 1, the rest sits on the zero slot
    att = plus_one(x, return_attn=True).attentions[0]
    assert att.shape == (4, 2, 16, 17)
    assert (att[..., 1:].sum(-1) < 1).all() and torch.allclose(att.sum(-1), torch.ones(()))


def test_sink_token_is_prepended_and_dropped_before_the_final_norm():
    model = tiny("sink_token")
    x = batch()
    seen, normed = [], []
    model.ln_f.register_forward_hook(lambda m, i, o: normed.append(i[0].shape))
    with hooks.hooked(model, {hooks.resid_post(layer): lambda h, name: seen.append(h.shape) for layer in range(2)}):
        out = model(x, return_attn=True)
    assert out.logits.shape == (4, 16, 64)
    assert seen == [(4, 17, 32)] * 2  # the residual stream carries the sink at position 0
    assert normed == [(4, 16, 32)]  # dropped before the final norm
    assert out.attentions[0].shape == (4, 2, 17, 17)
    before = out.logits
    with torch.no_grad():
        model.sink.add_(1.0)
    assert not torch.allclose(model(x).logits, before)  # tokens attend to it


def test_gated_gate_and_every_variant_fits_the_capture():
    from massive.core.arch import find_parts

    for variant in VARIANTS:
        model = tiny(variant)
        parts = find_parts(model)
        assert len(parts.blocks) == 2 and parts.final_norm is model.ln_f
        assert all(a is b.attn for a, b in zip(parts.attentions, model.blocks))
        assert all(m is b.mlp for m, b in zip(parts.mlps, model.blocks))
        assert model.config.model_type == "massive_gpt" and model.config.max_position_embeddings == 16
        assert isinstance(model.blocks[0](torch.zeros(1, 3, 32)), torch.Tensor)
    gated = tiny("gated")
    x = batch()
    before = gated(x).logits
    with torch.no_grad():
        for block in gated.blocks:
            block.attn.c_gate.bias.fill_(-30.0)  # gates shut: attention contributes nothing
    shut = gated(x).logits
    assert not torch.allclose(before, shut)
    plain = tiny("default")
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "c_gate" not in k})
    for block in plain.blocks:  # the same as a model whose attention outputs only its c_proj bias
        block.attn.forward = (lambda proj: lambda h: proj.bias.expand(*h.shape[:-1], -1))(block.attn.c_proj)
    assert torch.allclose(shut, plain(x).logits, atol=1e-5)


def test_unknown_variant_in_the_model_config():
    with pytest.raises(MassiveError, match="variant='nope'"):
        GPTConfig(variant="nope")
    with pytest.raises(MassiveError, match="longer than block_size=16"):
        tiny("default")(torch.zeros(1, 17, dtype=torch.long))


# ---------------------------------------------------------------- Bigram-Backcopy
def test_backcopy_is_seeded_and_copies_after_triggers():
    task = Backcopy(BackcopySpec())
    x, y = task.batch("train", 7, 32, 64)
    x2, _ = task.batch("train", 7, 32, 64)
    assert torch.equal(x, x2) and not torch.equal(x, task.batch("train", 8, 32, 64)[0])
    assert not torch.equal(x, task.batch("val", 7, 32, 64)[0])
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert (x[:, 0] == START).all() and (x[:, 1:] != START).all() and int(x.max()) < 64
    seq = torch.cat([x, y[:, -1:]], dim=1)
    trig = task.is_trigger[seq[:, 1:-1]]  # position t = 1 .. L-2 holds a trigger
    copies = seq[:, 2:][trig] == seq[:, :-2][trig]  # the successor equals the token before it
    assert trig.sum() > 20 and copies.all()
    assert len(task.triggers) == 3 and torch.allclose(task.bigram.sum(1), torch.ones(64, dtype=torch.float64))


# ---------------------------------------------------------------- training, in memory (massive.retrain.training)
SPEC = dict(batch_size=8, block_size=16, warmup_iters=2, eval_iters=2, log_interval=2)


def setup(variant: str, seed: int = 1, **spec):
    spec = training.TrainSpec(**{**SPEC, **spec})
    model, optimizer = training.build(GPTConfig(**TINY, variant=variant), spec, seed=seed)
    data = training.BackcopyBatches(BackcopySpec(), seed=seed)
    probe, _ = data.batch("probe", 0, 4, 16)
    return model, optimizer, data, spec, probe


def test_one_optimizer_step_lowers_the_loss_on_a_fixed_batch():
    model, optimizer, data, _, _ = setup("attn_bias")
    x, y = data.batch("train", 0, 8, 16)
    losses = []
    for _ in range(2):
        loss = model(x, targets=y).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[1] < losses[0]


def test_lr_schedule_warms_up_then_holds_or_decays():
    constant = training.TrainSpec(lr=1.0, min_lr=0.1, warmup_iters=3, max_iters=13, schedule="constant")
    cosine = training.TrainSpec(lr=1.0, min_lr=0.1, warmup_iters=3, max_iters=13, schedule="cosine")
    assert [training.lr_at(s, constant) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert training.lr_at(12, constant) == 1.0
    assert training.lr_at(3, cosine) == 1.0 and training.lr_at(8, cosine) == pytest.approx(0.55)
    assert training.lr_at(13, cosine) == pytest.approx(0.1) and training.lr_at(99, cosine) == pytest.approx(0.1)


def test_emergence_reads_the_residual_stream_and_the_sinks():
    x = batch()
    for variant in ("default", "sink_token", "attn_bias"):
        model = tiny(variant).train()
        rows = training.emergence(model, x, sink_threshold=0.3)
        assert model.training  # left as it was
        assert [r["layer"] for r in rows] == [0, 1]
        with hooks.cache(model, [hooks.resid_post(1)]) as store:
            out = model(x, return_attn=True)
        a = store[hooks.resid_post(1)].abs()
        assert rows[1]["top1_abs"] == pytest.approx(a.flatten(1).max(1).values.mean().item())
        assert rows[1]["first_abs"] == pytest.approx(a[:, 0].max(1).values.mean().item())
        n_slot = model.config.n_slot
        first = out.attentions[1][:, :, 1:, n_slot].mean(dim=(0, 2))
        assert rows[1]["first_attn"] == pytest.approx(first.mean().item())
        assert rows[1]["sink_heads"] == (first > 0.3).float().mean().item()
        assert (rows[0]["slot_attn"] > 0) == (variant == "attn_bias")
        assert all(0 <= r["sink1"] <= 1 and r["sink1"] == rows[0]["sink1"] for r in rows)
        assert rows[0]["top1_over_median"] == pytest.approx(rows[0]["top1_abs"] / rows[0]["median_abs"])


def test_train_in_memory_then_resume_from_a_checkpoint_exactly(tmp_path):
    seen = []
    model, optimizer, data, spec, probe = setup("sink_token", max_iters=6, eval_interval=3, checkpoint_interval=3)
    straight = training.train(
        model, optimizer, data, spec, probe, on_eval=lambda step, rows, all_rows: seen.append(step)
    )
    assert seen == [0, 3, 6] and len(straight["losses"]) == 6
    assert sorted({(r["step"], r["layer"]) for r in straight["rows"]}) == [(s, l) for s in (0, 3, 6) for l in (0, 1)]
    assert straight["rows"][-1]["tokens"] == 6 * 8 * 16

    ckpt = tmp_path / "run" / "checkpoint.pt"
    model, optimizer, data, spec3, probe = setup("sink_token", max_iters=3, eval_interval=3, checkpoint_interval=3)
    training.train(model, optimizer, data, spec3, probe, checkpoint=ckpt)  # a run that stops at step 3 ...
    model, optimizer, data, spec, probe = setup("sink_token", max_iters=6, eval_interval=3, checkpoint_interval=3)
    step, state = training.load_checkpoint(ckpt, model, optimizer)
    assert step == 3 and len(state["losses"]) == 3
    resumed = training.train(model, optimizer, data, spec, probe, step=step, state=state)  # ... resumes
    assert resumed["losses"] == straight["losses"]  # bit for bit
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    assert strip(resumed["rows"]) == strip(straight["rows"])
    assert not list(ckpt.parent.glob("*.tmp"))

    other, other_opt, *_ = setup("attn_bias")
    with pytest.raises(MassiveError, match="different model"):
        training.load_checkpoint(ckpt, other, other_opt)
    trained, saved = training.load_trained(ckpt)
    assert saved["step"] == 3 and trained.config.variant == "sink_token" and not trained.training


def test_summarise_one_variant():
    import pandas as pd

    model, optimizer, data, spec, probe = setup("default", max_iters=2, eval_interval=2)
    state = training.train(model, optimizer, data, spec, probe)
    layers = training.emergence(model, probe)
    row = training.summarise("default", pd.DataFrame(state["rows"]), 2, layers, min_abs=100, min_ratio=1000)
    assert row["val_loss"] == state["rows"][-1]["val_loss"] and row["step"] == 2
    assert row["max_top1_over_median"] == max(r["top1_over_median"] for r in layers)
    assert row["massive"] is False and "layer1_start_over_median" in row and "layer1_start_value_ratio" in row
    start = max(layers, key=lambda r: r["start_over_median"])
    assert (row["start_over_median"], row["start_layer"]) == (start["start_over_median"], start["layer"])
    assert (
        row["start_attn"] == layers[0]["first_attn"]
        and row["block0_start_over_median"] == layers[0]["start_over_median"]
    )
    assert training.summarise("default", pd.DataFrame(state["rows"]), 2, layers, 0.0, 0.0)["massive"] is True


def test_a_non_finite_loss_is_an_error():
    model, optimizer, data, spec, probe = setup("default", max_iters=2, eval_interval=100)
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")  # the start token's embedding: every sequence sees it
    with pytest.raises(NonFiniteError, match="train-split loss estimate at step 0 is nan .*float16"):
        training.train(model, optimizer, data, spec, probe, dtype="float16")
    with pytest.raises(NonFiniteError, match="training loss at step 1 is nan"):  # no evaluation at step 1
        training.train(model, optimizer, data, spec, probe, step=1)


# ---------------------------------------------------------------- the factor switches (issue 18)
def test_decay_groups_name_exactly_the_parameters_they_decay():
    model = GPT(GPTConfig(**TINY, variant="attn_bias"))
    names = {id(p): n for n, p in model.named_parameters()}
    every = set(names.values())

    def decayed(decay):
        groups = model.optimizer_groups(0.1, decay)
        assert sorted(n for g in groups for n in (names[id(p)] for p in g["params"])) == sorted(every)  # each once
        return {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}

    matrices = decayed("matrices")
    assert matrices == {n for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith(("k_bias", "v_bias"))}
    assert "blocks.0.ln_1.weight" not in matrices and "blocks.0.attn.c_attn.bias" not in matrices
    assert "blocks.0.attn.k_bias" not in matrices and "wte.weight" in matrices
    assert decayed("all") == every and decayed("none") == set()
    spec = training.TrainSpec(decay="all", weight_decay=0.05)
    _, optimizer = training.build(GPTConfig(**TINY), spec, seed=1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05]
    with pytest.raises(MassiveError, match="decay='some'"):
        training.TrainSpec(decay="some")


def test_init_and_tying_switches_change_only_what_they_name():
    torch.manual_seed(0)
    gpt2 = GPT(GPTConfig(**TINY))
    torch.manual_seed(0)
    torch_init = GPT(GPTConfig(**TINY, init="pytorch", tie_head=False))
    assert gpt2.lm_head.weight is gpt2.wte.weight and torch_init.lm_head.weight is not torch_init.wte.weight
    assert gpt2.blocks[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    bound = 1 / 32**0.5  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)), std bound / sqrt(3)
    assert torch_init.blocks[0].attn.c_attn.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
    assert torch_init.wte.weight.std().item() == pytest.approx(1.0, rel=0.1)  # nn.Embedding's N(0, 1)
    assert torch_init.blocks[0].attn.c_attn.bias.abs().max().item() > 0  # torch's biases are not zero
    assert len(list(torch_init.parameters())) == len(list(gpt2.parameters())) + 1  # the head's own weight
    with pytest.raises(MassiveError, match="init='xavier'"):
        GPTConfig(**TINY, init="xavier")
    assert gpt2.lm_head.bias is None and GPT(GPTConfig(**TINY, tie_head=False, head_bias=True)).lm_head.bias.shape == (
        64,
    )
    with pytest.raises(MassiveError, match="head_bias=true needs tie_head=false"):
        GPTConfig(**TINY, head_bias=True)


def test_start_switches_change_the_first_ids_of_a_batch():
    inside = Backcopy(BackcopySpec())
    outside = Backcopy(BackcopySpec(start="outside"))
    uniform = Backcopy(BackcopySpec(start="outside", after_start="uniform"))
    xi, _ = inside.batch("train", 0, 512, 16)
    xo, _ = outside.batch("train", 0, 512, 16)
    xu, _ = uniform.batch("train", 0, 512, 16)
    assert (xi[:, 0] == START).all() and (xi[:, 1:] != START).all()  # id 0, never again
    assert (xo[:, 0] == 64).all() and (xo[:, 1:] < 64).all() and outside.n_ids == 65
    # the same language: only the start token's id moved (the same table, triggers, distribution after it)
    assert torch.equal(outside.bigram[1:64, :64], inside.bigram[1:64, :64])
    assert torch.equal(outside.bigram[64, :64], inside.bigram[START, :64]) and outside.bigram[:, 64].sum() == 0
    assert torch.equal(outside.triggers, inside.triggers) and (xo != START).all()
    for task, x in ((inside, xi), (outside, xo), (uniform, xu)):
        assert torch.isfinite(task.bigram).all() and torch.allclose(
            task.bigram.sum(1), torch.ones(task.n_ids, dtype=torch.float64)
        )
        assert not task.is_trigger[x[:, 1]].any()  # position 1 is never a trigger (nothing to copy)
    bigram_row = outside.bigram[outside.start]
    assert set(xo[:, 1].tolist()) <= set(torch.nonzero(bigram_row).flatten().tolist())
    # uniform: every non-trigger ordinary token is about equally likely at position 1
    counts = torch.bincount(xu[:, 1], minlength=65)[:64]
    allowed = ~uniform.is_trigger[:64]
    assert (counts[~allowed] == 0).all() and (counts[allowed] > 0).sum() >= 55
    assert counts[allowed].max() < 5 * 512 / allowed.sum()  # no token takes the row as a Dirichlet(0.2) row would
    assert int((bigram_row > 0.2).sum()) >= 1  # ... which is peaked (the bed before issue 18)
    with pytest.raises(MassiveError, match="backcopy.start='middle'"):
        BackcopySpec(start="middle")
    # loss_on_first=False: the same inputs, only the start token's own target is ignored (-1)
    x1, y1 = uniform.batch("train", 3, 8, 16)
    x2, y2 = Backcopy(BackcopySpec(start="outside", after_start="uniform", loss_on_first=False)).batch(
        "train", 3, 8, 16
    )
    assert (
        torch.equal(x1, x2) and (y2[:, 0] == -1).all() and torch.equal(y1[:, 1:], y2[:, 1:]) and (y1[:, 0] >= 0).all()
    )


def test_grad_clip_switch_clips_exactly_when_set(monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, c: calls.append(c) or real(params, c))
    for clip in (0.5, 0.0):
        model, optimizer, data, spec, _ = setup("default", grad_clip=clip)
        training.train_step(model, optimizer, data, 0, spec)
    assert calls == [0.5]


def test_sgd_trains_and_resumes_like_adamw(tmp_path):
    model, optimizer, data, spec, probe = setup(
        "default", optimizer="sgd", lr=0.3, max_iters=6, eval_interval=3, checkpoint_interval=3
    )
    assert type(optimizer).__name__ == "SGD" and optimizer.param_groups[0]["momentum"] == 0.9
    before = model.wte.weight.detach().clone()
    straight = training.train(model, optimizer, data, spec, probe)
    assert not torch.equal(before, model.wte.weight) and all(map(math.isfinite, straight["losses"]))
    ckpt = tmp_path / "sgd" / "checkpoint.pt"
    model, optimizer, data, spec3, probe = setup(
        "default", optimizer="sgd", lr=0.3, max_iters=3, eval_interval=3, checkpoint_interval=3
    )
    training.train(model, optimizer, data, spec3, probe, checkpoint=ckpt)
    model, optimizer, data, spec, probe = setup(
        "default", optimizer="sgd", lr=0.3, max_iters=6, eval_interval=3, checkpoint_interval=3
    )
    step, state = training.load_checkpoint(ckpt, model, optimizer)
    assert optimizer.state_dict()["state"], "the momentum buffers come back"
    resumed = training.train(model, optimizer, data, spec, probe, step=step, state=state)
    assert resumed["losses"] == straight["losses"]  # bit for bit


def test_value_drain_reads_the_start_tokens_value_state():
    """A planted answer: the start token's embedding is 10 (e_0 - e_1), no other token touches dims 0
    and 1; a value projection that reads only dim 0 gives it a large value state (ratio >> 1), one
    blind to dims 0 and 1 a zero one (value drain)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, bias=False)).eval()
    C = TINY["n_embd"]
    x = batch()
    x[:, 0] = START
    with torch.no_grad():
        model.wte.weight[START] = 0.0
        model.wte.weight[START, :2] = torch.tensor([10.0, -10.0])
        model.wte.weight[1:, :2] = 0.0
        model.wpe.weight[0] = 0.0
        model.wpe.weight[:, :2] = 0.0
        v = model.blocks[0].attn.c_attn.weight[2 * C :]
        v.zero_()
        v[:, 0] = 1.0
    reads_dim0 = training.emergence(model, x)[0]
    with torch.no_grad():
        v.normal_(0, 0.02)
        v[:, :2] = 0.0
    blind = training.emergence(model, x)[0]
    assert reads_dim0["start_value_ratio"] > 20 and blind["start_value_ratio"] < 1e-3
    head_dim = C // TINY["n_head"]  # LayerNorm makes the start token sqrt(C/2) (e_0 - e_1): every value entry sqrt(C/2)
    assert reads_dim0["start_value_norm"] == pytest.approx((C / 2) ** 0.5 * head_dim**0.5, rel=1e-3)


def test_contrast_at_matched_loss_takes_the_better_model_where_it_reaches_the_worse_ones_loss():
    import pandas as pd

    steps = [0, 0, 10, 10, 20, 20]
    h = {
        "default": pd.DataFrame(
            {
                "step": steps,
                "layer": [0, 1] * 3,
                "val_loss": [4, 4, 2.9, 2.9, 2.85, 2.85],
                "start_over_median": [1, 2, 30, 20, 40, 10],
            }
        ),
        "attn_bias": pd.DataFrame(
            {
                "step": steps,
                "layer": [0, 1] * 3,
                "val_loss": [4, 4, 2.84, 2.84, 2.81, 2.81],
                "start_over_median": [1, 2, 5, 8, 12, 10],
            }
        ),
    }
    t = pd.DataFrame({"variant": ["default", "attn_bias"], "val_loss": [2.85, 2.81], "start_over_median": [40.0, 12.0]})
    row = training.contrast(t, h).set_index("variant").loc["attn_bias"]
    assert row["val_loss_gap"] == pytest.approx(-0.04) and row["start_contrast"] == pytest.approx(40 / 12)
    # attn_bias is better: taken at step 10 (2.84 <= default's final 2.85), default at its final step
    assert (row["matched_step"], row["matched_reference_step"]) == (10, 20)
    assert row["matched_val_gap"] == pytest.approx(-0.01) and row["matched_contrast"] == pytest.approx(40 / 8)
    assert training.contrast(t[t["variant"] == "attn_bias"], h)["matched_contrast"].isna().all()
