# Stage 3, attention: sinks, the implicit attention bias and its intervention, for every LLM x
# corpus of the sweep when it has an `attention:` section (its values become attention.<key>).
rule attention:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        tokens=rules.tokenize.output.tokens,
        stats=rules.capture.output.layer_stats,
        detect=rules.detect.output,
    output:
        [paths.attention_file("{model}", "{corpus}", name) for name in paths.ATTENTION_FILES],
    log:
        paths.log("attention", "{model}", "{corpus}"),
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
