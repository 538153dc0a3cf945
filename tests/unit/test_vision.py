"""Vision transformers: tiny random CLIP-vision, DINOv2 with and without registers and ViT-MAE
models, with planted massive activations, through the same capture, detection and
interventions as the LLMs. The library (massive.vision.images, massive.vision.vit) in memory first where it
can be, then the rules."""

import pytest
import torch

from massive.core import arch, hooks
from massive.core.errors import MassiveError
from massive.intervene import interventions
from massive.vision import images
from massive.vision import vit as vision

import tiny
from topics.vision import DIM, LAYER, REGISTER, image_folder


def test_layout_names_and_roles():
    lay = arch.Layout(n_cls=1, n_registers=4, grid=(2, 3))
    assert lay.seq_len == 11
    assert [lay.name(p) for p in (0, 1, 4, 5, 10)] == ["[CLS]", "[REG0]", "[REG3]", "patch 0,0", "patch 1,2"]
    assert lay.positions("register") == [1, 2, 3, 4]
    assert all(arch.role_of_name(lay.name(p)) == lay.role(p) for p in range(lay.seq_len))
    roles = images.ImageRoles(lay)(torch.zeros(2, 3, 8, 8))
    assert roles.shape == (2, 11) and [interventions.ROLES[i] for i in roles[1, [0, 1, 5]]] == [
        "cls",
        "register",
        "patch",
    ]


@pytest.mark.parametrize("family", tiny.VIT_FAMILIES)
def test_hooks_leave_vit_outputs_bit_identical(family):
    model = tiny.build_vit(family)
    pixels = tiny.image_processor()(images=tiny.photos(2), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        plain = model(**arch.forward_kwargs(model, pixels)).last_hidden_state
        with hooks.cache(model, hooks.names(model, "blocks.*.hook_resid_post")) as store:
            hooked = model(**arch.forward_kwargs(model, pixels)).last_hidden_state
    assert torch.equal(plain, hooked)
    assert len(store) == tiny.L and store[hooks.resid_post(0)].shape[1] == images.layout_of(model, pixels).seq_len


def block_input(model, pixels, index: int, name=None, ctx=None, roles=None):
    """The input of block `index` (after any intervention's, whose hooks are registered first)."""
    with torch.inference_mode():
        if name is None:
            with hooks.cache(model, [hooks.resid_pre(index)]) as seen:
                model(**arch.forward_kwargs(model, pixels))
        else:
            with (
                interventions.applied(model, name, [], [], 100.0, 1000.0, ctx, roles),
                hooks.cache(model, [hooks.resid_pre(index)]) as seen,
            ):
                model(**arch.forward_kwargs(model, pixels))
    return seen[hooks.resid_pre(index)]


def test_fix_register_mean_changes_only_register_positions():
    model = tiny.build_vit("dinov2_with_registers")
    processor = tiny.image_processor()
    calibration = processor(images=tiny.photos(6, seed=1), return_tensors="pt")["pixel_values"]
    pixels = processor(images=tiny.photos(3, seed=2), return_tensors="pt")["pixel_values"]
    lay = images.layout_of(model, pixels)
    assert lay == arch.Layout(n_cls=1, n_registers=tiny.REGISTERS, grid=(4, 4))
    registers = lay.positions("register")
    others = [p for p in range(lay.seq_len) if p not in registers]
    means = interventions.position_means(
        model, calibration.split(4), lambda b: model(**arch.forward_kwargs(model, b)), registers
    )
    assert sorted(means) == list(range(tiny.L)) and means[0].shape == (tiny.REGISTERS, tiny.D)
    before = block_input(model, pixels, 0)
    # at the first block's input the registers are learned constants: their mean over images is themselves
    assert torch.allclose(means[0], before[0, registers], atol=1e-6)

    # first block's input, with means that differ from the tokens: exactly the register positions change
    shifted = {layer: m + 1.0 for layer, m in means.items()}
    ctx = interventions.Context(layer=-1, roles=torch.zeros(0, 0, dtype=torch.long), register_means=shifted)
    after = block_input(model, pixels, 0, "fix_register_mean", ctx, images.ImageRoles(lay))
    changed = (before != after).any(-1)  # [image, position]
    assert changed[:, registers].all() and not changed[:, others].any()
    assert torch.allclose(after[:, registers], shifted[0].expand(3, -1, -1))
    assert ctx.changed == 3 * tiny.REGISTERS * tiny.D * tiny.L  # before every block

    # second block's input, with the calibration means: the registers (which now depend on the image) are fixed
    ctx = interventions.Context(layer=-1, roles=torch.zeros(0, 0, dtype=torch.long), register_means=means)
    before, after = (
        block_input(model, pixels, 1),
        block_input(model, pixels, 1, "fix_register_mean", ctx, images.ImageRoles(lay)),
    )
    changed = (before != after).any(-1)
    assert changed[:, registers].all() and not changed[:, others].any()
    assert torch.allclose(after[:, registers], means[1].expand(3, -1, -1))


def test_image_folder_labels_and_the_seeded_sample(tmp_path):
    folder = image_folder(tmp_path / "imgs", n=9, classes=3)
    table = images.image_folder(str(folder))
    assert table["label"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert table["class_name"].tolist()[::3] == ["class0", "class1", "class2"]
    picked = images.sample(table, 4, seed=1)
    assert len(picked) == 4 and list(picked.index) == sorted(picked.index)
    assert picked.equals(images.sample(table, 4, seed=1)) and picked["label"].nunique() > 1
    assert images.sample(table, 20, seed=1).equals(table)
    (folder / "stray.png").write_bytes((folder / "class0" / "img0.png").read_bytes())
    with pytest.raises(MassiveError, match="mixes class folders and files"):
        images.image_folder(str(folder))


def test_mae_keeps_every_patch_in_place():
    model = tiny.build_vit("vit_mae")
    pixels = tiny.image_processor()(images=tiny.photos(2), return_tensors="pt")["pixel_values"]
    seen = block_input(model, pixels, 0)
    emb = model.embeddings
    with torch.inference_mode():
        patches = emb.patch_embeddings(pixels) + emb.position_embeddings[:, 1:]
    assert seen.shape[1] == 1 + (tiny.IMAGE // tiny.PATCH) ** 2  # mask_ratio 0: nothing dropped
    assert torch.allclose(seen[:, 1:], patches, atol=1e-6)  # and nothing shuffled


# ---------------------------------------------------------------- massive.vision.vit, in memory
def test_final_embedding_is_the_normed_cls_token():
    model = tiny.build_vit("dinov2_with_registers")
    pixels = tiny.image_processor()(images=tiny.photos(3), return_tensors="pt")["pixel_values"]
    with torch.inference_mode(), vision.FinalEmbedding(model, cls_position=0) as embed:
        out = model(pixel_values=pixels).last_hidden_state  # dinov2's last_hidden_state is the final norm's output
    assert torch.equal(embed.value, out[:, 0]) and embed._hooks is None  # and the hook is gone
    with torch.inference_mode(), vision.FinalEmbedding(model, cls_position=None) as embed:
        model(pixel_values=pixels)
    assert torch.allclose(embed.value, out.mean(1))


def test_image_batches_read_each_image_once_in_batches(tmp_path):
    folder = image_folder(tmp_path / "imgs", n=5, classes=2)
    table = images.image_folder(folder)
    batches = images.ImageBatches(tiny.image_processor(), table["path"], images.labels_of(table), batch_size=2)
    got = list(batches)
    assert len(batches) == 3 and [len(p) for p, _ in got] == [2, 2, 1]
    assert torch.equal(torch.cat([y for _, y in got]), torch.tensor(table["label"].to_numpy()))
    assert torch.equal(torch.cat([p for p, _ in got]), images.preprocess(tiny.image_processor(), table["path"]))
    assert images.labels_of(images.image_folder(image_folder(tmp_path / "flat", n=2))) is None


def planted_means(model, pixels, position: int) -> dict:
    """The (block, dim, role) means of the planted activation, as massive_means gives them."""
    with torch.inference_mode(), hooks.cache(model, [hooks.resid_post(LAYER)]) as store:
        model(pixel_values=pixels)
    value = float(store[hooks.resid_post(LAYER)][:, position, DIM].mean())
    return {(LAYER, DIM, "register"): value, (LAYER, DIM, "any"): value}


def test_evaluate_interventions_in_memory():
    model = tiny.plant_vit(tiny.build_vit("dinov2_with_registers"), LAYER, DIM, register=REGISTER)
    processor = tiny.image_processor()
    calibration = processor(images=tiny.photos(4, seed=1), return_tensors="pt")["pixel_values"]
    pixels = processor(images=tiny.photos(5, seed=2), return_tensors="pt")["pixel_values"]
    names = ["zero", "mean", "none", "random_zero", "fix_register_mean"]
    table = vision.evaluate_interventions(
        model,
        pixels,
        names,
        calibration=calibration,
        layers=[LAYER],
        dims=[DIM],
        means=planted_means(model, calibration, 1 + REGISTER),
        batch_size=2,
    )
    table = table.set_index("intervention")
    assert list(table.index) == ["none", "zero", "mean", "random_zero", "fix_register_mean"]  # the baseline first
    assert table.loc["none", "cls_cosine"] == pytest.approx(1.0) and table.loc["none", "entries_changed"] == 0
    assert table.loc["zero", "entries_changed"] == 5 and table.loc["random_zero", "entries_changed"] == 5
    assert table.loc["zero", "cls_cosine"] < table.loc["mean", "cls_cosine"] and table.loc["mean", "cls_cosine"] > 0.999
    assert table.loc["fix_register_mean", "blocks"] == "all" and table.loc["zero", "blocks"] == str(LAYER)
    assert table.loc["fix_register_mean", "entries_changed"] == 5 * tiny.REGISTERS * tiny.D * tiny.L
    assert (table["n_images"] == 5).all() and (table["n_calibration"] == 4).all() and table["top1"].isna().all()
    # the same numbers from (pixels, labels) batches of another size: every image once, in order
    again = vision.evaluate_interventions(
        model,
        [(b, None) for b in pixels.split(3)],
        names,
        calibration=calibration,
        layers=[LAYER],
        dims=[DIM],
        means=planted_means(model, calibration, 1 + REGISTER),
        batch_size=2,
    ).set_index("intervention")
    assert again["entries_changed"].equals(table["entries_changed"])
    assert again["cls_cosine"].to_numpy() == pytest.approx(table["cls_cosine"].to_numpy(), abs=1e-6)


def test_evaluate_interventions_without_registers_and_bad_calls(tmp_path):
    model = tiny.build_vit("dinov2")
    pixels = tiny.image_processor()(images=tiny.photos(2), return_tensors="pt")["pixel_values"]
    table = vision.evaluate_interventions(model, pixels, ["none", "fix_register_mean"]).set_index("intervention")
    assert table.loc["fix_register_mean", "note"] == "no register tokens: nothing to fix"
    assert table.loc["fix_register_mean", "cls_cosine"] == pytest.approx(1.0) and (table["n_registers"] == 0).all()
    with pytest.raises(MassiveError, match="must include 'none'"):
        vision.evaluate_interventions(model, pixels, ["zero"])
    with pytest.raises(MassiveError, match="unknown intervention 'halve'"):
        vision.evaluate_interventions(model, pixels, ["none", "halve"])
    with pytest.raises(MassiveError, match="needs calibration images"):
        vision.evaluate_interventions(tiny.build_vit("dinov2_with_registers"), pixels, ["none", "fix_register_mean"])
    with pytest.raises(MassiveError, match="no CLIP text tower"):
        vision.zeroshot_head(tiny.save_vit(model, tmp_path / "hf"), ["cat"])
    with pytest.raises(MassiveError, match="is not a file"):
        vision.read_class_names(tmp_path / "classes.txt")
