# The retraining experiment (Sun et al. 2024, section 5): train GPT variants, then compare them.
# Included by the top-level Snakefile, which defines SWEEP (the sweep YAML as a dict), OVERRIDES
# (global Hydra overrides) and PY (the python command). The sweep's `train:` key picks the runs:
#   train: {configs: [cpu_backcopy], variants: [default, sink_token, attn_bias, softmax_plus_one, gated]}
# Every training run uses one core (the CPU test bed: about 11 minutes a variant, see docs/retraining.md).
# checkpoint.pt is rewritten during training; a killed job resumes from it when rerun with
# --keep-incomplete (otherwise Snakemake deletes it as an incomplete output and training restarts).
# The paper's run (conf/train/gpt2_124m_owt.yaml) needs 8 GPUs under torchrun: launch it by hand.
rule train:
    output:
        metrics="results/train/{train}/{variant}/metrics.parquet",
        checkpoint="results/train/{train}/{variant}/checkpoint.pt",
    log:
        "logs/train/{train}/{variant}.log",
    threads: 1
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        py=PY,
        ov="",
    shell:
        "{params.py} -m pipeline.train train={wildcards.train} train.variant={wildcards.variant} train.num_threads={threads} {params.ov} 2>&1 | tee {log}"


rule train_compare:
    input:
        expand("results/train/{{train}}/{variant}/{file}", variant=train_variants(), file=["metrics.parquet", "checkpoint.pt"]),
    output:
        "results/train/{train}/comparison.parquet",
        "results/train/{train}/emergence.png",
        "results/train/{train}/layerwise.png",
    log:
        "logs/train_compare/{train}.log",
    threads: 1
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        ov=f"sweep_name={SWEEP_NAME}",
    shell:
        "{params.py} -m pipeline.train_compare train={wildcards.train} {params.ov} hydra.run.dir=results/train/{wildcards.train}/.runs/compare 2>&1 | tee {log}"
