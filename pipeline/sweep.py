"""A sweep: the models x corpora (and their extra overrides) that the DAG builds, and its
vision transformers x image data (the `vision` section).

`load(name)` reads conf/sweep/<name>.yaml (or a path ending in .yaml), validates it against
conf/schemas/sweep.schema.yaml, checks that every model and corpus names a config file and
that no list names an entry twice, turns the `layers` entries into their path-safe form
(emerge, all, 3, 3_99) and fills in defaults. The Snakefile and the report both call it, so they
agree on the targets. A sweep may also measure its models in other sequence protocols
(`protocols`: bos, no_bos): each becomes a run `<model>@<protocol>` (pipeline/paths.py) on the
section's corpora, with its overrides (`protocol_pairs`, `run_args`). A sweep may measure its
models at other revisions too (`revisions`: training checkpoints such as Pythia's step1000): each
becomes a run `<model>@<revision>` with its own fetch, joining the sweep's models (`revision_runs`).
`check_configs` composes the config of every job of the sweep: the Snakefile calls it while it
builds the DAG, so a typo fails `snakemake -n` before any job runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

import jsonschema
import yaml

from massive.core.errors import MassiveError
from pipeline.cli import CONF_DIR

VISION_INTERVENTIONS = ["none", "zero", "mean", "random_zero", "fix_register_mean"]
# the lists in which an entry named twice is a mistake (a model captured twice, a row twice)
UNIQUE = [
    ("models",),
    ("corpora",),
    ("vision", "models"),
    ("vision", "images"),
    ("ablate", "layers"),
    ("vision", "layers"),
    ("ablate", "interventions"),
    ("vision", "interventions"),
    ("ablate", "zeroshot_tasks"),
    ("train", "configs"),
    ("train", "variants"),
    ("inference", "corpora"),
    ("retrofit", "corpora"),
    ("inference", "schemes"),
    ("inference", "windows"),
    ("inference", "sinks"),
    ("inference", "formats"),
]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads an unquoted 3_99 as the integer 399; this loader keeps it the string
    "3_99", which `load` rejects with a hint, instead of ablating block 399."""


_Loader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _digit in "0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_digit, []).insert(
        0, ("tag:yaml.org,2002:str", re.compile(r"^[0-9]+(?:_[0-9]+)+$"))
    )


def path_of(name: str) -> Path:
    return Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / "sweep" / f"{name}.yaml"


def _get(sweep: dict, key: tuple[str, ...]):
    for part in key:
        sweep = sweep.get(part) if isinstance(sweep, dict) else None
    return sweep


def _layer_strings(sweep: dict, name: str) -> None:
    """Block indices written as a string ("3_99") rather than a list ([3, 99])."""
    for section in ("ablate", "vision"):
        entries = _get(sweep, (section, "layers"))
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, str) and re.fullmatch(r"[0-9]+(?:[_,\s]+[0-9]+)*", entry.strip()):
                hint = "[" + ", ".join(re.split(r"[_,\s]+", entry.strip())) + "]"
                raise MassiveError(
                    f"sweep {name!r}: {section}.layers entry {entry!r}: write block indices as a list, "
                    f"{hint} (a string is not a list of blocks, and YAML reads an unquoted 3_99 as 399)"
                )


def _is_path(entry) -> bool:
    """A models/corpora entry that names a YAML file by its path rather than a config of conf/."""
    return isinstance(entry, str) and entry.endswith((".yaml", ".yml"))


def _user_file(sweep_name: str, key: str, group: str, entry: str, user: dict) -> str:
    """A model or data YAML named by path (relative to the working directory): its settings under its
    `name` (default: the file's stem; a safe name, not one of conf/), with the schema of conf/<group>/
    (`defaults: [schema]`), copied to cache/conf/<digest>/<group>/<name>.yaml (pipeline/paths.py
    user_conf), where Hydra finds it through the jobs' hydra.searchpath. Returns the name; `user`
    collects {group: {name: search path}}. A bad file is one line naming it."""
    from massive.core.files import atomic_path
    from pipeline import names, paths

    path, where = Path(entry), f"sweep {sweep_name!r}: {key} entry {entry!r}"
    if not path.is_file():
        raise MassiveError(f"{where}: no such file (a path is relative to the working directory)")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MassiveError(f"{where}: not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(doc, dict):
        raise MassiveError(f"{where}: not a mapping of {group} settings (as conf/{group}/*.yaml)")
    own = doc.get("name", path.stem)
    try:
        names.check("name", own)
    except MassiveError as exc:
        raise MassiveError(f"{where}: {exc}") from None
    own = str(own)
    if (CONF_DIR / group / f"{own}.yaml").is_file():
        raise MassiveError(
            f"{where}: its name {own!r} is that of conf/{group}/{own}.yaml: give it a name of its own (name:)"
        )
    defaults = doc.get("defaults") or []
    defaults = defaults if "schema" in defaults else ["schema", *defaults]
    text = yaml.safe_dump(
        {"defaults": defaults, **{k: v for k, v in doc.items() if k != "defaults"}, "name": own},
        sort_keys=False,
        default_flow_style=False,
    )
    search = paths.user_conf(hashlib.sha256(f"{group}\0{text}".encode()).hexdigest()[:16])
    if user[group].get(own, search) != search:
        raise MassiveError(f"{where}: another {group} YAML of the sweep is named {own!r} too")
    user[group][own] = search
    copy = Path(search) / group / f"{own}.yaml"
    if not copy.is_file():  # (named by the digest of what it holds: never rewritten)
        copy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(copy) as tmp:
            tmp.write_text(f"# {path}, as a sweep named it (a copy: edit the original)\n" + text)
    return own


def search_path(sweep: dict, model: str | None = None, corpus: str | None = None) -> list[str]:
    """The Hydra override that lets a job find the model and data YAMLs the sweep named by path:
    [] when neither is one, else [hydra.searchpath=[file://cache/conf/<digest>,...]]."""
    from pipeline.paths import base_model

    user = sweep.get("user_configs") or {}
    dirs = [
        user.get(group, {}).get(item)
        for group, item in (("model", model and base_model(model)), ("data", corpus))
        if item
    ]
    dirs = [d for d in dirs if d]
    return [f"hydra.searchpath=[{','.join('file://' + d for d in dirs)}]"] if dirs else []


def config_file(sweep: dict, group: str, name: str) -> Path:
    """The YAML of a model or corpus of the sweep: conf/<group>/<name>.yaml, or the copy of a user file."""
    search = (sweep.get("user_configs") or {}).get(group, {}).get(name)
    return Path(search) / group / f"{name}.yaml" if search else CONF_DIR / group / f"{name}.yaml"


def _unique(sweep: dict, name: str) -> None:
    for key in UNIQUE:
        seen = set()
        for item in _get(sweep, key) or []:
            if item in seen:
                raise MassiveError(f"sweep {name!r}: {'.'.join(key)} lists {item!r} twice")
            seen.add(item)


def _registries() -> dict[str, list[str]]:
    from massive.intervene.registry import intervention_names

    return {"interventions": intervention_names()}


def registry_schema(sweep: dict, name: str) -> dict:
    """The sweep schema with each `x-registry` node's allowed names taken from the library's
    registry (after importing the sweep's plugins, which may register more)."""
    from pipeline.config import import_plugins

    plugins = sweep.get("plugins") if isinstance(sweep, dict) else None
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        try:
            import_plugins(plugins)
        except MassiveError as exc:
            raise MassiveError(f"sweep {name!r}: {exc}") from None
    names = _registries()

    def fill(node):
        if isinstance(node, dict):
            if "x-registry" in node:
                node = {**{k: v for k, v in node.items() if k != "x-registry"}, "enum": names[node["x-registry"]]}
            return {k: fill(v) for k, v in node.items()}
        return [fill(v) for v in node] if isinstance(node, list) else node

    return fill(yaml.safe_load((CONF_DIR / "schemas" / "sweep.schema.yaml").read_text()))


def load(name: str) -> dict:
    from pipeline import names
    from pipeline.config import layers_slug

    path = path_of(name)
    names.check(
        "sweep (the file name)" if path.stem != name else "sweep", path.stem
    )  # results/report_<stem>.html, logs/...
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
        raise MassiveError(f"sweep {name!r} not found ({path}); known sweeps: {', '.join(known)}")
    try:
        sweep = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise MassiveError(f"sweep {name!r}: not valid YAML: {' '.join(str(exc).split())}") from None
    _layer_strings(sweep, name)
    schema = registry_schema(sweep, name)
    try:
        jsonschema.validate(sweep, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise MassiveError(f"sweep {name!r}: {where}: {exc.message}") from None
    vision = sweep.get("vision")
    if (
        not ((sweep["models"] or sweep.get("revisions")) and sweep["corpora"])
        and not vision
        and not (sweep.get("train") or {}).get("configs")
    ):
        raise MassiveError(
            f"sweep {name!r}: models and corpora must both be non-empty (or the sweep needs a vision "
            f"or a train section)"
        )
    lists = [("model", "models", sweep), ("data", "corpora", sweep)]
    if vision:
        lists += [("model", "vision.models", vision), ("data", "vision.images", vision)]
        vision.setdefault("interventions", list(VISION_INTERVENTIONS))
        vision.setdefault("layers", ["emerge"])
        vision.setdefault("overrides", [])
    for section in (sweep.get("ablate"), vision):
        if section and "layers" in section:  # the path-safe forms: the {layers} of the ablate folders
            section["layers"] = [layers_slug(entry) for entry in section["layers"]]
    _unique(sweep, name)
    user = {"model": {}, "data": {}}  # name -> the search path of a YAML named by path (its copy under cache/conf/)
    for group, key, where in lists:
        field = key.split(".")[-1]
        where[field] = [_user_file(name, key, group, item, user) if _is_path(item) else item for item in where[field]]
        for item in where[field]:
            if item not in user[group] and not (CONF_DIR / group / f"{item}.yaml").is_file():
                raise MassiveError(
                    f"sweep {name!r}: {key} entry {item!r} has no conf/{group}/{item}.yaml "
                    f"(or name a {group} YAML by its path: my_{group}.yaml)"
                )
    for section, key in (("inference", "corpora"), ("retrofit", "corpora"), ("protocols", "corpora")):  # named again
        entries = (sweep.get(section) or {}).get(key) if isinstance(sweep.get(section), dict) else None
        if entries:
            sweep[section][key] = [
                _user_file(name, f"{section}.{key}", "data", c, user) if _is_path(c) else c for c in entries
            ]
    _unique(sweep, name)
    sweep["user_configs"] = user
    for section in ("inference", "retrofit"):
        stray = [c for c in (sweep.get(section) or {}).get("corpora", []) if c not in sweep["corpora"]]
        if stray:
            raise MassiveError(
                f"sweep {name!r}: {section}.corpora entry {stray[0]!r} is not one of the sweep's corpora "
                f"({', '.join(sweep['corpora'])})"
            )
    sweep.setdefault("overrides", [])
    sweep.setdefault("model_overrides", {})
    sweep["protocols"] = _protocols(sweep, name)
    sweep["revisions"] = _revisions(sweep, name)
    sweep["models"] = [*sweep["models"], *revision_runs(sweep)]  # each revision is a run, measured as the models are
    return sweep


def _revisions(sweep: dict, name: str) -> dict[str, list[str]]:
    """The revisions section ({model: [revision, ...]}), checked: each model has a conf/model YAML,
    each revision is a safe name that is no protocol's, listed once, and no override sets
    model.revision behind the section's back."""
    from pipeline import names
    from pipeline.paths import PROTOCOL_NAMES

    spec = {str(m): [str(r) for r in revs] for m, revs in (sweep.get("revisions") or {}).items()}
    for model, revs in spec.items():
        if not (CONF_DIR / "model" / f"{model}.yaml").is_file():
            raise MassiveError(f"sweep {name!r}: revisions entry {model!r} has no conf/model/{model}.yaml")
        for i, rev in enumerate(revs):
            if rev in PROTOCOL_NAMES:
                raise MassiveError(
                    f"sweep {name!r}: revisions.{model} entry {rev!r} is a sequence protocol's name "
                    f"(runs <model>@{rev} are protocol runs): list it under protocols"
                )
            try:
                names.check(f"revisions.{model} entry", rev)
            except MassiveError as exc:
                raise MassiveError(f"sweep {name!r}: {exc}") from None
            if rev in revs[:i]:
                raise MassiveError(f"sweep {name!r}: revisions.{model} lists {rev!r} twice")
        for label, items in (
            ("overrides", sweep.get("overrides") or []),
            (f"model_overrides.{model}", (sweep.get("model_overrides") or {}).get(model) or []),
        ):
            for item in items:
                if str(item).split("=", 1)[0].lstrip("+~").strip() == "model.revision":
                    raise MassiveError(
                        f"sweep {name!r}: {label} entry {item!r} sets model.revision, which the revisions "
                        f"section sets per run of {model!r}: list the revision there"
                    )
    return spec


def revision_runs(sweep: dict) -> list[str]:
    """The runs of the revisions section, <model>@<revision>, in its order (pipeline/paths.py).

    >>> revision_runs({"revisions": {"pythia_160m": ["step0", "step1000"]}})
    ['pythia_160m@step0', 'pythia_160m@step1000']
    """
    from pipeline.paths import run_name

    return [run_name(m, r) for m, revs in (sweep.get("revisions") or {}).items() for r in revs]


def _protocols(sweep: dict, name: str) -> dict:
    """The protocols section in its full form: names, corpora (default: the sweep's), overrides."""
    spec = sweep.get("protocols") or {"names": []}
    spec = {"names": list(spec)} if isinstance(spec, list) else dict(spec)
    spec.setdefault("corpora", list(sweep["corpora"]))
    spec.setdefault("overrides", [])
    for key in ("names", "corpora"):
        seen = set()
        for item in spec[key]:
            if item in seen:
                raise MassiveError(f"sweep {name!r}: protocols.{key} lists {item!r} twice")
            seen.add(item)
    extra = [c for c in spec["corpora"] if c not in sweep["corpora"]]
    if extra:
        raise MassiveError(f"sweep {name!r}: protocols.corpora entry {extra[0]!r} is not one of the sweep's corpora")
    return spec


def train_runs(sweep: dict) -> list[tuple[str, str, list[str]]]:
    """Every training run of the sweep as (run name, conf/train config, Hydra overrides): each of
    train.configs, or with a `train.scale` grid each config at every grid point, named
    <config>_<last key part><value>... (cpu_backcopy_scale_n_embd256_n_layer4).

        >>> train_runs({"train": {"configs": ["bed"], "scale": {"model.n_embd": [128, 256]}}})[1]
        ('bed_n_embd256', 'bed', ['train.name=bed_n_embd256', 'train.model.n_embd=256'])
    """
    section = sweep.get("train") or {}
    scale = section.get("scale") or {}
    runs = []
    for config in section.get("configs") or []:
        if not scale:
            runs.append((config, config, []))
            continue
        keys = list(scale)
        for values in itertools.product(*(scale[k] for k in keys)):
            name = config + "".join(f"_{k.split('.')[-1]}{v}" for k, v in zip(keys, values))
            runs.append((name, config, [f"train.name={name}", *(f"train.{k}={v}" for k, v in zip(keys, values))]))
    return runs


def own_protocol(model: str, sweep: dict | None = None) -> str | None:
    """The protocol a model's YAML fixes (model.bos: always -> bos, never -> no_bos); None for
    auto (it depends on the tokenizer, known once the model is fetched)."""
    bos = (yaml.safe_load(config_file(sweep or {}, "model", model).read_text()) or {}).get("bos", "auto")
    return {"always": "bos", "never": "no_bos"}.get(bos)


def protocol_pairs(sweep: dict) -> list[tuple[str, str]]:
    """Every (run, corpus) of the sweep's protocols: <model>@<protocol> on protocols.corpora, for
    each protocol other than the one the model's YAML fixes (that one is the model's own run); not
    for the runs of the revisions section."""
    from pipeline.paths import revision_of, run_name

    p = sweep.get("protocols") or {"names": [], "corpora": []}
    return [
        (run_name(m, name), c)
        for m in sweep["models"]
        if revision_of(m) is None
        for name in p["names"]
        if name != own_protocol(m, sweep)
        for c in p["corpora"]
    ]


def llm_pairs(sweep: dict) -> list[tuple[str, str]]:
    """Every (model or run, corpus) of the language models: models x corpora, then the protocol runs."""
    return [(m, c) for m in sweep["models"] for c in sweep["corpora"]] + protocol_pairs(sweep)


def run_args(run: str) -> list[str]:
    """The Hydra overrides that select a model or a run: model=gpt2; for gpt2@bos
    model=gpt2 model.name=gpt2@bos model.bos=always (its own results folder, the protocol's model.bos);
    for pythia_160m@step1000 model=pythia_160m model.name=pythia_160m@step1000 model.revision=step1000
    (its own fetch and results folder)."""
    from massive.core.sequences import PROTOCOLS
    from pipeline.paths import base_model, protocol_of, revision_of

    proto, revision = protocol_of(run), revision_of(run)
    if revision is not None:  # quoted where Hydra would read another type (a commit 1234567, true, nan)
        plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", revision) and revision.lower() not in (
            "true",
            "false",
            "null",
            "nan",
            "inf",
        )
        return [
            f"model={base_model(run)}",
            f"model.name={run}",
            f"model.revision={revision if plain else repr(revision)}",
        ]
    if proto is None:
        return [f"model={run}"]
    return [f"model={base_model(run)}", f"model.name={run}", f"model.bos={PROTOCOLS[proto]}"]


def pairs(sweep: dict) -> list[tuple[str, str]]:
    """Every (model, corpus) the sweep captures: models x corpora, the protocol runs (protocol_pairs),
    then vision models x images."""
    vision = sweep.get("vision") or {"models": [], "images": []}
    return llm_pairs(sweep) + [(m, i) for m in vision["models"] for i in vision["images"]]


def section_pairs(sweep: dict, name: str) -> list[tuple[str, str]]:
    """The (model, corpus) pairs of a section's rule (inference, retrofit): the LLMs x the section's
    `corpora` (all the sweep's by default; none without the section)."""
    section = sweep.get(name)
    if section is None:
        return []
    return [(m, c) for m in sweep["models"] for c in section.get("corpora") or sweep["corpora"]]


def inference_pairs(sweep: dict) -> list[tuple[str, str]]:
    """The (model, corpus) pairs of rule inference."""
    return section_pairs(sweep, "inference")


def zeroshot_pairs(sweep: dict) -> list[tuple[str, str]]:
    """The (model, corpus) pairs of rule zeroshot: each LLM once, with the massive activations (and
    means) found on the sweep's first corpus (the paper: RedPajama). Zero-shot tasks bring their own
    data, so running them once per corpus would repeat the same evaluation."""
    if not (sweep.get("ablate") or {}).get("zeroshot_tasks"):
        return []
    return [(m, sweep["corpora"][0]) for m in sweep["models"]]


def overrides(sweep: dict, model: str | None = None, corpus: str | None = None) -> list[str]:
    """The Hydra overrides of every rule of this sweep (plus a model's own, plus the protocols
    section's for a run such as gpt2@bos, plus the vision section's for a vision model on image data)."""
    from pipeline.paths import base_model, protocol_of

    out = list(sweep["overrides"]) + list(sweep["model_overrides"].get(base_model(model), []) if model else [])
    if model and protocol_of(model) is not None:
        out += list((sweep.get("protocols") or {}).get("overrides", [])) + list(sweep["model_overrides"].get(model, []))
    vision = sweep.get("vision")
    if vision and model in vision["models"] and (corpus is None or corpus in vision["images"]):
        out += list(vision["overrides"])
    return out


def fingerprint() -> str:
    """A hash of everything a composed config depends on: conf/, the code of pipeline/ and
    massive/ (schema, checks, registries), and the versions of Hydra and OmegaConf."""
    import importlib.metadata

    digest = hashlib.sha256()
    for package in ("hydra-core", "omegaconf"):
        digest.update(f"{package}=={importlib.metadata.version(package)}\n".encode())
    repo = CONF_DIR.parent
    files = sorted([*CONF_DIR.rglob("*.yaml"), *(repo / "pipeline").glob("*.py"), *(repo / "massive").glob("*.py")])
    for file in files:
        digest.update(f"{file.relative_to(repo)}\n".encode() + file.read_bytes() + b"\n")
    return digest.hexdigest()


def _read_checked(cache: Path | None, stamp: str) -> set[str]:
    try:
        record = json.loads(cache.read_text()) if cache else {}
    except (OSError, ValueError):
        return set()
    return set(record.get("passed", [])) if record.get("fingerprint") == stamp else set()


def _write_checked(cache: Path, stamp: str, passed: set[str]) -> None:
    write_json_atomic(cache, {"fingerprint": stamp, "passed": sorted(passed)})


def write_json_atomic(cache: Path, record: dict) -> None:
    """A cache file under .snakemake/ (a read-only working directory: the next run is only slower)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, cache)
    except OSError:
        pass


def _stamp(argv: list[str]) -> str:
    """What a job's dry-run checks read besides its config: the fetched marker of its model (the checks
    against config.json) and, for training, the runs' resume.pt (the resume check). Part of the cache key,
    so the checks run again once a model is fetched or a checkpoint written."""
    from pipeline import paths

    model = next((a.split("=", 1)[1] for a in argv if a.startswith("model.name=")), None) or next(
        (a.split("=", 1)[1] for a in argv if a.startswith("model=")), None
    )
    files = [Path(paths.fetched(paths.fetch_name(model)))] if model else []
    if "stage=train" in argv:
        files += sorted(Path(paths.RESULTS, "train").glob("*/*/resume.pt"))
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            stats.append(f"{f}:absent")
    return "\0".join(stats)


def _stage(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("stage=")), None)


# the config sections read by one rule: a bad key there is reported under that rule's first job
SECTION_RULES = ("tokenize", "capture", "detect", "figures", "ablate", "attention", "origins", "retrofit", "inference")


def check_configs(name: str, jobs: Iterable[tuple[str, list[str], str]], cache: str | Path | None = None) -> int:
    """Compose the config of every job as its rule will, each distinct one once, and run the checks the
    rule would run before loading anything (pipeline.checks.dry_run: values against a fetched model's
    config.json, a training run's resume.pt): `jobs` holds (what, overrides, config_name), `what` naming
    the job in the error and the overrides holding stage=<rule>. Raises MassiveError with one line naming
    the job and the bad value (a typo in the sweep's overrides, an unknown key in a model YAML, a
    seq_len above the model's positions); a bad key of a rule's own section (capture.topk) is reported
    under that rule's first job. `cache` (a JSON file) remembers the configs that passed, under the
    `fingerprint` of conf/ and the code and the `_stamp` of what the checks read, so a later call checks
    only new ones. Returns how many configs were composed."""
    jobs = [(what, list(argv), config_name) for what, argv, config_name in jobs]
    cache = Path(cache) if cache else None
    stamp = fingerprint()
    passed = _read_checked(cache, stamp)
    composed = 0
    for what, argv, config_name in jobs:
        key = hashlib.sha256("\0".join([config_name, *argv, _stamp(argv)]).encode()).hexdigest()[:32]
        if key in passed:
            continue
        try:
            _compose_one(name, what, argv, config_name)
        except MassiveError as exc:
            section = re.search(r"(?:full_key: |override ')(\w+)\.", str(exc))
            owner = section.group(1) if section and section.group(1) in SECTION_RULES else None
            if owner and owner != _stage(argv):
                other = next(((w, a, c) for w, a, c in jobs if _stage(a) == owner), None)
                if other is not None:
                    _compose_one(name, *other)  # the same override fails there, named under its own rule
            raise
        passed.add(key)
        composed += 1
    if cache and composed:
        _write_checked(cache, stamp, passed)
    return composed


_COMPOSED: dict[tuple, object] = {}  # (config_name, overrides but stage): a config composed once for all its rules


def _compose_one(name: str, what: str, argv: list[str], config_name: str) -> None:
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.checks import dry_run
    from pipeline.cli import compose, one_line
    from pipeline.config import check_overrides

    try:
        check_overrides(argv)
        stage = _stage(argv)
        key = (config_name, *(a for a in argv if not a.startswith("stage=")))
        if key not in _COMPOSED:
            _COMPOSED[key] = compose([a for a in argv if not a.startswith("stage=")], config_name=config_name)
        cfg = _COMPOSED[key].copy()
        if stage is not None:
            with open_dict(cfg):
                cfg.stage = stage
        dry_run(cfg)
    except (MassiveError, HydraException, OmegaConfBaseException) as exc:
        raise MassiveError(f"sweep {name!r}: {what}: {one_line(exc)}") from None


def hydra_value(text: str) -> str:
    """`text` as one Hydra override value: as it is when plain, else single-quoted with its quotes,
    backslashes and `${` escaped (a sweep path such as `runs/my sweep's/x.yaml`).

        >>> hydra_value("paper"), hydra_value("a b/it's.yaml")
        ('paper', "'a b/it\\'s.yaml'")
    """
    if re.fullmatch(r"[A-Za-z0-9_./@+-]+", text):
        return text
    text = re.sub(r"(\\+)(?='|$|\$\{)", lambda m: m.group(1) * 2, text)  # Hydra: backslashes escape only before a quote
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def export_group(stem: str) -> None:
    """Name the sweep in the environment of the jobs the Snakefile starts (their W&B group)."""
    os.environ["WANDB_RUN_GROUP"] = stem
