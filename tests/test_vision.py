"""Vision transformers: tiny random CLIP-vision, DINOv2 with and without registers and ViT-MAE
models, with planted massive activations, through the same capture, detection and
interventions as the LLMs. The library (massive.images, massive.vision) in memory first where it
can be, then the rules."""

import pytest
import torch

import tiny
from helpers import assert_one_line_error, run_module
from massive import arch, hooks, images, interventions, plots, vision
from massive.errors import MassiveError
from pipeline import ablate_images, capture, detect, fetch_corpus, fetch_model, figures, tokenize
from pipeline.io import read_table, run_dir

LAYER, DIM, REGISTER = 1, 7, 2


def image_folder(path, n: int = 6, classes: int = 0):
    """n random images as PNG files: flat, or spread over `classes` class folders."""
    path.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(tiny.photos(n)):
        where = path / f"class{i % classes}" if classes else path
        where.mkdir(exist_ok=True)
        im.save(where / f"img{i}.png")
    return path


def prepare(tmp_path, compose_in, family: str, planted: bool = True, auto_class: str | None = None, model=None,
            classes: int = 0, *extra: str):
    model = model if model is not None else tiny.build_vit(family)
    if planted:
        tiny.plant_vit(model, LAYER, DIM, register=REGISTER if family == "dinov2_with_registers" else None)
    path = tiny.save_vit(model, tmp_path / f"hf_{family}")
    folder = image_folder(tmp_path / "images", classes=classes)
    cfg = compose_in("model=vit_random", "model.source=local", f"model.path={path}", f"model.name=tiny_{family}",
                     f"model.auto_class={auto_class or tiny.VIT_CLASSES[family]}", "data=photos", "data.kind=image_folder",
                     f"data.path={folder}", "data.name=tiny_images", "tokenize.num_sequences=4", "capture.top_k=16",
                     "capture.batch_size=2", "ablate.batch_size=3", *extra)
    fetch_model.run(cfg)
    fetch_corpus.run(cfg)
    tokenize.run(cfg)
    return cfg, model


@pytest.mark.parametrize("family", tiny.VIT_FAMILIES)
def test_capture_and_detection_on_each_vit_family(tmp_path, compose_in, family):
    cfg, _ = prepare(tmp_path, compose_in, family)
    capture.run(cfg)
    detect.run(cfg)
    topk = read_table(run_dir(cfg, "capture") / "topk.parquet")
    assert set(topk["layer"]) == set(range(tiny.L)) and set(topk["seq_id"]) == set(range(4))
    summary = read_table(run_dir(cfg, "detect") / "summary.parquet")
    assert summary["dim"].tolist() == [DIM], summary
    row = summary.iloc[0]
    registers = family == "dinov2_with_registers"
    assert row["role"] == ("register" if registers else "cls")
    assert row["tokens"] == (f"'[REG{REGISTER}]'" if registers else "'[CLS]'")
    assert row["positions"] == str(1 + REGISTER if registers else 0)
    assert row["emerge_layer"] == LAYER and row["n_sequences"] == 4 and row["ratio_at_peak"] > 1000
    per_layer = read_table(run_dir(cfg, "detect") / "per_layer.parquet").set_index("layer")
    assert per_layer.loc[LAYER - 1, "massive_at"] == ""
    assert per_layer.loc[LAYER, "massive_at"] == f"{DIM}: {'[REG2]' if registers else '[CLS]'} (4)"
    prompt = read_table(run_dir(cfg, "capture") / "prompt.parquet")
    n_tokens = 1 + (tiny.REGISTERS if registers else 0) + (tiny.IMAGE // tiny.PATCH) ** 2
    assert prompt.groupby("layer").size().tolist() == [n_tokens] * tiny.L
    assert prompt["token"].iloc[-1] == "patch 3,3"
    if registers:
        figures.run(cfg)
        assert all((run_dir(cfg, "figures") / f"{f}.png").stat().st_size > 0 for f in ("layerwise", "prompt_3d", "token_map"))
        fig = plots.token_map(prompt, "t", shown=8)  # the first 6 tokens and the 2 largest others
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()][:6] == ["[CLS]", "[REG0]", "[REG1]", "[REG2]", "[REG3]", "patch 0,0"]


def test_layout_names_and_roles():
    lay = arch.Layout(n_cls=1, n_registers=4, grid=(2, 3))
    assert lay.seq_len == 11
    assert [lay.name(p) for p in (0, 1, 4, 5, 10)] == ["[CLS]", "[REG0]", "[REG3]", "patch 0,0", "patch 1,2"]
    assert lay.positions("register") == [1, 2, 3, 4]
    assert all(arch.role_of_name(lay.name(p)) == lay.role(p) for p in range(lay.seq_len))
    roles = images.ImageRoles(lay)(torch.zeros(2, 3, 8, 8))
    assert roles.shape == (2, 11) and [interventions.ROLES[i] for i in roles[1, [0, 1, 5]]] == ["cls", "register", "patch"]


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
            with interventions.applied(model, name, [], [], 100.0, 1000.0, ctx, roles), \
                    hooks.cache(model, [hooks.resid_pre(index)]) as seen:
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
    means = interventions.position_means(model, calibration.split(4), lambda b: model(**arch.forward_kwargs(model, b)), registers)
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
    before, after = block_input(model, pixels, 1), block_input(model, pixels, 1, "fix_register_mean", ctx, images.ImageRoles(lay))
    changed = (before != after).any(-1)
    assert changed[:, registers].all() and not changed[:, others].any()
    assert torch.allclose(after[:, registers], means[1].expand(3, -1, -1))


def test_ablate_images_zero_breaks_the_cls_embedding_and_mean_does_not(tmp_path, compose_in):
    cfg, _ = prepare(tmp_path, compose_in, "dinov2_with_registers", True, None, None, 0,
                     "ablate.interventions=[zero,mean,none,random_zero,fix_register_mean]")
    capture.run(cfg)
    detect.run(cfg)
    ablate_images.run(cfg)
    table = read_table(run_dir(cfg, "ablate_images") / "images.parquet").set_index("intervention")
    assert list(table.index) == ["none", "zero", "mean", "random_zero", "fix_register_mean"]  # the baseline first
    assert table.loc["none", "cls_cosine"] == pytest.approx(1.0)
    assert table.loc["zero", "entries_changed"] == 6  # one entry per image, at the emerging block
    assert table.loc["zero", "blocks"] == str(LAYER) and table.loc["zero", "dims"] == str(DIM)
    assert table.loc["zero", "cls_cosine"] < table.loc["mean", "cls_cosine"]
    assert table.loc["mean", "cls_cosine"] > 0.999
    assert table.loc["fix_register_mean", "entries_changed"] == 6 * tiny.REGISTERS * tiny.D * tiny.L
    assert table.loc["fix_register_mean", "n_registers"] == tiny.REGISTERS
    assert table["top1"].isna().all()  # no labels, no head


def test_ablate_images_top1_with_a_classification_head(tmp_path, compose_in):
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    config = tiny.vit_config("dinov2_with_registers")
    config.num_labels = 3
    head = AutoModelForImageClassification.from_config(config).eval()
    cfg, model = prepare(tmp_path, compose_in, "dinov2_with_registers", False, "AutoModelForImageClassification", head, 3,
                         "ablate.interventions=[none,fix_register_mean]")
    capture.run(cfg)
    detect.run(cfg)
    ablate_images.run(cfg)
    table = read_table(run_dir(cfg, "ablate_images") / "images.parquet").set_index("intervention")
    corpus = read_table(tmp_path / "cache" / "corpora" / "tiny_images.parquet")
    assert corpus["label"].tolist() == [0, 0, 1, 1, 2, 2]  # sorted class folders, files sorted within
    pixels = images.preprocess(tiny.image_processor(), corpus["path"].tolist())
    with torch.inference_mode():
        expected = (model(pixel_values=pixels).logits.argmax(-1).numpy() == corpus["label"].to_numpy()).mean()
    assert table.loc["none", "top1"] == pytest.approx(expected)
    assert 0 <= table.loc["fix_register_mean", "top1"] <= 1


def test_image_folder_rejects_missing_folder_and_non_image_file(tmp_path):
    missing = tmp_path / "nowhere"
    proc = run_module("fetch_corpus", "data=photos", "data.kind=image_folder", f"data.path={missing}", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "nowhere", "is not a folder")
    folder = image_folder(tmp_path / "imgs", n=3)
    (folder / "notes.txt").write_text("not an image")
    proc = run_module("fetch_corpus", "data=photos", "data.kind=image_folder", f"data.path={folder}", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "notes.txt", "is not an image file")
    assert not (tmp_path / "cache" / "corpora" / "photos.parquet").exists()


def test_text_model_on_images_and_vit_on_text_fail_with_one_line(tmp_path):
    proc = run_module("ablate_images", "model=vit_random", "data=wiki_sample", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "ablate_images needs image data", "wiki_sample")
    proc = run_module("fetch_model", "model=vit_random", "model.auto_class=NoSuchModel", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "model.auto_class='NoSuchModel'")


def test_ablate_images_clip_zeroshot_matches_the_clip_model(tmp_path, compose_in):
    from transformers import CLIPConfig, CLIPModel

    from massive.models import byte_tokenizer

    torch.manual_seed(0)
    text = {"hidden_size": tiny.D, "intermediate_size": tiny.I, "num_hidden_layers": 2, "num_attention_heads": tiny.H,
            "vocab_size": tiny.VOCAB, "max_position_embeddings": 64, "eos_token_id": 1, "bos_token_id": 0, "pad_token_id": 1}
    vision = {"hidden_size": tiny.D, "intermediate_size": tiny.I, "num_hidden_layers": tiny.L, "num_attention_heads": tiny.H,
              "image_size": tiny.IMAGE, "patch_size": tiny.PATCH}
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    path = tmp_path / "hf_clip"
    tiny.save_vit(clip, path)
    tok = byte_tokenizer()
    tok.pad_token = "</s>"
    tok.save_pretrained(path)
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\nrocket\n")
    folder = image_folder(tmp_path / "images", classes=3)
    cfg = compose_in("model=vit_random", "model.source=local", f"model.path={path}", "model.name=tiny_clip",
                     "model.auto_class=CLIPVisionModel", "data=photos", "data.kind=image_folder", f"data.path={folder}",
                     f"data.class_names={names}", "data.name=tiny_images", "tokenize.num_sequences=4", "capture.top_k=16",
                     "ablate.interventions=[none,zero]", "ablate.batch_size=4")
    for stage in (fetch_model, fetch_corpus, tokenize, capture, detect, ablate_images):
        stage.run(cfg)
    table = read_table(run_dir(cfg, "ablate_images") / "images.parquet").set_index("intervention")
    corpus = read_table(tmp_path / "cache" / "corpora" / "tiny_images.parquet")
    pixels = images.preprocess(tiny.image_processor(), corpus["path"].tolist())
    prompts = tok([f"a photo of a {n}." for n in ("cat", "dog", "rocket")], padding=True, return_tensors="pt")
    with torch.inference_mode():
        image = torch.nn.functional.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        words = torch.nn.functional.normalize(clip.get_text_features(**prompts).pooler_output, dim=-1)
    expected = ((image @ words.T).argmax(-1).numpy() == corpus["label"].to_numpy()).mean()
    assert table.loc["none", "zeroshot_top1"] == pytest.approx(expected)
    assert table["top1"].isna().all()  # the vision tower has no classification head


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


def test_linear_head_from_a_file_is_loaded_into_the_classifier(tmp_path, compose_in):
    backbone = tiny.build_vit("dinov2_with_registers")
    path = tiny.save_vit(backbone, tmp_path / "hf_backbone")
    torch.manual_seed(3)
    head = torch.nn.Linear(2 * tiny.D, 5)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    cfg = compose_in("model=vit_random", "model.source=local", f"model.path={path}", "model.name=tiny_reg_head",
                     "model.auto_class=AutoModelForImageClassification", f"model.head={tmp_path / 'head.pth'}",
                     "+model.config_overrides.num_labels=5", "data=photos")
    fetch_model.run(cfg)
    from pipeline.model import load_model

    model = load_model(cfg)
    assert torch.equal(model.classifier.weight, head.weight) and torch.equal(model.classifier.bias, head.bias)
    pixels = tiny.image_processor()(images=tiny.photos(2), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
        seq = model.dinov2_with_registers.layernorm(out.hidden_states[-1])
        features = torch.cat([seq[:, 0], seq[:, 1 + tiny.REGISTERS :].mean(1)], dim=-1)  # [CLS, mean of the patches]
        expected = head(features)
    assert torch.allclose(out.logits, expected, atol=1e-5)
    bad = compose_in("model=vit_random", "model.source=local", f"model.path={path}", "model.name=tiny_reg_head",
                     "model.auto_class=AutoModelForImageClassification", f"model.head={tmp_path / 'head.pth'}", "data=photos")
    with pytest.raises(MassiveError, match="does not fit the classifier"):
        load_model(bad)  # 2 labels by default: the 5-class head does not fit


# ---------------------------------------------------------------- massive.vision, in memory
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
    table = vision.evaluate_interventions(model, pixels, names, calibration=calibration, layers=[LAYER], dims=[DIM],
                                          means=planted_means(model, calibration, 1 + REGISTER), batch_size=2)
    table = table.set_index("intervention")
    assert list(table.index) == ["none", "zero", "mean", "random_zero", "fix_register_mean"]  # the baseline first
    assert table.loc["none", "cls_cosine"] == pytest.approx(1.0) and table.loc["none", "entries_changed"] == 0
    assert table.loc["zero", "entries_changed"] == 5 and table.loc["random_zero", "entries_changed"] == 5
    assert table.loc["zero", "cls_cosine"] < table.loc["mean", "cls_cosine"] and table.loc["mean", "cls_cosine"] > 0.999
    assert table.loc["fix_register_mean", "blocks"] == "all" and table.loc["zero", "blocks"] == str(LAYER)
    assert table.loc["fix_register_mean", "entries_changed"] == 5 * tiny.REGISTERS * tiny.D * tiny.L
    assert (table["n_images"] == 5).all() and (table["n_calibration"] == 4).all() and table["top1"].isna().all()
    # the same numbers from (pixels, labels) batches of another size: every image once, in order
    again = vision.evaluate_interventions(model, [(b, None) for b in pixels.split(3)], names, calibration=calibration,
                                          layers=[LAYER], dims=[DIM], means=planted_means(model, calibration, 1 + REGISTER),
                                          batch_size=2).set_index("intervention")
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
