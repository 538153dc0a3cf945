# Shared by the Snakefile and rules/*.smk: the sweep, the Python that runs the modules, and
# the Hydra overrides each rule appends.
import shlex
import sys

from pipeline import sweep as sweeps

SWEEP_NAME = str(config.get("sweep", "default"))
SWEEP = sweeps.load(SWEEP_NAME)
SWEEP_STEM = sweeps.path_of(SWEEP_NAME).stem
PY = shlex.quote(sys.executable)
# The sweep's name reaches the jobs through the environment (WANDB_RUN_GROUP, the W&B group),
# not their parameters: a result shared by two sweeps is not recomputed when switching sweeps.
sweeps.export_group(SWEEP_STEM)


def overrides(model=None, corpus=None):
    """The sweep's Hydra overrides for every rule (and a model's own), shell-quoted."""
    return " ".join(shlex.quote(o) for o in sweeps.overrides(SWEEP, model, corpus))


OVERRIDES = overrides()
SWEEP_OVERRIDES = f"sweep_name={shlex.quote(SWEEP_NAME)} {OVERRIDES}"  # for the rules that read the sweep
ABLATE = SWEEP.get("ablate")
ABLATION = [f"results/ablation_{SWEEP_STEM}.{ext}" for ext in ("parquet", "png", "html")] if ABLATE else []
ZEROSHOT = (ABLATE or {}).get("zeroshot_tasks") or []


def ablate_outputs(name):
    """Every results/<model>/<corpus>/ablate/<layers>/<name> of the sweep."""
    return [f"results/{m}/{c}/ablate/{layers}/{name}" for m in SWEEP["models"] for c in SWEEP["corpora"]
            for layers in (ABLATE or {}).get("layers", [])]


def hydra_list(items):
    return shlex.quote("[" + ",".join(items) + "]")


PAIRS = sweeps.pairs(SWEEP)  # every (model, corpus) captured: LLMs x corpora, then ViTs x image data
VISION = SWEEP.get("vision")
VISION_INTERVENTIONS = (VISION or {}).get("interventions", [])


def vision_outputs():
    """Every results/<vit>/<images>/ablate/<layers>/images.parquet of the sweep."""
    if not VISION:
        return []
    return [f"results/{m}/{i}/ablate/{layers}/images.parquet" for m in VISION["models"] for i in VISION["images"]
            for layers in VISION["layers"]]


ATTENTION = SWEEP.get("attention")
ATTENTION_OUT = ["heads.parquet", "layers.parquet", "decomposition.parquet", "perplexity.parquet", "heatmaps.png",
                 "sink_curve.png", "summary.json"]


def attention_overrides():
    items = []
    for key, value in (ATTENTION or {}).items():
        value = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else value
        items.append(shlex.quote(f"attention.{key}={value}"))
    return " ".join(items)


TRAIN_VARIANTS_ALL = ["default", "sink_token", "attn_bias", "softmax_plus_one", "gated"]


def train_variants():
    return list((SWEEP.get("train") or {}).get("variants") or TRAIN_VARIANTS_ALL)


def train_targets():
    """The comparison outputs of every training config of the sweep (none when it has no `train:`)."""
    spec = SWEEP.get("train") or {}
    return [f"results/train/{name}/{out}" for name in spec.get("configs", [])
            for out in ("comparison.parquet", "emergence.png", "layerwise.png")]
