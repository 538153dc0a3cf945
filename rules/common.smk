# Shared by the Snakefile and rules/*.smk: the sweep, the Python that runs the modules, the
# Hydra overrides of each rule's jobs (ARGS), and the check that composes all of them while the
# DAG is built. Paths come from pipeline/paths.py, the module the rule modules use too.
import shlex
import sys

from massive.errors import MassiveError
from pipeline import paths, sizing
from pipeline import sweep as sweeps

SWEEP_NAME = str(config.get("sweep", "default"))
try:
    SWEEP = sweeps.load(SWEEP_NAME)
except MassiveError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
SWEEP_STEM = sweeps.path_of(SWEEP_NAME).stem
PY = shlex.quote(sys.executable)
# The sweep's name reaches the jobs through the environment (WANDB_RUN_GROUP, the W&B group),
# not their parameters: a result shared by two sweeps is not recomputed when switching sweeps.
sweeps.export_group(SWEEP_STEM)

# The targets, as lists of names (the rules' patterns are expanded over them).
MODELS, CORPORA = SWEEP["models"], SWEEP["corpora"]
PAIRS = sweeps.pairs(SWEEP)  # every (model, corpus) captured: LLMs x corpora, protocol runs, then ViTs x image data
# the sweep's models in other sequence protocols: (run, corpus), run = <model>@<protocol> (pipeline/paths.py);
# they get tokenize, capture, detect, figures (PAIRS), ablate and attention (LLM_PAIRS), and the report's contrast
PROTOCOL_PAIRS = sweeps.protocol_pairs(SWEEP)
LLM_PAIRS = [(m, c) for m in MODELS for c in CORPORA] + PROTOCOL_PAIRS
ABLATE = SWEEP.get("ablate") or {}
ZEROSHOT = ABLATE.get("zeroshot_tasks") or []
ZEROSHOT_PAIRS = sweeps.zeroshot_pairs(SWEEP)  # each LLM once, on the sweep's first corpus (the detection it uses)
ATTENTION = SWEEP.get("attention")
ORIGINS = SWEEP.get("origins")
INFERENCE = SWEEP.get("inference")
INFERENCE_PAIRS = sweeps.inference_pairs(SWEEP)  # the LLMs x the section's corpora (all by default)
VISION = SWEEP.get("vision") or {"models": [], "images": [], "layers": [], "interventions": [], "overrides": []}
TRAIN_VARIANTS_ALL = ["default", "sink_token", "attn_bias", "softmax_plus_one", "gated"]
TRAIN_CONFIGS = (SWEEP.get("train") or {}).get("configs") or []
TRAIN_VARIANTS = (SWEEP.get("train") or {}).get("variants") or TRAIN_VARIANTS_ALL
# the training runs: (name, config, overrides); with a train.scale grid each config at every grid point
TRAIN_RUNS = {name: (config, extra) for name, config, extra in sweeps.train_runs(SWEEP)}
TRAIN_SCALED = TRAIN_CONFIGS if (SWEEP.get("train") or {}).get("scale") else []  # rule train_scale's configs


def train_args(train):
    """train=<config> and a grid run's overrides (train.name=..., train.model.n_embd=...)."""
    config, extra = TRAIN_RUNS.get(train, (train, []))
    return [f"train={config}", *extra]


def each_pair(patterns, pairs=PAIRS):
    """A rule's output patterns for every (model, corpus) of `pairs`."""
    return expand(patterns, zip, model=[m for m, _ in pairs], corpus=[c for _, c in pairs])


# ---------------------------------------------------------------- the Hydra overrides of every job
def hydra_list(items):
    return "[" + ",".join(map(str, items)) + "]"


def layers_override(wildcard):
    """The {layers} wildcard (path-safe: emerge, from_emerge, all, 3, 3_99) as an unambiguous Hydra
    override: ablate.layers=emerge, ablate.layers=all, ablate.layers=[3], ablate.layers=[3,99]."""
    value = wildcard if wildcard in ("emerge", "from_emerge", "all") else hydra_list(wildcard.split("_"))
    return f"ablate.layers={value}"


def attention_overrides():
    return [f"attention.{key}={hydra_list(value) if isinstance(value, list) else value}"
            for key, value in (ATTENTION or {}).items()]


def origins_overrides():
    return [f"origins.{key}={hydra_list(value) if isinstance(value, list) else value}"
            for key, value in (ORIGINS or {}).items()]


def inference_overrides():
    return [f"inference.{key}={hydra_list(value) if isinstance(value, list) else value}"
            for key, value in (INFERENCE or {}).items() if key != "corpora"]


def pair_args(model, corpus, *extra):
    """model= (a run <model>@<protocol>: its model, name and model.bos), data=, the rule's own
    overrides, then the sweep's (listed last, so they win)."""
    return [*sweeps.run_args(model), f"data={corpus}", *extra, *sweeps.overrides(SWEEP, model, corpus)]


def ablate_args(model, corpus, layers, interventions, *extra):
    return pair_args(model, corpus, layers_override(layers), f"ablate.interventions={hydra_list(interventions)}", *extra)


ABLATE_SIZES = [f"ablate.{key}={ABLATE[key]}" for key in ("max_chunks", "bootstrap") if key in ABLATE]  # rule ablate only


SWEEP_ARGS = [f"sweep_name={sweeps.hydra_value(SWEEP_NAME)}", *sweeps.overrides(SWEEP)]  # the rules that read the whole sweep
# For each rule, the Hydra overrides of one of its jobs from the job's wildcards (hydra.run.dir
# aside). The rules' `args` param (args() below) and the check at the end of the Snakefile use it.
ARGS = {
    "fetch_model": lambda model: [f"model={model}", *sweeps.overrides(SWEEP, model)],
    "fetch_corpus": lambda corpus: [f"data={corpus}", *sweeps.overrides(SWEEP)],
    "tokenize": pair_args,
    "capture": pair_args,
    "detect": pair_args,
    "figures": pair_args,
    "attention": lambda model, corpus: pair_args(model, corpus, *attention_overrides()),
    "origins": lambda model, corpus: pair_args(model, corpus, *origins_overrides()),
    "inference": lambda model, corpus: pair_args(model, corpus, *inference_overrides()),
    "ablate": lambda model, corpus, layers: ablate_args(model, corpus, layers, ABLATE["interventions"], *ABLATE_SIZES),
    "zeroshot": lambda model, corpus, layers: ablate_args(model, corpus, layers, ABLATE["interventions"],
                                                          f"ablate.zeroshot_tasks={hydra_list(ZEROSHOT)}"),
    "ablate_images": lambda model, corpus, layers: ablate_args(model, corpus, layers, VISION["interventions"]),
    "ablation": lambda: SWEEP_ARGS,
    "report": lambda: SWEEP_ARGS,
    "train": lambda train, variant: [*train_args(train), f"train.variant={variant}"],  # + train.num_threads={threads}
    "train_compare": lambda train: [*train_args(train), SWEEP_ARGS[0]],
    "train_scale": lambda train: [f"train={train}", SWEEP_ARGS[0]],
}
sizing.register(ARGS)  # the SLURM profile sizes each GPU job from its composed config (pipeline/sizing.py)
CONFIG_NAME = {"train": "train", "train_compare": "train", "train_scale": "train"}  # conf/train.yaml; others conf/config.yaml


def args(rule):
    """A rule's `args` param: its job's Hydra overrides, shell-quoted."""
    return lambda w: " ".join(shlex.quote(a) for a in ARGS[rule](**dict(w.items())))


def jobs():
    """(rule, wildcards) of every job of the sweep that composes a config."""
    llm_pairs = [(m, c) for m in MODELS for c in CORPORA]
    yield from (("fetch_model", {"model": m}) for m in dict.fromkeys(paths.base_model(m) for m, _ in PAIRS))
    yield from (("fetch_corpus", {"corpus": c}) for c in dict.fromkeys(c for _, c in PAIRS))
    for name in ("tokenize", "capture", "detect", "figures"):
        yield from ((name, {"model": m, "corpus": c}) for m, c in PAIRS)
    for name in ["ablate"] * bool(ABLATE) + ["zeroshot"] * bool(ZEROSHOT):
        pairs = LLM_PAIRS if name == "ablate" else ZEROSHOT_PAIRS
        yield from ((name, {"model": m, "corpus": c, "layers": layers}) for m, c in pairs for layers in ABLATE["layers"])
    yield from (("attention", {"model": m, "corpus": c}) for m, c in LLM_PAIRS if ATTENTION)
    yield from (("origins", {"model": m, "corpus": c}) for m, c in llm_pairs if ORIGINS is not None)
    yield from (("inference", {"model": m, "corpus": c}) for m, c in INFERENCE_PAIRS)
    yield from (("ablate_images", {"model": m, "corpus": i, "layers": layers}) for m in VISION["models"]
                for i in VISION["images"] for layers in VISION["layers"])
    yield from (("ablation", {}),) * bool(ABLATE)
    yield ("report", {})
    for train in TRAIN_RUNS:
        yield from (("train", {"train": train, "variant": v}) for v in TRAIN_VARIANTS)
        yield ("train_compare", {"train": train})
    yield from (("train_scale", {"train": config}) for config in TRAIN_SCALED)


CHECKED = ".snakemake/checked_configs.json"  # the configs that composed, kept while conf/ and the code stay as they are


def check_configs():
    """Compose every job's config now, so a typo in the sweep's overrides or a model YAML fails
    `snakemake -n` with one line, before any job runs (and before Snakemake deletes the outputs
    of jobs whose parameters changed). Each distinct config is composed once, and not again by a
    later snakemake while conf/ and the code stay the same (CHECKED)."""
    described = ((f"rule {rule} ({', '.join(w.values())})" if w else f"rule {rule}", [f"stage={rule}", *ARGS[rule](**w)],
                  CONFIG_NAME.get(rule, "config")) for rule, w in jobs())
    try:
        return sweeps.check_configs(SWEEP_NAME, described, cache=CHECKED)
    except MassiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
