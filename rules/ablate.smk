# Stage 3, the interventions: perplexity (ablate, with the regrowth downstream) and zero-shot
# accuracy (zeroshot) with the massive activations zeroed, set to their mean, or a control, at the
# blocks {layers} (path-safe: emerge, from_emerge, all, 2_3; the job gets ablate.layers=[2,3]); the
# sweep's table of them (ablation); the same for vision transformers on images (ablate_images).
rule ablate:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        detect=rules.detect.output,
    output:
        [paths.ablate_file("{model}", "{corpus}", "{layers}", name) for name in paths.ABLATE_FILES],
    log:
        paths.log("ablate", "{model}", "{corpus}", "{layers}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("ablate"),
        run=lambda w: paths.ablate_dir(w.model, w.corpus, w.layers),
    shell:
        "{params.py} -m pipeline.ablate {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


rule zeroshot:
    input:
        model=rules.fetch_model.output.marker,
        detect=rules.detect.output,
    output:
        paths.ablate_file("{model}", "{corpus}", "{layers}", "zeroshot.parquet"),
    log:
        paths.log("zeroshot", "{model}", "{corpus}", "{layers}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=480,
    params:
        py=PY,
        args=args("zeroshot"),
        run=lambda w: paths.ablate_file(w.model, w.corpus, w.layers, ".zeroshot"),
    shell:
        "{params.py} -m pipeline.zeroshot {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


rule ablation:
    input:
        expand(rules.ablate.output, model=MODELS, corpus=CORPORA, layers=ABLATE.get("layers", [])),
        [expand(rules.zeroshot.output, model=m, corpus=c, layers=ABLATE.get("layers", [])) for m, c in ZEROSHOT_PAIRS],
    output:
        [paths.ablation_file(SWEEP_STEM, ext) for ext in paths.ABLATION_EXTS] if ABLATE else [],
        [paths.regrowth_file(SWEEP_STEM, model) for model in [None, *MODELS]] if ABLATE else [],
    log:
        paths.log("ablation", SWEEP_STEM),
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        args=args("ablation"),
        run=paths.sweep_run_dir("ablation", SWEEP_STEM),
    shell:
        "{params.py} -m pipeline.ablation {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


rule ablate_images:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        tokens=rules.tokenize.output.tokens,
        detect=rules.detect.output,
    output:
        paths.ablate_file("{model}", "{corpus}", "{layers}", "images.parquet"),
    log:
        paths.log("ablate_images", "{model}", "{corpus}", "{layers}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("ablate_images"),
        run=lambda w: paths.ablate_file(w.model, w.corpus, w.layers, ".images"),
    shell:
        "{params.py} -m pipeline.ablate_images {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"
