# Shared by the Snakefile and rules/*.smk: the sweep, the Python that runs the modules, its jobs
# (pipeline/jobs.py: each job's Hydra overrides and config id), and the check that composes all of
# them while the DAG is built. Paths come from pipeline/paths.py, the module the rule modules use too.
import shlex
import sys

from massive.core.errors import MassiveError
from pipeline import jobs, paths, sizing, stages
from pipeline import sweep as sweeps

SWEEP_NAME = str(config.get("sweep", "default"))
try:
    SWEEP = sweeps.load(SWEEP_NAME)
except MassiveError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
SWEEP_STEM = sweeps.path_of(SWEEP_NAME).stem
# another sweep to compare this one with, by the compare rule (--config compare=NAME or a path)
COMPARE = str(config["compare"]) if config.get("compare") else None
COMPARE_STEM = sweeps.path_of(COMPARE).stem if COMPARE else None
if COMPARE and not sweeps.path_of(COMPARE).is_file():
    print(f"error: compare={COMPARE!r}: no sweep {sweeps.path_of(COMPARE)}", file=sys.stderr)
    sys.exit(2)
PY = shlex.quote(sys.executable)
# The sweep's name reaches the jobs through the environment (WANDB_RUN_GROUP, the W&B group),
# not their parameters: a result shared by two sweeps is not recomputed when switching sweeps.
sweeps.export_group(SWEEP_STEM)

# Every job of the sweep, its Hydra overrides and (for a keyed stage) its config id: pipeline/jobs.py.
try:
    PLAN = jobs.Plan(SWEEP, SWEEP_NAME)
except MassiveError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
# The targets, as lists of names (the rules' patterns are expanded over them).
MODELS, CORPORA = PLAN.models, PLAN.corpora
PAIRS = PLAN.pairs  # every (model, corpus) captured: LLMs x corpora, protocol runs, then ViTs x image data
# the sweep's models in other sequence protocols: (run, corpus), run = <model>@<protocol> (pipeline/paths.py);
# they get tokenize, capture, detect, figures (PAIRS), ablate and attention (LLM_PAIRS), and the report's contrast
PROTOCOL_PAIRS = PLAN.protocol_pairs
LLM_PAIRS = PLAN.llm_pairs
ABLATE = PLAN.ablate
ZEROSHOT = PLAN.zeroshot
ZEROSHOT_PAIRS = PLAN.zeroshot_pairs  # each LLM once, on the sweep's first corpus (the detection it uses)
ATTENTION = PLAN.attention
ORIGINS = PLAN.origins
INFERENCE_PAIRS = PLAN.inference_pairs  # the LLMs x the section's corpora (all by default)
VISION = PLAN.vision
TRAIN_VARIANTS_ALL = jobs.TRAIN_VARIANTS_ALL
TRAIN_VARIANTS = PLAN.train_variants
TRAIN_RUNS = PLAN.train_runs  # the training runs: {name: (config, overrides)}; with a train.scale grid each config at every grid point
TRAIN_SCALED = PLAN.train_scaled  # rule train_scale's configs


# ---------------------------------------------------------------- the config ids (pipeline/stages.py)
def ids():
    """{(rule, *wildcards): config id} of every keyed job (composed once, cached in .snakemake/)."""
    try:
        return PLAN.ids()
    except MassiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def keyed(stage, pairs, pattern, layers=None):
    """A keyed stage's outputs for the sweep's jobs: `pattern(model, corpus, cid)` (with layers:
    `pattern(model, corpus, layers, cid)`) for each (model, corpus) of `pairs`."""
    if layers is None:
        return [pattern(m, c, ids()[(stage, m, c)]) for m, c in pairs]
    return [pattern(m, c, lay, ids()[(stage, m, c, lay)]) for m, c in pairs for lay in layers]


def outputs(rules=None):
    """Every output of the sweep's keyed jobs (of `rules`): the report's inputs."""
    ids()
    return PLAN.outputs(rules)


def upstream(stage, *names):
    """An input function: files of the job of `stage` that the requesting job of this sweep comes after."""
    def files(w):
        key = (stage, w.model, w.corpus)
        if key not in ids():
            raise ValueError(f"no {stage} job for {w.model} on {w.corpus} in sweep {SWEEP_NAME!r}")
        d = paths.run_dir(w.model, w.corpus, stages.STAGES[stage].dir_name, ids()[key])
        return [f"{d}/{n}" for n in names]
    return files


def args(rule):
    """A rule's `args` param: its job's Hydra overrides, shell-quoted. The {cid} wildcard (the
    config id, which the job computes from its own config) is not one of its overrides."""
    return lambda w: " ".join(shlex.quote(a) for a in PLAN.args(rule, **{k: v for k, v in w.items() if k != "cid"}))


# For each rule, its job's Hydra overrides from the job's wildcards: the SLURM profile sizes each
# GPU job from its composed config (pipeline/sizing.py).
ARGS = {rule: (lambda rule: lambda **w: PLAN.args(rule, **w))(rule) for rule in jobs.RULES}
sizing.register(ARGS)


CHECKED = ".snakemake/checked_configs.json"  # the configs that composed, kept while conf/ and the code stay as they are


def check_configs():
    """Compose every job's config now, so a typo in the sweep's overrides or a model YAML fails
    `snakemake -n` with one line, before any job runs (and before Snakemake deletes the outputs
    of jobs whose parameters changed). Each distinct config is composed once, and not again by a
    later snakemake while conf/ and the code stay the same (CHECKED)."""
    try:
        return sweeps.check_configs(SWEEP_NAME, PLAN.described(), cache=CHECKED)
    except MassiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
