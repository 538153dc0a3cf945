# Stage 3, the interventions: perplexity (ablate, with the regrowth downstream) and zero-shot
# accuracy (zeroshot) with the massive activations zeroed, set to their mean, or a control, at the
# blocks {layers} (path-safe: emerge, from_emerge, all, 2_3; the job gets ablate.layers=[2,3]); the
# sweep's table of them (ablation); the same for vision transformers on images (ablate_images).
rule ablate:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        detect=upstream("detect", *paths.DETECT_FILES),
    output:
        [paths.ablate_file("{model}", "{corpus}", "{layers}", "{cid}", name) for name in paths.ABLATE_FILES],
    log:
        paths.log("ablate", "{model}", "{corpus}", "{layers}", "{cid}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("ablate"),
    shell:
        "{params.py} -m pipeline.ablate {params.args} 2>&1 | tee {log:q}"


rule zeroshot:
    input:
        model=rules.fetch_model.output.marker,
        detect=upstream("detect", *paths.DETECT_FILES),
    output:
        paths.ablate_file("{model}", "{corpus}", "{layers}", "{cid}", "zeroshot.parquet"),
    log:
        paths.log("zeroshot", "{model}", "{corpus}", "{layers}", "{cid}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=480,
    params:
        py=PY,
        args=args("zeroshot"),
    shell:
        "{params.py} -m pipeline.zeroshot {params.args} 2>&1 | tee {log:q}"


rule ablation:
    input:
        keyed("ablate", [(m, c) for m in MODELS for c in CORPORA],
              lambda m, c, lay, cid: [paths.ablate_file(m, c, lay, cid, n) for n in paths.ABLATE_FILES], ABLATE.get("layers", [])),
        keyed("zeroshot", ZEROSHOT_PAIRS,
              lambda m, c, lay, cid: paths.ablate_file(m, c, lay, cid, "zeroshot.parquet"), ABLATE.get("layers", [])) if ZEROSHOT else [],
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
        tokens=upstream("tokenize", "tokens.parquet"),
        detect=upstream("detect", *paths.DETECT_FILES),
    output:
        paths.ablate_file("{model}", "{corpus}", "{layers}", "{cid}", "images.parquet"),
    log:
        paths.log("ablate_images", "{model}", "{corpus}", "{layers}", "{cid}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("ablate_images"),
    shell:
        "{params.py} -m pipeline.ablate_images {params.args} 2>&1 | tee {log:q}"
