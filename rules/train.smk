# The retraining experiment (Sun et al. 2024, section 5): train GPT variants, then compare them.
# The sweep's `train:` key picks the runs (rules/common.smk: TRAIN_RUNS, TRAIN_VARIANTS):
#   train: {configs: [cpu_backcopy], variants: [default, sink_token, attn_bias, softmax_plus_one, gated]}
# with `scale: {model.n_embd: [128, 256, 512], model.n_layer: [2, 4]}` each config is trained at every
# grid point (runs <config>_n_embd128_n_layer2, ...) and rule train_scale compares them (sweep=retrain_scale).
# Every training run uses one core (the CPU test bed: about 11 minutes a variant, see docs/retraining.md).
# resume.pt (not an output: Snakemake never deletes it) is rewritten every train.checkpoint_interval
# steps; a killed job resumes from it when rerun with the same command (after `snakemake --unlock` if
# snakemake itself was killed), provided the settings are the same (else one line: another train.name,
# or train.resume=false). checkpoint.pt is the finished run's resume.pt. docs/safety.md.
# The paper's run (conf/train/gpt2_124m_owt.yaml) needs 8 GPUs under torchrun: launch it by hand.
rule train:
    output:
        metrics=paths.train_run_file("{train}", "{variant}", "metrics.parquet"),
        checkpoint=paths.train_run_file("{train}", "{variant}", "checkpoint.pt"),
    log:
        paths.log("train", "{train}", "{variant}"),
    threads: 1
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        py=PY,
        args=args("train"),
    shell:
        "{params.py} -m pipeline.train {params.args} train.num_threads={threads} 2>&1 | tee {log:q}"


rule train_compare:
    input:
        expand(rules.train.output, train="{train}", variant=TRAIN_VARIANTS),
    output:
        [paths.train_file("{train}", name) for name in paths.TRAIN_COMPARE_FILES],
    log:
        paths.log("train_compare", "{train}"),
    threads: 1
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        args=args("train_compare"),
        run=lambda w: paths.train_compare_run_dir(w.train),
    shell:
        "{params.py} -m pipeline.train_compare {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


rule train_scale:
    input:
        lambda w: [paths.train_file(name, "comparison.parquet") for name, (config, _) in TRAIN_RUNS.items() if config == w.train],
    output:
        [paths.train_scale_file("{train}", name) for name in paths.TRAIN_SCALE_FILES],
    log:
        paths.log("train_scale", "{train}"),
    threads: 1
    conda:
        "../environment.yml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        py=PY,
        args=args("train_scale"),
        run=lambda w: paths.train_scale_run_dir(w.train),
    shell:
        "{params.py} -m pipeline.train_scale {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"
