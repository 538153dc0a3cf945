"""SLURM: the cluster profile, the paper sweep's job plan, reruns of only what is missing, and the tiny
DAG submitted through a real single-node SLURM (scripts/slurm_local.sh) - skipped, naming why, where
SLURM cannot run here (set MA_SLURM_REQUIRED=1 to make that a failure instead)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import yte

from helpers import REPO, SITE_VARS, clean_env, job_counts, paper_env, planned_jobs, snakemake_command  # noqa: F401
from helpers import SLURM_PROFILE as PROFILE
from helpers import slurm_snakemake as snakemake
from hub import hub_env

GPU_RULES = ["capture", "ablate", "attention", "train"]
SIZED_RULES = ["capture", "ablate", "ablate_images", "zeroshot", "attention", "origins", "retrofit", "inference"]
CPU_RULES = ["tokenize", "detect", "figures"]
LOCAL_RULES = ["fetch_model", "fetch_corpus", "report"]


def tiny_sweep(tmp_path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": ["tiny_random"],
                "corpora": ["news_sample"],
                "overrides": ["tokenize.num_sequences=4", "capture.top_k=8"],
            }
        )
    )
    return path


def load_profile(**env) -> dict:
    old = {k: os.environ.get(k) for k in SITE_VARS}
    try:
        for k in SITE_VARS:
            os.environ.pop(k, None)
        os.environ.update(env)
        with open(PROFILE / "config.yaml") as f:
            return yte.process_yaml(f, require_use_yte=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- the profile -------------------------------------------------------------------------------


def test_profile_submits_to_slurm_and_resumes():
    p = load_profile()
    assert p["executor"] == "slurm"
    assert p["rerun-incomplete"] is True
    assert p["jobs"] >= 1 and p["latency-wait"] >= 10
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(p["default-resources"])


def test_gpu_rules_request_gpus_and_cpu_rules_do_not():
    res = load_profile()["set-resources"]
    for rule in GPU_RULES:
        assert "gpu:" in res[rule]["gres"] or "pipeline.sizing" in res[rule]["gres"], rule
        assert res[rule]["slurm_partition"] == "gpu", rule
    for rule in SIZED_RULES:  # sized per job from the model (pipeline/sizing.py), never from a table of names
        for key in ("gres", "mem_mb", "runtime"):
            assert f"resource({rule!r}, wildcards, {key!r}" in res[rule][key], (rule, key)
    for rule in CPU_RULES:
        assert not {"gres", "gpu", "gpu_model"} & set(res.get(rule, {})), rule
    assert "gpu" not in str(load_profile()["default-resources"])


def test_site_settings_come_from_one_place():
    p = load_profile(
        MA_SLURM_ACCOUNT="lab42",
        MA_SLURM_CPU_PARTITION="short",
        MA_SLURM_GPU_PARTITION="ampere",
        MA_SLURM_GPU_TYPE="h100",
    )
    assert "'lab42'" in p["default-resources"]["slurm_account"]
    assert p["default-resources"]["slurm_partition"] == "short"
    assert p["set-resources"]["capture"]["slurm_partition"] == "ampere"
    assert p["set-resources"]["capture"]["gres"].endswith("'gres', 'h100')")
    assert p["set-resources"]["train"]["gres"] == "gpu:h100:1"
    untyped = load_profile(MA_SLURM_GPU_TYPE="", MA_SLURM_ACCOUNT="")
    assert untyped["set-resources"]["capture"]["gres"].endswith("'gres', '')")
    assert untyped["set-resources"]["train"]["gres"] == "gpu:1"
    assert "slurm_account" not in untyped["default-resources"]


def test_internet_rules_are_local():
    snakefile = (REPO / "Snakefile").read_text()
    local = re.search(r"^localrules:(.*)$", snakefile, re.M).group(1)
    assert set(LOCAL_RULES) <= {r.strip() for r in local.split(",")}


# ---- dry runs (no SLURM needed) ----------------------------------------------------------------


def test_paper_sweep_plan_with_resources_and_its_estimate(tmp_path):
    """scripts/estimate.py on the paper sweep: its dry run (saved) is the plan checked here, and its
    table adds up the resources of that plan."""
    plan = tmp_path / "plan.txt"
    est = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/estimate.py"),
            "--sweep",
            "paper",
            "--save-plan",
            str(plan),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in paper_env(tmp_path).items() if k != "MA_SLURM_ACCOUNT"},
    )
    assert est.returncode == 0, est.stderr[-3000:]
    proc = subprocess.CompletedProcess([], 0, plan.read_text(), "")
    counts = job_counts(proc.stdout)
    llm, vit = 6 * 4, 10  # LLMs x corpora, ViTs x ImageNet
    per_pair = {
        "tokenize": llm + vit,
        "capture": llm + vit,
        "detect": llm + vit,
        "figures": llm + vit,
        "ablate": 2 * llm,
        "zeroshot": 2 * 6,
        "attention": llm,
        "origins": llm,
        "retrofit": llm,
        "inference": llm,  # zero-shot: once per model
        "ablate_images": vit,
    }
    assert counts == {"fetch_model": 16, "fetch_corpus": 5, **per_pair, "ablation": 1, "report": 1, "all": 1}, counts
    jobs = planned_jobs(proc.stdout)
    assert len(jobs) == sum(counts.values())
    assert {j["wildcards"]["corpus"] for j in jobs if j["rule"] == "zeroshot"} == {"redpajama_sample"}
    res = lambda rule, model, corpus: next(
        j["resources"]
        for j in jobs
        if j["rule"] == rule  # noqa: E731
        and j["wildcards"]["model"] == model
        and j["wildcards"]["corpus"] == corpus
    )
    # sized from each model's config.json: 46.7B fp16 weights need two 80 GB GPUs, 13B and 7B one
    assert res("capture", "mixtral_8x7b", "wikitext2")["gres"] == "gpu:a100:2"
    assert int(res("capture", "mixtral_8x7b", "wikitext2")["mem_mb"]) >= 100000
    assert res("capture", "llama2_13b", "redpajama_sample")["gres"] == "gpu:a100:1"
    assert res("capture", "gpt2", "wikitext2")["gres"] == "gpu:a100:1"
    # inference holds the float32 reference and a float16 copy: 7B = 40 GB of weights, on one 80 GB GPU
    assert res("inference", "llama2_7b", "c4")["gres"] == "gpu:a100:1"
    assert res("inference", "mixtral_8x7b", "c4")["gres"] == "gpu:a100:5"
    for rule in ("capture", "ablate", "inference"):  # time follows the work: GPT-2 is quicker than Mixtral
        assert int(res(rule, "gpt2", "wikitext2")["runtime"]) < int(res(rule, "mixtral_8x7b", "wikitext2")["runtime"])
    vits = {j["wildcards"]["model"]: j["resources"] for j in jobs if j["rule"] == "ablate_images"}
    assert all(r["gres"] == "gpu:a100:1" for r in vits.values())
    assert int(vits["dinov2_reg_s"]["runtime"]) < int(vits["dinov2_reg_g"]["runtime"])
    # a capture of 100 images is not an ablation of 50,000
    assert int(res("capture", "dinov2_g", "imagenet_val")["runtime"]) < int(vits["dinov2_g"]["runtime"]) / 3
    # the estimate: per rule and in total, jobs, GPU jobs and GPU-hours of this plan; downloads per model
    rows = {
        m.group(1): [float(x.replace(",", "")) for x in m.groups()[1:]]
        for m in re.finditer(r"^(\w+)\s+(\d+)\s+(\d+)\s+([\d,]+)\s+([\d,]+)", est.stdout, re.M)
    }
    gpu_hours = sum(
        int(re.search(r":(\d+)$", j["resources"]["gres"]).group(1)) * int(j["resources"]["runtime"]) / 60
        for j in jobs
        if "gres" in j["resources"]
    )
    assert rows["total"][:2] == [sum(counts.values()) - 1, sum(counts[r] for r in SIZED_RULES)], est.stdout
    assert rows["total"][2] == pytest.approx(gpu_hours, abs=1) and rows["zeroshot"][:2] == [12, 12]
    assert re.search(r"^llama2_7b\s+13\.5\s", est.stdout, re.M) and re.search(
        r"^mixtral_8x7b\s+93\.4\s", est.stdout, re.M
    )
    print(est.stdout)
    for j in jobs:
        r = j["resources"]
        assert "slurm_account" not in r, j  # the estimate plans without an account when none is set
        if j["rule"] in SIZED_RULES:
            assert r["slurm_partition"] == "gpu" and r["gres"].startswith("gpu:"), j
        elif j["rule"] in CPU_RULES:
            assert r["slurm_partition"] == "cpu" and "gres" not in r, j
    shells = re.findall(r"^Shell command: (.*pipeline\.capture model=mixtral_8x7b.*)$", proc.stdout, re.M)
    assert shells and all("tokenize.num_sequences=100" in s and "capture.batch_size=1" in s for s in shells)
    vit = re.findall(
        r"^Shell command: (.*pipeline\.ablate_images model=dinov2_reg_g data=imagenet_val ablate\.layers=emerge.*)$",
        proc.stdout,
        re.M,
    )
    assert len(vit) == 1 and "ablate.max_images=50000" in vit[0] and "fix_register_mean" in vit[0]


def test_placeholder_account_and_unsizable_models_fail_the_dry_run(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"models": ["llama2_7b"], "corpora": ["wikitext2"]}))
    placeholder = snakemake(
        "-n",
        "--config",
        f"sweep={sweep}",
        cwd=tmp_path,
        env={**paper_env(tmp_path), "MA_SLURM_ACCOUNT": "my_account"},
        timeout=120,
    )
    assert placeholder.returncode == 2, placeholder.stdout[-2000:]
    errors = [line for line in placeholder.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "'my_account' is the profile's placeholder" in errors[0]
        and "MA_SLURM_ACCOUNT" in errors[0]
    )
    # a hub model whose config.json is not at hand (offline, empty cache) is never sized silently small
    empty = snakemake(
        "-n",
        "--config",
        f"sweep={sweep}",
        cwd=tmp_path,
        timeout=120,
        env=clean_env(MA_SLURM_ACCOUNT="lab42", **hub_env(tmp_path / "empty")),
    )
    assert empty.returncode == 2, empty.stdout[-2000:]
    errors = [line for line in empty.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot size model 'llama2_7b'" in errors[0] and "model.sizing.params" in errors[0], (
        errors
    )


def test_reruns_only_what_is_missing(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"models": ["tiny_random"], "corpora": ["news_sample", "wiki_sample"]}))
    summary = snakemake("--summary", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr[-3000:]
    outputs = [line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if "\t" in line]
    assert len(outputs) > 20
    from helpers import run_module

    fetched = run_module(
        "fetch_model", "model=tiny_random", "wandb.mode=disabled", cwd=tmp_path
    )  # a real marker: it is checked
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    now = time.time()
    for out in outputs:  # a finished run: every output present, all of one age
        path = tmp_path / out
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.name == "fetched.json":
            path.write_text("done")
        os.utime(path, (now, now))
    done = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr, done.stdout[-2000:]

    # a capture job failed on the cluster: it left no outputs, and nothing downstream of it was made
    failed = tmp_path / "results/tiny_random/wiki_sample"
    for sub in ["capture", "detect", "figures"]:
        for f in (failed / sub).rglob("*"):
            if f.is_file():
                f.unlink()
    (tmp_path / "results/report_sweep.html").unlink()
    again = snakemake("-n", "--config", f"sweep={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert job_counts(again.stdout) == {"capture": 1, "detect": 1, "figures": 1, "report": 1, "all": 1}
    assert {j["wildcards"].get("corpus") for j in planned_jobs(again.stdout)} == {"wiki_sample", None}


# ---- a real SLURM ------------------------------------------------------------------------------


def skip_or_fail(reason: str):
    if os.environ.get("MA_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM required (MA_SLURM_REQUIRED=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture
def local_slurm(tmp_path_factory):
    """A single-node SLURM for this test: KEY=VALUE facts from `slurm_local.sh start`; stopped after."""
    if sys.platform != "linux":
        skip_or_fail(f"a local SLURM needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        skip_or_fail("starting a local SLURM needs root (apt-get, munged, slurmctld, slurmd)")
    state = tmp_path_factory.mktemp("slurm")
    script = [str(REPO / "scripts/slurm_local.sh")]
    try:
        start = subprocess.run([*script, "start", str(state)], capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired:
        subprocess.run([*script, "stop", str(state)], capture_output=True, text=True, timeout=60)
        skip_or_fail("scripts/slurm_local.sh start took over 7 minutes (apt-get?)")
    try:
        if start.returncode == 3:
            skip_or_fail(start.stderr.strip().splitlines()[-1])
        assert start.returncode == 0, f"slurm_local.sh start failed ({start.returncode}):\n{start.stderr[-3000:]}"
        facts = dict(line.split("=", 1) for line in start.stdout.splitlines() if "=" in line)
        yield {**facts, "DIR": state}
    finally:
        stop = subprocess.run([*script, "stop", str(state)], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr


@pytest.mark.slow
def test_tiny_dag_runs_as_slurm_jobs(tmp_path, local_slurm):
    sweep = tiny_sweep(tmp_path)
    env = clean_env(
        SLURM_CONF=local_slurm["SLURM_CONF"],
        PATH=os.environ["PATH"] + ":/usr/sbin:/sbin",
        MA_SLURM_ACCOUNT="",  # no accounting database here, hence no accounts
        MA_SLURM_CPU_PARTITION=local_slurm["SLURM_CPU_PARTITION"],
        MA_SLURM_GPU_PARTITION=local_slurm["SLURM_GPU_PARTITION"],
        MA_SLURM_GPU_TYPE=local_slurm["SLURM_GPU_TYPE"],
    )
    # squeue for status checks (no slurmdbd; MinJobAge=300 s keeps finished jobs visible), checked often
    args = [
        "--config",
        f"sweep={sweep}",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
        "--retries",
        "0",
        "--slurm-keep-successful-logs",
        "--jobs",
        "4",
    ]
    cmd = [
        "timeout",
        "-s",
        "KILL",
        "330",
        *snakemake_command(PROFILE.name),
        "--directory",
        str(tmp_path),
        *args,
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=360, env=env)
    log = proc.stdout + proc.stderr
    took = time.time() - t0
    ctld = Path(local_slurm["DIR"], "slurmctld.log")
    context = (
        f"after {took:.0f} s:\n{log[-4000:]}\n--- slurmctld.log:\n{ctld.read_text()[-1500:] if ctld.exists() else ''}"
    )
    assert proc.returncode == 0, f"snakemake exited {proc.returncode} {context}"

    # every non-local job was submitted to SLURM, the local ones were not
    submitted = {
        rule: jobid
        for _, jobid, rule in re.findall(
            r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: .*?/rule_(\w+)/", log
        )
    }
    assert set(submitted) == set(CPU_RULES) | {"capture"}, context
    for rule in LOCAL_RULES:
        assert re.search(rf"^localrule {rule}:$", log, re.M), f"{rule} did not run locally {context}"

    # ... and ran there: SLURM's own records (jobcomp/filetxt: one line per finished job)
    records = {}
    for line in Path(local_slurm["SLURM_JOBCOMP"]).read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        records[fields["JobId"]] = fields
    for rule, jobid in submitted.items():
        rec = records.get(jobid)
        assert rec, f"SLURM has no record of job {jobid} ({rule})"
        assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
        assert rec["WorkDir"] == str(tmp_path), rec
        want = local_slurm["SLURM_GPU_PARTITION"] if rule == "capture" else local_slurm["SLURM_CPU_PARTITION"]
        assert rec["Partition"] == want, (rule, rec)
    assert len({records[j]["Name"] for j in submitted.values()}) == 1  # one Snakemake run
    # the GPU rule got its GPU (scontrol still knows finished jobs for MinJobAge=300 s)
    show = subprocess.run(
        ["scontrol", "-o", "show", "job", submitted["capture"]], capture_output=True, text=True, env=env, timeout=30
    )
    assert re.search(r"gres[:/]gpu:" + local_slurm["SLURM_GPU_TYPE"] + r":1", show.stdout), show.stdout + show.stderr
    for rule in CPU_RULES:
        show = subprocess.run(
            ["scontrol", "-o", "show", "job", submitted[rule]], capture_output=True, text=True, env=env, timeout=30
        )
        assert show.returncode == 0 and "gpu" not in show.stdout, show.stdout

    # the outputs are complete, and a second run has nothing to do
    results = tmp_path / "results"
    report = (results / "report_sweep.html").read_text()
    assert "tiny_random on news_sample" in report
    from helpers import only_id

    for f in [
        "tokenize/tokens.parquet",
        "capture/topk.parquet",
        "capture/layer_stats.parquet",
        "detect/summary.json",
        "figures/layerwise.png",
        "figures/prompt_3d.png",
        "figures/token_map.png",
    ]:
        stage, name = f.split("/")
        assert (only_id(results / "tiny_random/news_sample" / stage) / name).stat().st_size > 0, f
    # (mtime only: the outputs are all there and in order, whatever edits the Snakefile got meanwhile)
    rerun = snakemake("-n", *args, "--rerun-triggers", "mtime", cwd=tmp_path, env=env, timeout=120)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr, (
        job_counts(rerun.stdout),
        rerun.stdout[-3000:],
    )
    print(f"SLURM jobs {submitted} completed; the DAG took {took:.0f} s")
