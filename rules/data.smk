# Stage 1, the inputs: a model (fetch_model), a corpus (fetch_corpus), and the model's token
# sequences of the corpus (tokenize). Included by the Snakefile after rules/common.smk.
rule fetch_model:
    output:
        marker=paths.fetched("{model}"),
    wildcard_constraints:
        model=paths.FETCH_SLUG,  # a model or a revision run (its runs in other protocols: protocol_model)
    log:
        paths.log("fetch_model", "{model}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        py=PY,
        args=args("fetch_model"),
        run=lambda w: paths.model_dir(w.model),
    shell:
        "{params.py} -m pipeline.fetch_model {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


# A run of a model in another sequence protocol (gpt2@bos) uses the model's fetch: its marker is a copy.
rule protocol_model:
    input:
        paths.fetched("{base}"),
    output:
        marker=paths.fetched("{base}@{protocol}"),
    wildcard_constraints:
        base="[A-Za-z0-9_.-]+",
        protocol="bos|no_bos",
    log:
        paths.log("protocol_model", "{base}@{protocol}"),
    conda:
        "../environment.yml"
    shell:
        "cp {input:q} {output:q} 2>&1 | tee {log:q}"


rule fetch_corpus:
    output:
        corpus=paths.corpus_file("{corpus}"),
    log:
        paths.log("fetch_corpus", "{corpus}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        py=PY,
        args=args("fetch_corpus"),
        run=lambda w: paths.corpus_run_dir(w.corpus),
    shell:
        "{params.py} -m pipeline.fetch_corpus {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


rule tokenize:
    input:
        model=rules.fetch_model.output.marker,
        corpus=rules.fetch_corpus.output.corpus,
    output:
        tokens=paths.tokens_file("{model}", "{corpus}", "{cid}"),
    log:
        paths.log("tokenize", "{model}", "{corpus}", "{cid}"),
    conda:
        "../environment.yml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        py=PY,
        args=args("tokenize"),
    shell:
        "{params.py} -m pipeline.tokenize {params.args} 2>&1 | tee {log:q}"
