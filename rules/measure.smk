# Stage 2, the measurements: every block's output (capture), the massive activations found in it
# (detect), and the paper's figures (figures).
rule capture:
    input:
        model=rules.fetch_model.output.marker,
        tokens=upstream("tokenize", "tokens.parquet"),
    output:
        **{table: paths.capture_table("{model}", "{corpus}", "{cid}", table) for table in paths.CAPTURE_TABLES},
    threads: 2
    log:
        paths.log("capture", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        args=args("capture"),
    shell:
        "{params.py} -m pipeline.capture {params.args} 2>&1 | tee {log:q}"


rule detect:
    input:
        upstream("capture", "layer_stats.parquet", "topk.parquet", "dim_max.parquet"),
    output:
        [paths.detect_file("{model}", "{corpus}", "{cid}", name) for name in paths.DETECT_FILES],
    log:
        paths.log("detect", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        py=PY,
        args=args("detect"),
    shell:
        "{params.py} -m pipeline.detect {params.args} 2>&1 | tee {log:q}"


rule figures:
    input:
        upstream("capture", "layer_stats.parquet", "prompt.parquet"),
    output:
        [paths.figure("{model}", "{corpus}", "{cid}", name) for name in paths.FIGURES],
    log:
        paths.log("figures", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        py=PY,
        args=args("figures"),
    shell:
        "{params.py} -m pipeline.figures {params.args} 2>&1 | tee {log:q}"
