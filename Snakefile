# The DAG: fetch_model -> tokenize <- fetch_corpus; tokenize -> capture -> detect -> figures -> report;
# detect -> ablate -> ablation -> report (LLMs), detect -> ablate_images -> report (vision transformers).
# Every rule calls one module, pipeline/<rule>.py, with Hydra overrides built from its wildcards.
# The targets come from a sweep (conf/sweep/<name>.yaml, validated by conf/schemas/sweep.schema.yaml):
#   snakemake --cores 2                         the default sweep
#   snakemake --cores 2 --config sweep=paper    another sweep (or a path to a sweep YAML)
# Paths are relative to the working directory (snakemake --directory DIR).
include: "rules/common.smk"
CAPTURE = ["layer_stats", "topk", "dim_max", "prompt"]
DETECT = ["massive.parquet", "summary.parquet", "per_layer.parquet", "summary.json"]
FIGURES = ["layerwise", "prompt_3d", "roles", "token_map"]

wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    corpus="[A-Za-z0-9_.-]+",
    train="[A-Za-z0-9_.-]+",
    variant="|".join(TRAIN_VARIANTS_ALL),


localrules: all, fetch_model, fetch_corpus, report




include: "rules/train.smk"


rule all:
    input:
        f"results/report_{SWEEP_STEM}.html",


rule fetch_model:
    output:
        "cache/models/{model}/fetched.json",
    log:
        "logs/fetch_model/{model}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        ov=lambda w: overrides(w.model),
    shell:
        "{params.py} -m pipeline.fetch_model model={wildcards.model} {params.ov} hydra.run.dir=cache/models/{wildcards.model} 2>&1 | tee {log}"


rule fetch_corpus:
    output:
        "cache/corpora/{corpus}.parquet",
    log:
        "logs/fetch_corpus/{corpus}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        py=PY,
        ov=OVERRIDES,
    shell:
        "{params.py} -m pipeline.fetch_corpus data={wildcards.corpus} {params.ov} hydra.run.dir=cache/corpora/.runs/{wildcards.corpus} 2>&1 | tee {log}"


rule tokenize:
    input:
        model="cache/models/{model}/fetched.json",
        corpus="cache/corpora/{corpus}.parquet",
    output:
        "results/{model}/{corpus}/tokens.parquet",
    log:
        "logs/tokenize/{model}/{corpus}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
    shell:
        "{params.py} -m pipeline.tokenize model={wildcards.model} data={wildcards.corpus} {params.ov} 2>&1 | tee {log}"


rule capture:
    input:
        model="cache/models/{model}/fetched.json",
        tokens="results/{model}/{corpus}/tokens.parquet",
    output:
        expand("results/{{model}}/{{corpus}}/capture/{table}.parquet", table=CAPTURE),
    threads: 2
    log:
        "logs/capture/{model}/{corpus}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
    shell:
        "{params.py} -m pipeline.capture model={wildcards.model} data={wildcards.corpus} {params.ov} 2>&1 | tee {log}"


rule detect:
    input:
        expand("results/{{model}}/{{corpus}}/capture/{table}.parquet", table=["layer_stats", "topk"]),
    output:
        expand("results/{{model}}/{{corpus}}/detect/{file}", file=DETECT),
    log:
        "logs/detect/{model}/{corpus}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
    shell:
        "{params.py} -m pipeline.detect model={wildcards.model} data={wildcards.corpus} {params.ov} 2>&1 | tee {log}"


rule figures:
    input:
        expand("results/{{model}}/{{corpus}}/capture/{table}.parquet", table=["layer_stats", "prompt"]),
        "results/{model}/{corpus}/detect/summary.parquet",
    output:
        expand("results/{{model}}/{{corpus}}/figures/{fig}.png", fig=FIGURES),
    log:
        "logs/figures/{model}/{corpus}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
    shell:
        "{params.py} -m pipeline.figures model={wildcards.model} data={wildcards.corpus} {params.ov} 2>&1 | tee {log}"


rule ablate:
    input:
        model="cache/models/{model}/fetched.json",
        corpus="cache/corpora/{corpus}.parquet",
        detect=expand("results/{{model}}/{{corpus}}/detect/{file}", file=DETECT),
    output:
        "results/{model}/{corpus}/ablate/{layers}/perplexity.parquet",
    log:
        "logs/ablate/{model}/{corpus}/{layers}.log",
    conda:
        "environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
        interventions=lambda w: hydra_list(ABLATE["interventions"]),
    shell:
        "{params.py} -m pipeline.ablate model={wildcards.model} data={wildcards.corpus} ablate.layers={wildcards.layers} "
        "ablate.interventions={params.interventions} {params.ov} hydra.run.dir=results/{wildcards.model}/{wildcards.corpus}/ablate/{wildcards.layers} 2>&1 | tee {log}"


rule zeroshot:
    input:
        model="cache/models/{model}/fetched.json",
        detect=expand("results/{{model}}/{{corpus}}/detect/{file}", file=DETECT),
    output:
        "results/{model}/{corpus}/ablate/{layers}/zeroshot.parquet",
    log:
        "logs/zeroshot/{model}/{corpus}/{layers}.log",
    conda:
        "environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=480,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
        interventions=lambda w: hydra_list(ABLATE["interventions"]),
        tasks=hydra_list(ZEROSHOT),
    shell:
        "{params.py} -m pipeline.zeroshot model={wildcards.model} data={wildcards.corpus} ablate.layers={wildcards.layers} "
        "ablate.interventions={params.interventions} ablate.zeroshot_tasks={params.tasks} {params.ov} "
        "hydra.run.dir=results/{wildcards.model}/{wildcards.corpus}/ablate/{wildcards.layers}/.zeroshot 2>&1 | tee {log}"


rule attention:
    input:
        model="cache/models/{model}/fetched.json",
        corpus="cache/corpora/{corpus}.parquet",
        tokens="results/{model}/{corpus}/tokens.parquet",
        stats="results/{model}/{corpus}/capture/layer_stats.parquet",
        detect=expand("results/{{model}}/{{corpus}}/detect/{file}", file=DETECT),
    output:
        expand("results/{{model}}/{{corpus}}/attention/{file}", file=ATTENTION_OUT),
    log:
        "logs/attention/{model}/{corpus}.log",
    conda:
        "environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
        attn=attention_overrides(),
    shell:
        "{params.py} -m pipeline.attention model={wildcards.model} data={wildcards.corpus} {params.attn} {params.ov} 2>&1 | tee {log}"


rule ablate_images:
    input:
        model="cache/models/{model}/fetched.json",
        corpus="cache/corpora/{corpus}.parquet",
        tokens="results/{model}/{corpus}/tokens.parquet",
        detect=expand("results/{{model}}/{{corpus}}/detect/{file}", file=DETECT),
    output:
        "results/{model}/{corpus}/ablate/{layers}/images.parquet",
    log:
        "logs/ablate_images/{model}/{corpus}/{layers}.log",
    conda:
        "environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        ov=lambda w: overrides(w.model, w.corpus),
        interventions=hydra_list(VISION_INTERVENTIONS),
    shell:
        "{params.py} -m pipeline.ablate_images model={wildcards.model} data={wildcards.corpus} ablate.layers={wildcards.layers} "
        "ablate.interventions={params.interventions} {params.ov} hydra.run.dir=results/{wildcards.model}/{wildcards.corpus}/ablate/{wildcards.layers}/.images 2>&1 | tee {log}"


rule ablation:
    input:
        ablate_outputs("perplexity.parquet"),
        ablate_outputs("zeroshot.parquet") if ZEROSHOT else [],
    output:
        ABLATION,
    log:
        f"logs/ablation/{SWEEP_STEM}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        ov=SWEEP_OVERRIDES,
        stem=SWEEP_STEM,
    shell:
        "{params.py} -m pipeline.ablation {params.ov} hydra.run.dir=results/.runs/ablation_{params.stem} 2>&1 | tee {log}"


rule report:
    input:
        ABLATION,
        expand("results/{model}/{corpus}/attention/{file}", model=SWEEP["models"], corpus=SWEEP["corpora"],
               file=ATTENTION_OUT) if ATTENTION else [],
        train_targets(),
        vision_outputs(),
        [f"results/{m}/{c}/figures/{fig}.png" for m, c in PAIRS for fig in FIGURES],
        [f"results/{m}/{c}/detect/{file}" for m, c in PAIRS for file in DETECT],
    output:
        f"results/report_{SWEEP_STEM}.html",
    log:
        f"logs/report/{SWEEP_STEM}.log",
    conda:
        "environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        ov=SWEEP_OVERRIDES,
        stem=SWEEP_STEM,
    shell:
        "{params.py} -m pipeline.report {params.ov} hydra.run.dir=results/.runs/report_{params.stem} 2>&1 | tee {log}"
