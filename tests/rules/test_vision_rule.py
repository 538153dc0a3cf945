"""Vision transformers: tiny random CLIP-vision, DINOv2 with and without registers and ViT-MAE
models, with planted massive activations, through the same capture, detection and
interventions as the LLMs. The library (massive.vision.images, massive.vision.vit) in memory first where it
can be, then the rules."""

import pytest
import torch

from massive.core.errors import MassiveError
from massive.plots import figures as plots
from massive.vision import images
from pipeline import ablate_images, capture, detect, fetch_corpus, fetch_model, figures, tokenize
from pipeline.io import read_table, run_dir

import tiny
from helpers import assert_one_line_error, run_module
from topics.vision import DIM, LAYER, REGISTER, image_folder


def prepare(
    tmp_path,
    compose_in,
    family: str,
    planted: bool = True,
    auto_class: str | None = None,
    model=None,
    classes: int = 0,
    *extra: str,
):
    model = model if model is not None else tiny.build_vit(family)
    if planted:
        tiny.plant_vit(model, LAYER, DIM, register=REGISTER if family == "dinov2_with_registers" else None)
    path = tiny.save_vit(model, tmp_path / f"hf_{family}")
    folder = image_folder(tmp_path / "images", classes=classes)
    cfg = compose_in(
        "model=vit_random",
        "model.source=local",
        f"model.path={path}",
        f"model.name=tiny_{family}",
        f"model.auto_class={auto_class or tiny.VIT_CLASSES[family]}",
        "data=photos",
        "data.kind=image_folder",
        f"data.path={folder}",
        "data.name=tiny_images",
        "tokenize.num_sequences=4",
        "capture.top_k=16",
        "capture.batch_size=2",
        "ablate.batch_size=3",
        *extra,
    )
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
        assert all(
            (run_dir(cfg, "figures") / f"{f}.png").stat().st_size > 0 for f in ("layerwise", "prompt_3d", "token_map")
        )
        fig = plots.token_map(prompt, "t", shown=8)  # the first 6 tokens and the 2 largest others
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()][:6] == [
            "[CLS]",
            "[REG0]",
            "[REG1]",
            "[REG2]",
            "[REG3]",
            "patch 0,0",
        ]


def test_ablate_images_zero_breaks_the_cls_embedding_and_mean_does_not(tmp_path, compose_in):
    cfg, _ = prepare(
        tmp_path,
        compose_in,
        "dinov2_with_registers",
        True,
        None,
        None,
        0,
        "ablate.interventions=[zero,mean,none,random_zero,fix_register_mean]",
    )
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
    cfg, model = prepare(
        tmp_path,
        compose_in,
        "dinov2_with_registers",
        False,
        "AutoModelForImageClassification",
        head,
        3,
        "ablate.interventions=[none,fix_register_mean]",
    )
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
    proc = run_module(
        "fetch_corpus", "data=photos", "data.kind=image_folder", f"data.path={missing}", f"paths.root={tmp_path}"
    )
    assert_one_line_error(proc, "nowhere", "is not a folder")
    folder = image_folder(tmp_path / "imgs", n=3)
    (folder / "notes.txt").write_text("not an image")
    proc = run_module(
        "fetch_corpus", "data=photos", "data.kind=image_folder", f"data.path={folder}", f"paths.root={tmp_path}"
    )
    assert_one_line_error(proc, "notes.txt", "is not an image file")
    assert not (tmp_path / "cache" / "corpora" / "photos.parquet").exists()


def test_text_model_on_images_and_vit_on_text_fail_with_one_line(tmp_path):
    proc = run_module("ablate_images", "model=vit_random", "data=wiki_sample", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "ablate_images needs image data", "wiki_sample")
    proc = run_module("fetch_model", "model=vit_random", "model.auto_class=NoSuchModel", f"paths.root={tmp_path}")
    assert_one_line_error(proc, "model.auto_class='NoSuchModel'")


def test_ablate_images_clip_zeroshot_matches_the_clip_model(tmp_path, compose_in):
    from transformers import CLIPConfig, CLIPModel

    from massive.core.models import byte_tokenizer

    torch.manual_seed(0)
    text = {
        "hidden_size": tiny.D,
        "intermediate_size": tiny.I,
        "num_hidden_layers": 2,
        "num_attention_heads": tiny.H,
        "vocab_size": tiny.VOCAB,
        "max_position_embeddings": 64,
        "eos_token_id": 1,
        "bos_token_id": 0,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": tiny.D,
        "intermediate_size": tiny.I,
        "num_hidden_layers": tiny.L,
        "num_attention_heads": tiny.H,
        "image_size": tiny.IMAGE,
        "patch_size": tiny.PATCH,
    }
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    path = tmp_path / "hf_clip"
    tiny.save_vit(clip, path)
    tok = byte_tokenizer()
    tok.pad_token = "</s>"
    tok.save_pretrained(path)
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\nrocket\n")
    folder = image_folder(tmp_path / "images", classes=3)
    cfg = compose_in(
        "model=vit_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_clip",
        "model.auto_class=CLIPVisionModel",
        "data=photos",
        "data.kind=image_folder",
        f"data.path={folder}",
        f"data.class_names={names}",
        "data.name=tiny_images",
        "tokenize.num_sequences=4",
        "capture.top_k=16",
        "ablate.interventions=[none,zero]",
        "ablate.batch_size=4",
    )
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


def test_linear_head_from_a_file_is_loaded_into_the_classifier(tmp_path, compose_in):
    backbone = tiny.build_vit("dinov2_with_registers")
    path = tiny.save_vit(backbone, tmp_path / "hf_backbone")
    torch.manual_seed(3)
    head = torch.nn.Linear(2 * tiny.D, 5)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    cfg = compose_in(
        "model=vit_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_reg_head",
        "model.auto_class=AutoModelForImageClassification",
        f"model.head={tmp_path / 'head.pth'}",
        "+model.config_overrides.num_labels=5",
        "data=photos",
    )
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
    bad = compose_in(
        "model=vit_random",
        "model.source=local",
        f"model.path={path}",
        "model.name=tiny_reg_head",
        "model.auto_class=AutoModelForImageClassification",
        f"model.head={tmp_path / 'head.pth'}",
        "data=photos",
    )
    with pytest.raises(MassiveError, match="does not fit the classifier"):
        load_model(bad)  # 2 labels by default: the 5-class head does not fit
