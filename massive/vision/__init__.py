"""Vision transformers: images and their token layout, ViT measurements and ablations."""
