# Stage 3, inference: what massive activations cost at inference (float16/bfloat16 headroom, measured
# in those formats; activation and weight quantization with and without them kept in float; windowed
# attention with and without the sink), for every LLM x corpus of the sweep's `inference:` section
# (its corpora, or all; its other values become inference.<key>).
rule inference:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        tokens=rules.tokenize.output.tokens,
        detect=rules.detect.output,
    output:
        [paths.inference_file("{model}", "{corpus}", name) for name in paths.INFERENCE_FILES],
    log:
        paths.log("inference", "{model}", "{corpus}"),
    conda:
        "../environment.yml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        args=args("inference"),
    shell:
        "{params.py} -m pipeline.inference {params.args} 2>&1 | tee {log:q}"
