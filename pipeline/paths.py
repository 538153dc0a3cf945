"""Every file the pipeline reads or writes, as a path relative to the working directory.

One function per file or folder, of plain names. The Snakefile (rules/*.smk) calls them with
wildcards to get its patterns, pipeline/io.py calls them with a composed config's names to get
the files a rule reads and writes, so the DAG and the modules agree on every name. No Hydra or
OmegaConf here: this module is plain strings.

    >>> fetched("gpt2")
    'cache/models/gpt2/fetched.json'
    >>> fetched("{model}")  # a Snakemake pattern
    'cache/models/{model}/fetched.json'
    >>> ablate_file("gpt2", "wikitext2", "2_3", "1f2e3d4c", "perplexity.parquet")  # ablate.layers=[2,3], config id 1f2e3d4c
    'results/gpt2/wikitext2/ablate/2_3/1f2e3d4c/perplexity.parquet'

A model measured in another sequence protocol than its own is a *run* of it, named
`<model>@<protocol>` (run_name): `gpt2@bos` is gpt2 with a BOS at the start of every sequence.
Runs take the place of model names in every results path (results/gpt2@bos/wikitext2/...) and
share the model's cache folder (model_dir); their fetched marker is an alias of the model's.

    >>> run_name("gpt2", "bos"), base_model("gpt2@bos"), protocol_of("gpt2@bos"), protocol_of("gpt2")
    ('gpt2@bos', 'gpt2', 'bos', None)

A model at another revision (a training checkpoint: Pythia's step1000) is a run named
`<model>@<revision>`, any tag that is not a protocol's name. It has weights of its own, so its
own fetch and cache folder (fetch_name):

    >>> revision_of("pythia_160m@step1000"), protocol_of("pythia_160m@step1000"), model_dir("pythia_160m@step1000")
    ('step1000', None, 'cache/models/pythia_160m@step1000')
"""

from __future__ import annotations

CACHE = "cache"  # the defaults of paths.cache and paths.results (pipeline/config.py)
RESULTS = "results"
LOGS = "logs"
MARKER = "fetched.json"  # written by fetch_model in the model's cache folder: where the Hugging Face directory is

# The outputs of each rule: the Snakefile's output lists and the report read these.
CAPTURE_TABLES = ("layer_stats", "topk", "dim_max", "prompt")
DETECT_FILES = ("massive.parquet", "summary.parquet", "per_layer.parquet", "outliers.parquet", "summary.json")
FIGURES = ("layerwise", "prompt_3d", "token_map")
ATTENTION_FILES = (
    "heads.parquet",
    "layers.parquet",
    "decomposition.parquet",
    "perplexity.parquet",
    "heatmaps.png",
    "sink_curve.png",
    "summary.json",
)
ORIGINS_FILES = ("sublayers.parquet", "superweights.parquet", "perplexity.parquet", "contributions.png")
RETROFIT_FILES = ("curves.parquet", "layers.parquet", "summary.parquet", "recovery.png")
INFERENCE_FILES = (
    "headroom.parquet",
    "quantization.parquet",
    "window.parquet",
    "summary.json",
    "headroom.png",
    "quantization.png",
)
ABLATION_EXTS = ("parquet", "png", "html")
ABLATE_FILES = ("perplexity.parquet", "regrowth.parquet")  # rule ablate, per model x corpus x layers
TRAIN_COMPARE_FILES = ("comparison.parquet", "emergence.png", "layerwise.png")
MANIFEST = "settings.yaml"  # beside every keyed stage's outputs: what made them (pipeline/stages.py)
FETCHED = "fetched.json"  # written by fetch_model: where the Hugging Face directory is

# The path-safe forms of ablate.layers (pipeline.config.layers_slug): emerge, from_emerge, all, or block
# indices joined by "_" (2_3 for ablate.layers=[2,3]): the {layers} of the ablate folders.
LAYERS_SLUG = r"emerge|from_emerge|all|[0-9]+(?:_[0-9]+)*"


# ---------------------------------------------------------------- runs: a model in a sequence protocol
PROTOCOL_SEP = "@"
PROTOCOL_NAMES = ("bos", "no_bos")  # massive.core.sequences.PROTOCOLS: bos -> model.bos=always, no_bos -> never
# The Snakefile's {model}: a model, a protocol run (gpt2@bos) or a revision run (pythia_160m@step1000);
# fetch_model's: a model or a revision run (a protocol run's marker is a copy of its model's: rule protocol_model).
RUN_SLUG = r"[A-Za-z0-9_.-]+(?:@[A-Za-z0-9_][A-Za-z0-9_.-]*)?"
FETCH_SLUG = r"[A-Za-z0-9_.-]+(?:@(?!(?:bos|no_bos)(?![A-Za-z0-9_.-]))[A-Za-z0-9_][A-Za-z0-9_.-]*)?"


def run_name(model: str, protocol: str | None = None) -> str:
    """The name of `model` measured in `protocol` (None: its own, the model's name)."""
    return model if protocol is None else f"{model}{PROTOCOL_SEP}{protocol}"


def base_model(run: str) -> str:
    """The model of a run name (gpt2@bos -> gpt2; a model name is its own run)."""
    return run.split(PROTOCOL_SEP, 1)[0]


def _tag(run: str) -> str | None:
    return run.split(PROTOCOL_SEP, 1)[1] if PROTOCOL_SEP in run else None


def protocol_of(run: str) -> str | None:
    """The protocol a run name asks for (gpt2@bos -> bos), None for the model's own."""
    tag = _tag(run)
    return tag if tag in PROTOCOL_NAMES else None


def revision_of(run: str) -> str | None:
    """The revision a run name asks for (pythia_160m@step1000 -> step1000), None for the model's own."""
    tag = _tag(run)
    return tag if tag is not None and tag not in PROTOCOL_NAMES else None


def fetch_name(run: str) -> str:
    """Whose fetch a run reads: a protocol run its model's (gpt2@bos -> gpt2), a revision run its own."""
    return run if revision_of(run) else base_model(run)


# ---------------------------------------------------------------- the cache (fetch_model, fetch_corpus)
def model_dir(model: str, cache: str = CACHE) -> str:
    """The model's folder: Hugging Face format, converted once from GGUF where needed (a run
    such as gpt2@bos shares its model's; a revision, pythia_160m@step1000, has its own)."""
    return f"{cache}/models/{fetch_name(model)}"


def fetched(model: str, cache: str = CACHE) -> str:
    """The marker fetch_model writes last: it names the Hugging Face directory. A run's
    (cache/models/gpt2@bos/fetched.json) is a copy of its model's, made by rule protocol_model."""
    return f"{cache}/models/{model}/{FETCHED}"


def corpus_file(corpus: str, cache: str = CACHE) -> str:
    return f"{cache}/corpora/{corpus}.parquet"


def corpus_run_dir(corpus: str, cache: str = CACHE) -> str:
    """fetch_corpus's Hydra run directory (the composed config of the fetch)."""
    return f"{cache}/corpora/.runs/{corpus}"


# ---------------------------------------------------------------- per model and corpus, keyed by config id
# `cid` is the stage's config id (pipeline/stages.py: a hash of its settings.yaml, MANIFEST, written
# beside the outputs); results of different settings live side by side under it.
def user_conf(digest: str, cache: str = CACHE) -> str:
    """A model or data YAML that a sweep names by path, copied where Hydra finds it (a search path:
    <this>/model/<name>.yaml or <this>/data/<name>.yaml), under the digest of its settings."""
    return f"{cache}/conf/{digest}"


def pair_dir(model: str, corpus: str, results: str = RESULTS) -> str:
    return f"{results}/{model}/{corpus}"


def run_dir(model: str, corpus: str, stage: str, cid: str, results: str = RESULTS) -> str:
    """A stage's folder for one config: results/<model>/<corpus>/<stage>/<cid>."""
    return f"{pair_dir(model, corpus, results)}/{stage}/{cid}"


def manifest(model: str, corpus: str, stage: str, cid: str, results: str = RESULTS) -> str:
    """The settings that made a stage's outputs (pipeline.stages.manifest), beside them."""
    return f"{run_dir(model, corpus, stage, cid, results)}/{MANIFEST}"


def tokens_file(model: str, corpus: str, cid: str, results: str = RESULTS) -> str:
    return f"{run_dir(model, corpus, 'tokenize', cid, results)}/tokens.parquet"


def capture_table(model: str, corpus: str, cid: str, table: str, results: str = RESULTS) -> str:
    return f"{run_dir(model, corpus, 'capture', cid, results)}/{table}.parquet"


def detect_file(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    return f"{run_dir(model, corpus, 'detect', cid, results)}/{name}"


def figure(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    return f"{run_dir(model, corpus, 'figures', cid, results)}/{name}.png"


def attention_file(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    return f"{run_dir(model, corpus, 'attention', cid, results)}/{name}"


def origins_file(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    """An output of rule origins (ORIGINS_FILES)."""
    return f"{run_dir(model, corpus, 'origins', cid, results)}/{name}"


def retrofit_file(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    """An output of rule retrofit (RETROFIT_FILES)."""
    return f"{run_dir(model, corpus, 'retrofit', cid, results)}/{name}"


def inference_file(model: str, corpus: str, cid: str, name: str, results: str = RESULTS) -> str:
    """An output of rule inference (INFERENCE_FILES)."""
    return f"{run_dir(model, corpus, 'inference', cid, results)}/{name}"


def ablate_dir(model: str, corpus: str, layers: str, cid: str, results: str = RESULTS) -> str:
    """One ablation's folder (ablate, zeroshot, ablate_images); `layers` is the path-safe form
    (layers_slug): emerge, all, 2_3."""
    return f"{pair_dir(model, corpus, results)}/ablate/{layers}/{cid}"


def ablate_file(model: str, corpus: str, layers: str, cid: str, name: str, results: str = RESULTS) -> str:
    """perplexity.parquet (ablate), zeroshot.parquet (zeroshot), images.parquet (ablate_images)."""
    return f"{ablate_dir(model, corpus, layers, cid, results)}/{name}"


# ---------------------------------------------------------------- per sweep
def ablation_file(sweep: str, ext: str, results: str = RESULTS) -> str:
    return f"{results}/ablation_{sweep}.{ext}"


def regrowth_file(sweep: str, model: str | None = None, results: str = RESULTS) -> str:
    """The ablation rule's regrowth table (model None) or one model's regrowth figure.

    >>> regrowth_file("default"), regrowth_file("default", "gpt2")
    ('results/ablation_default_regrowth.parquet', 'results/ablation_default_regrowth_gpt2.png')
    """
    return f"{results}/ablation_{sweep}_regrowth" + (".parquet" if model is None else f"_{model}.png")


def report_file(sweep: str, results: str = RESULTS) -> str:
    return f"{results}/report_{sweep}.html"


def compare_file(a: str, b: str, results: str = RESULTS) -> str:
    """Two sweeps side by side (rule compare, pipeline/compare.py)."""
    return f"{results}/compare_{a}_vs_{b}.html"


def sweep_run_dir(rule: str, sweep: str, results: str = RESULTS) -> str:
    """The Hydra run directory of a rule that reads the whole sweep (ablation, report)."""
    return f"{results}/.runs/{rule}_{sweep}"


# ---------------------------------------------------------------- training (rules/train.smk)
def train_dir(name: str, results: str = RESULTS) -> str:
    return f"{results}/train/{name}"


def train_file(name: str, file: str, results: str = RESULTS) -> str:
    """A comparison output of train_compare (TRAIN_COMPARE_FILES)."""
    return f"{train_dir(name, results)}/{file}"


def train_variant_dir(name: str, variant: str, results: str = RESULTS) -> str:
    return f"{train_dir(name, results)}/{variant}"


def train_run_file(name: str, variant: str, file: str, results: str = RESULTS) -> str:
    """metrics.parquet and checkpoint.pt of one trained variant."""
    return f"{train_variant_dir(name, variant, results)}/{file}"


def train_compare_run_dir(name: str, results: str = RESULTS) -> str:
    return f"{train_dir(name, results)}/.runs/compare"


TRAIN_SCALE_FILES = ("scale.parquet", "scale.png")


def train_scale_file(config: str, file: str, results: str = RESULTS) -> str:
    """An output of train_scale (TRAIN_SCALE_FILES): results/train/<config>_scale/<file>."""
    return f"{train_dir(config, results)}_scale/{file}"


def train_scale_run_dir(config: str, results: str = RESULTS) -> str:
    return f"{train_dir(config, results)}_scale/.runs/scale"


# ---------------------------------------------------------------- logs
def log(rule: str, *names: str) -> str:
    """logs/<rule>/<name>/.../<last>.log"""
    return f"{LOGS}/{'/'.join((rule, *names))}.log"
