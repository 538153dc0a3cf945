# Stage 2, the measurements: every block's output (capture), the massive activations found in it
# (detect), and the paper's figures (figures).
rule capture:
    input:
        model=rules.fetch_model.output.marker,
        tokens=rules.tokenize.output.tokens,
    output:
        **{table: paths.capture_table("{model}", "{corpus}", table) for table in paths.CAPTURE_TABLES},
    threads: 2
    log:
        paths.log("capture", "{model}", "{corpus}"),
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
        rules.capture.output.layer_stats,
        rules.capture.output.topk,
        rules.capture.output.dim_max,
    output:
        [paths.detect_file("{model}", "{corpus}", name) for name in paths.DETECT_FILES],
    log:
        paths.log("detect", "{model}", "{corpus}"),
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
        rules.capture.output.layer_stats,
        rules.capture.output.prompt,
    output:
        [paths.figure("{model}", "{corpus}", name) for name in paths.FIGURES],
    log:
        paths.log("figures", "{model}", "{corpus}"),
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
