"""Each stage of the DAG, declared once: what it reads, what it comes after, where it writes.

A stage's outputs live in a folder keyed by what determines them, never by the sweep's name:

    results/<model>/<corpus>/<stage>/<id>/...                (tokenize, capture, detect, ...)
    results/<model>/<corpus>/ablate/<layers>/<id>/...        (ablate, zeroshot, ablate_images)

`<id>` is the first 8 hex digits of the SHA-256 of the stage's manifest, `settings.yaml`, written
beside the outputs: the values of the config keys the stage reads (`reads`: sections or single
keys) and the ids of the stages it comes after (`after`). So an override reaches only the stages
that read it and the stages after them (`tokenize.num_sequences=32` gives tokenize, capture,
detect, ... new ids and leaves fetch_model and fetch_corpus alone), two settings never write into
each other's files, and two sweeps that agree on a stage share its outputs.

    >>> manifest(OmegaConf.create({"tokenize": {"num_sequences": 4}, "seed": 1}), "toy")["reads"]
    {'seed': 1, 'tokenize': {'num_sequences': 4}}

The fetches (cache/) and the sweep-level rules (ablation, report) are named, not keyed: the
fetches read only the model's or the corpus's own section, the sweep-level rules are the sweep's.
No Snakemake here: the Snakefile (rules/common.smk) and the modules both import this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from pipeline import paths
from pipeline.names import plain

ID_LEN = 8
MANIFEST = "settings.yaml"
SHARED = ("wandb", "paths", "hydra")  # reach every job, are no stage's identity (where results go, how logged)
DAG_SET = ("model", "data", "ablate.layers", "model.name", "model.bos")  # set per job by the DAG (its wildcards)


@dataclass(frozen=True)
class Stage:
    """One keyed stage: its rule (= name), the config it reads, the stages it comes after, its folder."""

    name: str
    reads: tuple[str, ...]  # config sections ("capture") or keys ("detect.min_ratio") the stage's module reads
    after: tuple[str, ...] = ()  # the keyed stages whose outputs it reads
    files: tuple[str, ...] = ()  # its outputs, in its keyed folder (names from pipeline/paths.py)
    folder: str = ""  # results/<model>/<corpus>/<folder>/ (default: the name)
    # its report section: the function of pipeline/html.py that draws it in a (model, corpus) tab from its
    # folder, html.<section>(folder, model, corpus) ("": drawn by the tab itself, html.pair_section, or by
    # a sweep-level rule's section: ablate -> ablation, ablate_images -> the vision interventions)
    section: str = ""

    @property
    def dir_name(self) -> str:
        return self.folder or self.name


_PAIR = ("model", "data", "seed")  # every stage of a model and corpus reads these
# massive.compare's settings, read by every stage that compares conditions (ablate reads all of `ablate`)
_COMPARE = ("ablate.bootstrap", "ablate.harmful_factor", "ablate.harmless_factor")
STAGES = {
    s.name: s
    for s in [
        Stage("tokenize", (*_PAIR, "tokenize"), files=("tokens.parquet",)),
        # capture counts at ladders of thresholds (capture.counts), detect picks its own among them: no key
        # of `detect` is the capture's identity
        Stage("capture", (*_PAIR, "capture"), ("tokenize",), files=tuple(f"{t}.parquet" for t in paths.CAPTURE_TABLES)),
        Stage("detect", (*_PAIR, "detect", "capture.top_k"), ("capture",), files=paths.DETECT_FILES),
        Stage(
            "figures",
            (*_PAIR, "figures", "capture.prompt"),
            ("capture",),
            files=tuple(f"{f}.png" for f in paths.FIGURES),
        ),
        Stage(
            "ablate",
            (*_PAIR, "ablate", "capture", "detect", "tokenize", "plugins"),
            ("detect",),
            files=paths.ABLATE_FILES,
        ),
        Stage(
            "zeroshot",
            (*_PAIR, "ablate", "capture", "detect", "plugins"),
            ("detect",),
            files=("zeroshot.parquet",),
            folder="ablate",
        ),
        Stage(
            "ablate_images",
            (*_PAIR, "ablate", "capture", "detect", "plugins"),
            ("tokenize", "detect"),
            files=("images.parquet",),
            folder="ablate",
        ),
        Stage(
            "attention",
            (*_PAIR, "attention", "ablate", "capture", "detect", "figures", "tokenize"),
            ("tokenize", "capture", "detect"),
            files=paths.ATTENTION_FILES,
            section="attention_section",
        ),
        Stage(
            "origins",
            (*_PAIR, "origins", *_COMPARE, "capture", "detect", "figures", "tokenize"),
            ("tokenize", "detect"),
            files=paths.ORIGINS_FILES,
            section="origins_section",
        ),
        Stage(
            "retrofit",
            (*_PAIR, "retrofit", "capture", "detect", "figures", "tokenize"),
            ("detect",),
            files=paths.RETROFIT_FILES,
            section="retrofit_section",
        ),
        Stage(
            "inference",
            (*_PAIR, "inference", *_COMPARE, "capture", "detect", "figures", "tokenize"),
            ("tokenize", "detect"),
            files=paths.INFERENCE_FILES,
            section="inference_section",
        ),
    ]
}


def tab_stages() -> tuple[str, ...]:
    """The stages of a (model, corpus) tab of the report: those keyed by the model and corpus alone
    (not by ablated blocks), in declaration order."""
    return tuple(name for name, s in STAGES.items() if s.dir_name != "ablate")


# the unkeyed rules that read a model's or a corpus's config: the overrides that reach them
FETCH_READS = {"fetch_model": ("model", "seed"), "fetch_corpus": ("data", "seed")}


def closure(stage: str) -> tuple[str, ...]:
    """Everything `stage` and the stages before it read: the overrides its job must see."""
    if stage in FETCH_READS:
        return FETCH_READS[stage]
    s = STAGES[stage]
    out = list(s.reads)
    for up in s.after:
        out += [r for r in closure(up) if r not in out]
    return tuple(out)


def _key(override: str) -> str:
    """The config key an override sets: `+tokenize.seq_len=8` -> tokenize.seq_len, `~a.b` -> a.b."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def _touches(key: str, read: str) -> bool:
    return key == read or key.startswith(read + ".") or read.startswith(key + ".")


def relevant(overrides: list[str], stage: str) -> list[str]:
    """The overrides that reach `stage`: those of keys it (or a stage before it) reads, and SHARED
    ones; rules that are not declared here (ablation, report, train) get them all."""
    if stage not in STAGES and stage not in FETCH_READS:
        return list(overrides)
    reads = closure(stage)
    return [o for o in overrides if _key(o).split(".")[0] in SHARED or any(_touches(_key(o), r) for r in reads)]


def _select(cfg: DictConfig, key: str):
    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _plain(value):
    """Enums as their values, so the manifest is plain YAML and the id does not depend on a class name."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return plain(value)


def manifest(cfg: DictConfig, stage: str | Stage) -> dict:
    """What determines a stage's outputs: the values it reads and the ids of the stages before it."""
    s = stage if isinstance(stage, Stage) else STAGES[stage]
    reads = {key: _plain(_select(cfg, key)) for key in sorted(s.reads)}
    return {"stage": s.name, "reads": reads, "after": {up: stage_id(cfg, up) for up in s.after}}


def manifest_text(m: dict) -> str:
    import yaml

    return yaml.safe_dump(m, sort_keys=True, default_flow_style=False)


def stage_id(cfg: DictConfig, stage: str) -> str:
    """The stage's config id: a hash of its manifest (the same on every machine and Python)."""
    return hashlib.sha256(manifest_text(manifest(cfg, stage)).encode()).hexdigest()[:ID_LEN]


def layers_of(cfg: DictConfig) -> str:
    from pipeline.config import layers_slug

    return layers_slug(_plain(_select(cfg, "ablate.layers")))


def out_dir(cfg: DictConfig, stage: str, results: str | None = None) -> str:
    """The stage's keyed folder for this config (relative to paths.root, as pipeline/paths.py)."""
    from pipeline import paths

    results = results if results is not None else cfg.paths.results
    m, c, cid = cfg.model.name, cfg.data.name, stage_id(cfg, stage)
    if STAGES[stage].dir_name == "ablate":
        return paths.ablate_dir(m, c, layers_of(cfg), cid, results)
    return paths.run_dir(m, c, STAGES[stage].dir_name, cid, results)
