# Stage 4, the report: one HTML page of everything the sweep built (the same lists the rules
# above write, expanded over the sweep's names).
rule report:
    input:
        rules.ablation.output,
        # every output of the sweep's keyed jobs (pipeline/stages.py declares each stage's files)
        outputs(),
        expand(rules.train_compare.output, train=list(TRAIN_RUNS)),
        expand(rules.train_scale.output, train=TRAIN_SCALED),
    output:
        paths.report_file(SWEEP_STEM),
    log:
        paths.log("report", SWEEP_STEM),
    conda:
        "../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        py=PY,
        args=args("report"),
        run=paths.sweep_run_dir("report", SWEEP_STEM),
    shell:
        "{params.py} -m pipeline.report {params.args} hydra.run.dir={params.run:q} 2>&1 | tee {log:q}"


# Two experiments side by side (pipeline/compare.py): `--config sweep=b.yaml compare=a` after both ran.
# The other sweep's report must exist already (run that sweep first); this sweep's is built if needed.
if COMPARE:
    rule compare:
        localrule: True
        input:
            paths.report_file(COMPARE_STEM),
            rules.report.output,
        output:
            paths.compare_file(COMPARE_STEM, SWEEP_STEM),
        log:
            paths.log("compare", f"{COMPARE_STEM}_vs_{SWEEP_STEM}"),
        conda:
            "../environment.yml"
        params:
            py=PY,
            a=COMPARE,
            b=SWEEP_NAME,
        shell:
            "{params.py} -m pipeline.compare {params.a:q} {params.b:q} --out {output:q} 2>&1 | tee {log:q}"
