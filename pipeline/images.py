"""Images as inputs of vision transformers: reading them, the model's own preprocessing, and
the token layout (which position is the CLS token, a register, or a patch).

A ViT's residual stream holds, in order, its prefix tokens (the CLS token, then the register
tokens where the model has them) and then one token per image patch, row by row. The layout is
derived from the model's config and the input's shape, never typed in per model:
  patches   = (height / patch_size) x (width / patch_size)
  registers = config.num_register_tokens (0 when the config has none)
  cls       = the positions left over before the patches and registers (1 for CLIP, DINOv2, MAE)
Token names, used in every table and plot as the text of a token is for LLMs: `[CLS]`, `[REG0]`..,
`patch r,c` (row r, column c of the patch grid). Token roles: cls, register, patch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pipeline.cli import PipelineError

ROLE_NAMES = ("cls", "register", "patch")


# ---------------------------------------------------------------- reading images
def check_image(path: Path) -> None:
    """One clear line when `path` is not a readable image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise PipelineError(f"{path} is not an image file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None


def image_folder(path: str | None) -> pd.DataFrame:
    """Every file of an ImageFolder (path/<class>/<file>), labelled by the sorted class folders
    (the ImageNet convention: class folder i is class index i), or of a flat folder (label -1).
    Every file must be an image: anything else is an error, not silently skipped."""
    if path is None or not Path(path).is_dir():
        raise PipelineError(f"data.path={path!r} is not a folder")
    folder = Path(path)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if classes and loose:
        raise PipelineError(f"data.path={path!r} mixes class folders and files ({loose[0].name}): an ImageFolder holds only class folders")
    rows = []
    if classes:
        for label, name in enumerate(classes):
            for f in sorted((folder / name).rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    rows.append({"path": str(f.resolve()), "label": label, "class_name": name})
    else:
        rows = [{"path": str(f.resolve()), "label": -1, "class_name": ""}
                for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if not rows:
        raise PipelineError(f"data.path={path!r} holds no image file")
    return pd.DataFrame(rows)


def sample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n rows, drawn with the seed (an ImageFolder is sorted by class: its first rows are
    one class), kept in their order."""
    if len(table) <= n:
        return table
    return table.iloc[np.sort(np.random.default_rng(seed).permutation(len(table))[:n])]


def open_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def load_processor(hf: Path, trust_remote_code: bool = False):
    """The model's own image processor, on the PIL backend always: transformers would pick the
    torchvision backend where torchvision is installed, whose resizing differs slightly, so the
    same config would give other numbers on another machine."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(hf, trust_remote_code=trust_remote_code, backend="pil")
    except (OSError, ValueError) as exc:
        raise PipelineError(f"no image processor in {hf}: {str(exc).splitlines()[0]}") from None


def preprocess(processor, paths: list[str]) -> torch.Tensor:
    """pixel_values [n, 3, H, W] of the images at `paths`, by the model's own image processor."""
    return processor(images=[open_rgb(p) for p in paths], return_tensors="pt")["pixel_values"].to(torch.float32)


def pixels_of(tokens: pd.DataFrame) -> torch.Tensor:
    """The pixel_values stored by the tokenize rule (flattened rows plus their shape)."""
    shape = tuple(int(x) for x in tokens["shape"].iloc[0])
    return torch.from_numpy(np.stack(tokens["pixel_values"].to_numpy()).astype(np.float32)).view(-1, *shape)


# ---------------------------------------------------------------- the token layout
def vision_config(config):
    return getattr(config, "vision_config", None) or config


@dataclass(frozen=True)
class Layout:
    n_cls: int
    n_registers: int
    grid: tuple[int, int]  # patch rows, patch columns

    @property
    def n_prefix(self) -> int:
        return self.n_cls + self.n_registers

    @property
    def seq_len(self) -> int:
        return self.n_prefix + self.grid[0] * self.grid[1]

    def name(self, position: int) -> str:
        if position < self.n_cls:
            return "[CLS]"
        if position < self.n_prefix:
            return f"[REG{position - self.n_cls}]"
        r, c = divmod(position - self.n_prefix, self.grid[1])
        return f"patch {r},{c}"

    def role(self, position: int) -> str:
        return "cls" if position < self.n_cls else "register" if position < self.n_prefix else "patch"

    def positions(self, role: str) -> list[int]:
        return [p for p in range(self.seq_len) if self.role(p) == role]


def layout(config, pixel_shape: tuple[int, ...], seq_len: int) -> Layout:
    """The layout of a residual stream of `seq_len` tokens for images of `pixel_shape` [.., H, W]."""
    vc = vision_config(config)
    patch = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
    grid = (int(pixel_shape[-2]) // patch, int(pixel_shape[-1]) // patch)
    registers = int(getattr(vc, "num_register_tokens", 0) or 0)
    n_cls = seq_len - registers - grid[0] * grid[1]
    if n_cls < 0:
        raise PipelineError(f"{seq_len} tokens cannot hold {registers} registers and a {grid[0]}x{grid[1]} patch grid")
    return Layout(n_cls=n_cls, n_registers=registers, grid=grid)


def role_of_name(token: str) -> str:
    """The role of a token named by Layout.name."""
    return "cls" if token == "[CLS]" else "register" if token.startswith("[REG") else "patch"


# ---------------------------------------------------------------- running the model
def forward_kwargs(model, pixel_values: torch.Tensor) -> dict:
    """The forward arguments for a batch of images. A model that orders its patches by a random
    `noise` (MAE's masking; load it with config_overrides mask_ratio: 0.0) gets an increasing
    noise, so that every patch is kept in its place."""
    kwargs = {"pixel_values": pixel_values}
    if "noise" in inspect.signature(model.forward).parameters:
        cfg = vision_config(model.config)
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        n = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        kwargs["noise"] = torch.arange(n, dtype=torch.float32, device=pixel_values.device).expand(len(pixel_values), n)
    return kwargs


@torch.inference_mode()
def layout_of(model, pixel_values: torch.Tensor) -> Layout:
    """The layout of `model` for images shaped like `pixel_values`, from one forward pass."""
    from pipeline.model import find_parts

    seen = []
    block = find_parts(model).blocks[0]
    handle = block.register_forward_pre_hook(lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
                                             with_kwargs=True)
    try:
        model(**forward_kwargs(model, pixel_values[:1]))
    finally:
        handle.remove()
    return layout(model.config, pixel_values.shape, seen[0])


class ImageRoles:
    """pixel_values -> the role index (interventions.ROLES) of every position, for a fixed layout."""

    def __init__(self, lay: Layout):
        from pipeline.interventions import ROLES

        self.row = torch.tensor([ROLES.index(lay.role(p)) for p in range(lay.seq_len)], dtype=torch.long)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.row.expand(len(pixel_values), -1)
