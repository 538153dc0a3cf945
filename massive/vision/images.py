"""Images as the inputs of vision transformers: reading them, the model's own preprocessing, and
the token layout of a model's residual stream (which position is the CLS token, a register, or
a patch).

A ViT's residual stream holds, in order, its prefix tokens (the CLS token, then the register
tokens where the model has them) and then one token per image patch, row by row. The layout is
derived from the model's config and the input's shape (massive.core.arch.layout), never typed in per
model. Token names, used in every table and plot as the text of a token is for LLMs: `[CLS]`,
`[REG0]`.., `patch r,c` (row r, column c of the patch grid). Token roles: cls, register, patch.

    >>> from massive.vision import images
    >>> table = images.sample(images.image_folder("data/imagenet_val"), n=64, seed=1)
    >>> processor = images.load_processor("cache/models/dinov2_reg_s/hf")
    >>> pixels = images.preprocess(processor, table["path"].tolist())    # [64, 3, 224, 224]
    >>> lay = images.layout_of(model, pixels)
    >>> lay.n_registers, lay.name(1)
    (4, '[REG0]')
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from massive.core import arch, hooks
from massive.core.errors import MassiveError

ROLE_NAMES = ("cls", "register", "patch")


# ---------------------------------------------------------------- reading images
def check_image(path: str | Path) -> None:
    """Nothing when `path` is a readable image file; else a MassiveError in one line.

    >>> check_image("notes.txt")
    MassiveError: notes.txt is not an image file (UnidentifiedImageError: cannot identify image file ...)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise MassiveError(f"{path} is not an image file ({type(exc).__name__}: {why})") from None


def image_folder(path: str | Path | None) -> pd.DataFrame:
    """Every file of an ImageFolder (path/<class>/<file>) as rows of (path, label, class_name),
    labelled by the sorted class folders (the ImageNet convention: class folder i is class index
    i); or of a flat folder (label -1, class_name ""). Hidden files are left out; a folder that
    mixes class folders and files, or holds no file, is an error.

        >>> image_folder("photos")[["label", "class_name"]].head(2)
           label class_name
        0      0       cat
        1      0       cat
    """
    if path is None:
        raise MassiveError("no image folder given (path is None)")
    if not Path(path).is_dir():
        raise MassiveError(f"{str(path)!r} is not a folder")
    folder = Path(path)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if classes and loose:
        raise MassiveError(
            f"{str(path)!r} mixes class folders and files ({loose[0].name}): an ImageFolder holds only class folders"
        )
    rows = []
    if classes:
        for label, name in enumerate(classes):
            for f in sorted((folder / name).rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    rows.append({"path": str(f.resolve()), "label": label, "class_name": name})
    else:
        rows = [{"path": str(f.resolve()), "label": -1, "class_name": ""} for f in loose]
    if not rows:
        raise MassiveError(f"{str(path)!r} holds no image file")
    return pd.DataFrame(rows)


def sample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows of `table`, drawn with `seed` (an ImageFolder is sorted by class: its
    first rows are one class), kept in their order.

        >>> sample(image_folder("photos"), n=4, seed=1).index.tolist()
        [0, 3, 5, 8]
    """
    if len(table) <= n:
        return table
    return table.iloc[np.sort(np.random.default_rng(seed).permutation(len(table))[:n])]


def labels_of(table: pd.DataFrame) -> np.ndarray | None:
    """The class labels of an image table, or None when it has none (a flat folder: label -1)."""
    labels = table["label"].to_numpy().copy()
    return labels if len(labels) and bool((labels >= 0).all()) else None


def open_rgb(path: str | Path):
    """The image at `path` as a PIL image in RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The model's own image processor from a model directory, always on the PIL backend:
    transformers would pick the torchvision backend where torchvision is installed, whose
    resizing differs slightly, so the same model would give other numbers on another machine.

        >>> processor = load_processor("cache/models/dinov2_reg_s/hf")
    """
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, backend="pil")
    except (OSError, ValueError) as exc:
        raise MassiveError(f"no image processor in {path}: {str(exc).splitlines()[0]}") from None


def preprocess(processor, paths: Sequence[str | Path]) -> torch.Tensor:
    """pixel_values [n, 3, H, W] (float32) of the images at `paths`, by the model's own processor.

    >>> preprocess(processor, ["a.png", "b.jpg"]).shape
    torch.Size([2, 3, 224, 224])
    """
    return processor(images=[open_rgb(p) for p in paths], return_tensors="pt")["pixel_values"].to(torch.float32)


class ImageBatches:
    """(pixel_values, labels or None) of the images at `paths`, `batch_size` at a time: each image
    is read and preprocessed once, when its batch comes. Iterable (more than once) and sized.

        >>> for pixels, y in ImageBatches(processor, table["path"], labels_of(table), batch_size=32):
        ...     model(pixel_values=pixels)
    """

    def __init__(self, processor, paths: Sequence[str | Path], labels: np.ndarray | None = None, batch_size: int = 8):
        self.processor, self.paths, self.labels, self.size = processor, list(paths), labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for start in range(0, len(self.paths), self.size):
            y = torch.tensor(self.labels[start : start + self.size]) if self.labels is not None else None
            yield preprocess(self.processor, self.paths[start : start + self.size]), y


def pixels_of(tokens: pd.DataFrame) -> torch.Tensor:
    """The pixel_values stored in a tokens table (the tokenize rule's: one flattened image per row
    in `pixel_values`, its shape in `shape`), as a float32 tensor [n, 3, H, W]."""
    shape = tuple(int(x) for x in tokens["shape"].iloc[0])
    return torch.from_numpy(np.stack(tokens["pixel_values"].to_numpy()).astype(np.float32)).view(-1, *shape)


# ---------------------------------------------------------------- the layout of a model
@torch.inference_mode()
def layout_of(model: nn.Module, pixel_values: torch.Tensor) -> arch.Layout:
    """The token layout of `model` for images shaped like `pixel_values`, from one forward pass
    of the first image (the length of the residual stream entering block 0).

        >>> layout_of(model, pixels)
        Layout(n_cls=1, n_registers=4, grid=(16, 16))
    """
    seen: list[int] = []
    with hooks.hooked(model, {hooks.resid_pre(0): lambda h, _name: seen.append(h.shape[1])}):
        model(**arch.forward_kwargs(model, pixel_values[:1]))
    return arch.layout(model.config, pixel_values.shape, seen[0])


class ImageRoles:
    """pixel_values -> the role index (massive.intervene.interventions.ROLES) of every position, for a fixed
    layout: what `interventions.applied(..., roles_of=...)` takes.

        >>> ImageRoles(Layout(n_cls=1, n_registers=2, grid=(1, 2)))(pixels[:1])
        tensor([[3, 4, 4, 5, 5]])
    """

    def __init__(self, lay: arch.Layout):
        from massive.intervene.interventions import ROLES

        self.row = torch.tensor([ROLES.index(lay.role(p)) for p in range(lay.seq_len)], dtype=torch.long)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.row.expand(len(pixel_values), -1)
