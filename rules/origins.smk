# Stage 3, origins: where the massive activations come from (the writing sublayer, the super weight
# behind it, and its causal test against controls), for every LLM x corpus of the sweep when it
# has an `origins:` section (its values become origins.<key>).
rule origins:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        tokens=rules.tokenize.output.tokens,
        detect=rules.detect.output,
    output:
        [paths.origins_file("{model}", "{corpus}", name) for name in paths.ORIGINS_FILES],
    log:
        paths.log("origins", "{model}", "{corpus}"),
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        args=args("origins"),
    shell:
        "{params.py} -m pipeline.origins {params.args} 2>&1 | tee {log:q}"
