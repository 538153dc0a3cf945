"""Compose-time checks against the fetched model's config (written by H-fetch; placeholder so
pipeline.cli.main can import it meanwhile)."""


def preflight(cfg, stage: str) -> None:
    return None
