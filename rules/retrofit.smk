# Stage 3, retrofit: an explicit attention bias trained on the frozen model with its massive
# activations zeroed from their emergence block (massive/retrain/retrofit.py), for every LLM x corpus of the
# sweep when it has a `retrofit:` section (its values become retrofit.<key>; {} runs the defaults).
rule retrofit:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
        detect=upstream("detect", *paths.DETECT_FILES),
    output:
        [paths.retrofit_file("{model}", "{corpus}", "{cid}", name) for name in paths.RETROFIT_FILES],
    log:
        paths.log("retrofit", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        py=PY,
        args=args("retrofit"),
    shell:
        "{params.py} -m pipeline.retrofit {params.args} 2>&1 | tee {log:q}"
