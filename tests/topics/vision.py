"""What tests/unit/test_vision.py and tests/rules/test_vision_rule.py share: where the activation is planted in
a tiny ViT, and a folder of random images."""

import tiny

LAYER, DIM, REGISTER = 1, 7, 2


def image_folder(path, n: int = 6, classes: int = 0):
    """n random images as PNG files: flat, or spread over `classes` class folders."""
    path.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(tiny.photos(n)):
        where = path / f"class{i % classes}" if classes else path
        where.mkdir(exist_ok=True)
        im.save(where / f"img{i}.png")
    return path
