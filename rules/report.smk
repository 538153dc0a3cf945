# Stage 4, the report: one HTML page of everything the sweep built (the same lists the rules
# above write, expanded over the sweep's names).
rule report:
    input:
        rules.ablation.output,
        each_pair(rules.attention.output, LLM_PAIRS) if ATTENTION else [],
        # the protocol runs' perplexity (their ablation is not part of the sweep's ablation table)
        [paths.ablate_file(m, c, layers, "perplexity.parquet") for m, c in PROTOCOL_PAIRS for layers in ABLATE.get("layers", [])],
        each_pair(rules.origins.output, [(m, c) for m in MODELS for c in CORPORA]) if ORIGINS is not None else [],
        each_pair(rules.inference.output, INFERENCE_PAIRS) if INFERENCE_PAIRS else [],
        expand(rules.train_compare.output, train=list(TRAIN_RUNS)),
        expand(rules.train_scale.output, train=TRAIN_SCALED),
        expand(rules.ablate_images.output, model=VISION["models"], corpus=VISION["images"], layers=VISION["layers"]),
        each_pair(rules.figures.output),
        each_pair(rules.detect.output),
    output:
        paths.report_file(SWEEP_STEM),
    log:
        paths.log("report", SWEEP_STEM),
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        args=args("report"),
        run=paths.sweep_run_dir("report", SWEEP_STEM),
    shell:
        "{params.py} -m pipeline.report {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"
