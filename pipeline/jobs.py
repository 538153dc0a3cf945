"""Every job of a sweep: its rule, its wildcards and its Hydra overrides, and for a keyed stage
(pipeline/stages.py) its config id.

The Snakefile (rules/common.smk) builds its rules' parameters and output paths from a `Plan`, and
the sweep-level modules (ablation, report) use the same Plan to find the outputs of the sweep's
jobs, so the DAG and the report agree on every folder.

    plan = Plan(sweeps.load("default"), "default")
    plan.args("tokenize", model="smollm2_135m", corpus="wiki_sample")  # its Hydra overrides
    plan.ids()[("tokenize", "smollm2_135m", "wiki_sample")]             # its config id

A job's overrides are the DAG's own (model=, data=, ablate.layers=...) then the sweep's, only those
of keys the stage or a stage before it reads (stages.relevant): `tokenize.num_sequences=32`
never reaches fetch_model. An override of a key the DAG sets per job is an error (check_overrides).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from massive.core.errors import MassiveError
from massive.retrain.gpt_config import VARIANTS as GPT_VARIANTS
from pipeline import paths, stages
from pipeline import sweep as sweeps

RULES = (
    "fetch_model",
    "fetch_corpus",
    "tokenize",
    "capture",
    "detect",
    "figures",
    "attention",
    "origins",
    "retrofit",
    "inference",
    "ablate",
    "zeroshot",
    "ablate_images",
    "ablation",
    "report",
    "train",
    "train_compare",
    "train_scale",
)  # Plan.args
TRAIN_VARIANTS_ALL = list(GPT_VARIANTS)  # the registry: massive.retrain.gpt.VARIANTS
CONFIG_NAME = {
    "train": "train",
    "train_compare": "train",
    "train_scale": "train",
}  # conf/train.yaml; others conf/config.yaml
IDS_CACHE = (
    ".snakemake/stage_ids.json"  # the config ids of composed configs, kept while conf/ and the code stay as they are
)


def config_key(config_name: str, argv: list[str]) -> str:
    """A composed config's key in the caches of .snakemake/ (sweep.check_configs, Plan.ids)."""
    return hashlib.sha256("\0".join([config_name, *argv]).encode()).hexdigest()[:32]


def hydra_list(items) -> str:
    return "[" + ",".join(map(str, items)) + "]"


def section_overrides(section: dict | None, prefix: str, skip=()) -> list[str]:
    """A sweep section's values as Hydra overrides (attention: {num_sequences: 8} -> attention.num_sequences=8)."""
    return [
        f"{prefix}.{key}={hydra_list(value) if isinstance(value, list) else value}"
        for key, value in (section or {}).items()
        if key not in skip
    ]


def layers_override(wildcard: str) -> str:
    """The {layers} wildcard (path-safe: emerge, from_emerge, all, 3, 3_99) as an unambiguous Hydra
    override: ablate.layers=emerge, ablate.layers=all, ablate.layers=[3], ablate.layers=[3,99]."""
    value = wildcard if wildcard in ("emerge", "from_emerge", "all") else hydra_list(wildcard.split("_"))
    return f"ablate.layers={value}"


def check_overrides(sweep: dict, name: str) -> None:
    """An override of a key the DAG sets per job (the model, the data, ablate.layers, the protocol)
    would silently win over the job's own: one line naming it and what to write instead."""
    where = {
        "model": "models (or model_overrides)",
        "data": "corpora",
        "ablate.layers": "ablate.layers",
        "model.name": "models",
        "model.bos": "protocols",
    }
    lists = [
        ("overrides", sweep.get("overrides") or []),
        ("protocols.overrides", (sweep.get("protocols") or {}).get("overrides") or []),
        ("vision.overrides", (sweep.get("vision") or {}).get("overrides") or []),
    ]
    lists += [(f"model_overrides.{m}", o) for m, o in (sweep.get("model_overrides") or {}).items()]
    for label, items in lists:
        for item in items:
            key = stages._key(str(item))
            if key in stages.DAG_SET:
                raise MassiveError(
                    f"sweep {name!r}: {label} entry {item!r} sets {key}, which the DAG sets per job: "
                    f"list it in the sweep's {where[key]} instead"
                )


def last_wins(args: list[str]) -> list[str]:
    """Hydra overrides with each plain `key=value` kept only where it takes effect (its last
    occurrence, as Hydra applies them): a job's command line, hence its Snakemake parameters, then
    changes only when its resolved settings do. A protocol run's `attention.num_sequences=2` shadows
    the sweep's section value; without this, editing that section would rerun the protocol's job
    with its config unchanged.

    >>> last_wins(["model=m", "attention.num_sequences=16", "tokenize.num_sequences=4", "attention.num_sequences=2"])
    ['model=m', 'tokenize.num_sequences=4', 'attention.num_sequences=2']
    """
    key = lambda a: a.split("=", 1)[0] if "=" in a and a[0] not in "+~" else None  # noqa: E731
    last = {key(a): i for i, a in enumerate(args) if key(a) is not None}
    return [a for i, a in enumerate(args) if key(a) is None or last[key(a)] == i]


class Plan:
    """The jobs of one sweep and their Hydra overrides (what rules/common.smk's ARGS were)."""

    def __init__(self, sweep: dict, name: str):
        check_overrides(sweep, name)
        self.sweep, self.name = sweep, name
        self.models, self.corpora = sweep["models"], sweep["corpora"]
        self.pairs = sweeps.pairs(sweep)
        self.protocol_pairs = sweeps.protocol_pairs(sweep)
        self.llm_pairs = [(m, c) for m in self.models for c in self.corpora] + self.protocol_pairs
        self.ablate = sweep.get("ablate") or {}
        self.zeroshot = self.ablate.get("zeroshot_tasks") or []
        self.zeroshot_pairs = sweeps.zeroshot_pairs(sweep)  # each LLM once, on the sweep's first corpus
        self.attention, self.origins = sweep.get("attention"), sweep.get("origins")
        self.inference = sweep.get("inference")
        self.retrofit = sweep.get("retrofit")  # None: no retrofit jobs ({}: with the defaults)
        self.inference_pairs = sweeps.inference_pairs(sweep)
        self.retrofit_pairs = sweeps.section_pairs(sweep, "retrofit")
        self.vision = sweep.get("vision") or {
            "models": [],
            "images": [],
            "layers": [],
            "interventions": [],
            "overrides": [],
        }
        train = sweep.get("train") or {}
        self.train_configs = train.get("configs") or []
        self.train_variants = train.get("variants") or TRAIN_VARIANTS_ALL
        self.train_runs = {run: (config, extra) for run, config, extra in sweeps.train_runs(sweep)}
        self.train_scaled = self.train_configs if train.get("scale") else []
        self._ids = None
        self.composed = set()  # the config_key of every config ids() composed (or found composed)

    # ------------------------------------------------------------ the Hydra overrides of every job
    def pair_args(self, stage: str, model: str, corpus: str, *extra: str) -> list[str]:
        """model= (a run <model>@<protocol>: its model, name and model.bos), data=, the rule's own
        overrides, then the sweep's that reach this stage (listed last, so they win)."""
        return last_wins(
            [
                *sweeps.run_args(model),
                f"data={corpus}",
                *extra,
                *sweeps.search_path(self.sweep, model, corpus),
                *stages.relevant(sweeps.overrides(self.sweep, model, corpus), stage),
            ]
        )

    def ablate_args(self, stage, model, corpus, layers, interventions, *extra):
        plugins = self.sweep.get("plugins") or []  # the user modules that register interventions
        return self.pair_args(
            stage,
            model,
            corpus,
            layers_override(layers),
            f"ablate.interventions={hydra_list(interventions)}",
            *extra,
            *([f"plugins=[{','.join(repr(p) for p in plugins)}]"] if plugins else []),
        )

    def train_args(self, train: str) -> list[str]:
        """train=<config> and a grid run's overrides (train.name=..., train.model.n_embd=...)."""
        config, extra = self.train_runs.get(train, (train, []))
        return [f"train={config}", *extra]

    def args(self, rule: str, **w: str) -> list[str]:
        """A job's Hydra overrides from its wildcards (hydra.run.dir aside)."""
        s = self.sweep
        sizes = [f"ablate.{key}={self.ablate[key]}" for key in ("max_chunks", "bootstrap") if key in self.ablate]
        sweep_args = [f"sweep_name={sweeps.hydra_value(self.name)}", *sweeps.overrides(s)]
        if rule == "fetch_model":
            return [
                *sweeps.run_args(w["model"]),
                *sweeps.search_path(s, model=w["model"]),
                *stages.relevant(sweeps.overrides(s, w["model"]), rule),
            ]
        if rule == "fetch_corpus":
            return [
                f"data={w['corpus']}",
                *sweeps.search_path(s, corpus=w["corpus"]),
                *stages.relevant(sweeps.overrides(s), rule),
            ]
        if rule in ("tokenize", "capture", "detect", "figures"):
            return self.pair_args(rule, w["model"], w["corpus"])
        if rule in ("attention", "origins", "retrofit", "inference"):
            section = {
                "attention": self.attention,
                "origins": self.origins,
                "retrofit": self.retrofit,
                "inference": self.inference,
            }[rule]
            return self.pair_args(rule, w["model"], w["corpus"], *section_overrides(section, rule, skip=("corpora",)))
        if rule == "ablate":
            return self.ablate_args(rule, w["model"], w["corpus"], w["layers"], self.ablate["interventions"], *sizes)
        if rule == "zeroshot":
            return self.ablate_args(
                rule,
                w["model"],
                w["corpus"],
                w["layers"],
                self.ablate["interventions"],
                f"ablate.zeroshot_tasks={hydra_list(self.zeroshot)}",
            )
        if rule == "ablate_images":
            return self.ablate_args(rule, w["model"], w["corpus"], w["layers"], self.vision["interventions"])
        if rule in ("ablation", "report"):
            return sweep_args
        if rule == "train":  # + train.num_threads={threads}
            return [*self.train_args(w["train"]), f"train.variant={w['variant']}"]
        if rule == "train_compare":  # the sweep's name reaches it through WANDB_RUN_GROUP only
            return self.train_args(w["train"])
        if rule == "train_scale":
            return [f"train={w['train']}", f"sweep_name={sweeps.hydra_value(self.name)}"]
        raise KeyError(rule)

    def jobs(self):
        """(rule, wildcards) of every job of the sweep that composes a config."""
        llm_pairs = [(m, c) for m in self.models for c in self.corpora]
        yield from (("fetch_model", {"model": m}) for m in dict.fromkeys(paths.fetch_name(m) for m, _ in self.pairs))
        yield from (("fetch_corpus", {"corpus": c}) for c in dict.fromkeys(c for _, c in self.pairs))
        for name in ("tokenize", "capture", "detect", "figures"):
            yield from ((name, {"model": m, "corpus": c}) for m, c in self.pairs)
        for name in ["ablate"] * bool(self.ablate) + ["zeroshot"] * bool(self.zeroshot):
            pairs = self.llm_pairs if name == "ablate" else self.zeroshot_pairs
            yield from (
                (name, {"model": m, "corpus": c, "layers": layers})
                for m, c in pairs
                for layers in self.ablate["layers"]
            )
        yield from (("attention", {"model": m, "corpus": c}) for m, c in self.llm_pairs if self.attention)
        yield from (("origins", {"model": m, "corpus": c}) for m, c in llm_pairs if self.origins is not None)
        yield from (("retrofit", {"model": m, "corpus": c}) for m, c in self.retrofit_pairs)
        yield from (("inference", {"model": m, "corpus": c}) for m, c in self.inference_pairs)
        yield from (
            ("ablate_images", {"model": m, "corpus": i, "layers": layers})
            for m in self.vision["models"]
            for i in self.vision["images"]
            for layers in self.vision["layers"]
        )
        yield from (("ablation", {}),) * bool(self.ablate)
        yield ("report", {})
        for train in self.train_runs:
            yield from (("train", {"train": train, "variant": v}) for v in self.train_variants)
            yield ("train_compare", {"train": train})
        yield from (("train_scale", {"train": config}) for config in self.train_scaled)

    def described(self):
        """(what, overrides, config name) of every job, for sweep.check_configs."""
        for rule, w in self.jobs():
            what = f"rule {rule} ({', '.join(w.values())})" if w else f"rule {rule}"
            yield what, [f"stage={rule}", *self.args(rule, **w)], CONFIG_NAME.get(rule, "config")

    # ------------------------------------------------------------ the config ids of the keyed stages
    def ids(self, cache: str | Path | None = IDS_CACHE, root: str | Path = ".") -> dict[tuple[str, ...], str]:
        """{(rule, *wildcard values): config id} of every keyed job, composing each job's config
        (once: `cache`, under sweep.fingerprint, remembers the ids of composed configs)."""
        if self._ids is not None:
            return self._ids
        cache = Path(root) / cache if cache else None
        stamp = sweeps.fingerprint()
        try:
            known = json.loads(cache.read_text()) if cache else {}
        except (OSError, ValueError):
            known = {}
        known = known.get("ids", {}) if known.get("fingerprint") == stamp else {}
        out, new, cfgs = {}, False, {}
        for rule, w in self.jobs():
            if rule not in stages.STAGES:
                continue
            argv = self.args(rule, **w)
            key = config_key("config", argv)  # as sweep.check_configs: a composed key is a checked one
            self.composed.add(key)
            ids = known.setdefault(key, {})
            fetched = (Path(root) / paths.fetched(paths.fetch_name(w["model"]))).is_file()
            checked = f"{rule}:checked"  # passed the checks against the fetched model's config.json
            if rule not in ids or (fetched and checked not in ids):
                if key not in cfgs:  # one compose per distinct config (tokenize..figures often share one)
                    cfgs[key] = self.compose(rule, w, argv)
                ids[rule] = stages.stage_id(cfgs[key], rule)
                if fetched:
                    self.preflight(rule, w, cfgs[key], root)
                    ids[checked] = True
                new = True
            out[(rule, *w.values())] = ids[rule]
        if cache and new:
            sweeps.write_json_atomic(cache, {"fingerprint": stamp, "ids": known})
        self._ids = out
        return out

    def compose(self, rule: str, w: dict, argv: list[str]):
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from pipeline.cli import compose, one_line

        try:  # composed once for both this and sweep.check_configs, which compose the same overrides
            key = ("config", *argv)
            if key not in sweeps._COMPOSED:
                sweeps._COMPOSED[key] = compose(argv)
            return copy.deepcopy(sweeps._COMPOSED[key])  # preflight sets paths.root in its copy
        except (MassiveError, HydraException, OmegaConfBaseException) as exc:
            raise MassiveError(f"sweep {self.name!r}: rule {rule} ({', '.join(w.values())}): {one_line(exc)}") from None

    def preflight(self, rule: str, w: dict, cfg, root) -> None:
        """The job's values against the fetched model's config.json (block indices, seq_len, top-k):
        at `snakemake -n` once the model is fetched (before: the job checks them itself)."""
        from omegaconf import open_dict

        from pipeline.checks import preflight

        with open_dict(cfg):
            cfg.paths.root = str(root)
        try:
            preflight(cfg, rule)
        except (MassiveError, OSError, ValueError) as exc:  # ValueError: a fetched.json that is not JSON
            raise MassiveError(f"sweep {self.name!r}: rule {rule} ({', '.join(w.values())}): {exc}") from None

    def cid(self, rule: str, *names: str) -> str:
        return self.ids()[(rule, *names)]

    # ------------------------------------------------------------ the folders of the keyed jobs
    def outputs(self, rules: tuple[str, ...] | None = None) -> list[str]:
        """Every output file of the sweep's keyed jobs (of `rules`; None: all), from the stage
        declarations: what the report reads."""
        return [
            f"{self.dir(rule, *names)}/{f}"
            for rule, *names in self.ids()
            if rules is None or rule in rules
            for f in stages.STAGES[rule].files
        ]

    def where(self, results: str = paths.RESULTS):
        """`where(rule, model, corpus[, layers])`: the keyed folder of a job of this sweep as a Path
        under `results`, None where the sweep has no such job (what the report reads)."""

        def folder(rule: str, model: str, corpus: str, layers: str | None = None) -> Path | None:
            d = self.dir(rule, model, corpus, layers, results)
            return Path(d) if d else None

        return folder

    def dir(
        self, rule: str, model: str, corpus: str, layers: str | None = None, results: str = paths.RESULTS
    ) -> str | None:
        """The keyed folder of one job of this sweep (None where the sweep has no such job)."""
        key = (rule, model, corpus) + ((layers,) if layers is not None else ())
        cid = self.ids().get(key)
        if cid is None:
            return None
        if stages.STAGES[rule].dir_name == "ablate":
            return paths.ablate_dir(model, corpus, layers, cid, results)
        return paths.run_dir(model, corpus, stages.STAGES[rule].dir_name, cid, results)
