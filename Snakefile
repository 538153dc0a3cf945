# The DAG: fetch_model -> tokenize <- fetch_corpus; tokenize -> capture -> detect -> figures -> report;
# detect -> ablate -> ablation -> report, detect -> attention -> report, detect -> origins -> report,
# detect -> inference -> report (LLMs),
# detect -> ablate_images -> report (vision transformers).
# Every rule calls one module, pipeline/<rule>.py, with Hydra overrides built from its wildcards.
# The targets come from a sweep (conf/sweep/<name>.yaml, validated by conf/schemas/sweep.schema.yaml):
#   snakemake --cores 2                         the default sweep
#   snakemake --cores 2 --config sweep=paper    another sweep (or a path to a sweep YAML)
# Paths are relative to the working directory (snakemake --directory DIR); pipeline/paths.py
# defines each of them once. The rules, by stage, are in rules/*.smk; the sweep, the Hydra
# overrides of every job and the check that composes them all are in rules/common.smk.
include: "rules/common.smk"


wildcard_constraints:
    model=paths.RUN_SLUG,  # a model, or a run of it: in a protocol (gpt2@bos), at a revision (pythia_160m@step1000)
    corpus="[A-Za-z0-9_.-]+",
    layers=paths.LAYERS_SLUG,
    cid="[0-9a-f]{8}",  # a stage's config id (pipeline/stages.py)
    train="[A-Za-z0-9_.-]+",
    variant="|".join(TRAIN_VARIANTS_ALL),


# run where snakemake runs, never as cluster jobs: they need the internet, or are trivial
localrules: all, fetch_model, protocol_model, fetch_corpus, report


include: "rules/data.smk"
include: "rules/measure.smk"
include: "rules/ablate.smk"
include: "rules/attention.smk"
include: "rules/origins.smk"
include: "rules/retrofit.smk"
include: "rules/inference.smk"
include: "rules/train.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.report.output,
        rules.compare.output if COMPARE else [],


# Every job's config, composed now: a typo in the sweep fails here, before any job runs.
if workflow.is_main_process:
    check_configs()
