# Stage 3, attention: sinks, the implicit attention bias and its intervention, for every LLM x
# corpus of the sweep when it has an `attention:` section (its values become attention.<key>).
rule attention:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        tokens=upstream("tokenize", "tokens.parquet"),
        stats=upstream("capture", "layer_stats.parquet"),
        detect=upstream("detect", *paths.DETECT_FILES),
    output:
        [paths.attention_file("{model}", "{corpus}", "{cid}", name) for name in paths.ATTENTION_FILES],
    log:
        paths.log("attention", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("attention"),
    shell:
        "{params.py} -m pipeline.attention {params.args} 2>&1 | tee {log:q}"
