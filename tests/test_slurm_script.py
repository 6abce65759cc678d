"""scripts/slurm_study.sh submits one array task per shard and a merge job that depends on them
(checked with a fake `sbatch` that records its arguments and runs each job's --wrap under /bin/sh,
as sbatch does, with a fake `hamfast`). tests/test_slurm_cluster.py runs it on a real cluster."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_study.sh"


def _fakes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    # Records its arguments, then runs the --wrap command with /bin/sh (what sbatch --wrap does).
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$@" >> {log}\necho ---- >> {log}\n'
        'for a in "$@"; do case $a in --wrap=*) SLURM_ARRAY_TASK_ID=1 /bin/sh -c "${a#--wrap=}" || exit 9;; esac; done\n'
        "echo 4242\n"
    )
    ran = tmp_path / "hamfast.log"
    hamfast = bin_dir / "hamfast-fake"
    hamfast.write_text(f'#!/bin/sh\necho "$FROM_SETUP $*" >> {ran}\n')
    for path in (fake, hamfast):
        path.chmod(0o755)
    (tmp_path / "setup.sh").write_text("FROM_SETUP=setup-ran; export FROM_SETUP\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SHARDS="3", EXTRA="--runs 30")
    return env, log, ran


def test_slurm_script_submits_shards_then_a_merge(tmp_path):
    env, log, ran = _fakes(tmp_path)
    env.update(HAMFAST_SETUP=f". {tmp_path / 'setup.sh'}", HAMFAST=str(tmp_path / "bin" / "hamfast-fake"),
               SBATCH_ARGS="--account=proj --qos=long")
    out = tmp_path / "runs"
    done = subprocess.run(["bash", str(SCRIPT), "a", "/data/cache", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    array, merge = [part.splitlines() for part in log.read_text().split("----\n")[:2]]
    for job in (array, merge):
        assert "--account=proj" in job and "--qos=long" in job  # SBATCH_ARGS reach both jobs
    assert "--array=0-2" in array and "--gres=gpu:1" in array and f"--output={out}/slurm/shard-%A_%a.log" in array
    assert "--dependency=afterok:4242" in merge and "--kill-on-invalid-dep=yes" in merge
    assert not [a for a in merge if a.startswith("--gres")] and f"--output={out}/slurm/merge-%j.log" in merge
    # Each --wrap ran under /bin/sh: the setup with `.`, then the hamfast executable.
    shard_run, merge_run = ran.read_text().splitlines()
    common = f"setup-ran experiment a --data /data/cache --out {out} --preset paper --runs 30 --device"
    assert shard_run == f"{common} cuda --shard 1/3"
    assert merge_run == f"{common} auto"
    assert "submitted merge: job 4242" in done.stdout
    assert (out / "slurm").is_dir()


def test_slurm_script_resources_and_device_are_settings(tmp_path):
    env, log, ran = _fakes(tmp_path)
    env.update(HAMFAST=str(tmp_path / "bin" / "hamfast-fake"), DEVICE="cpu", SHARD_RESOURCES="--cpus-per-task=2",
               MERGE_RESOURCES="", PARTITION="debug")
    env.pop("HAMFAST_SETUP", None)
    done = subprocess.run(["bash", str(SCRIPT), "b", "/data/cache", str(tmp_path / "o")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    array, merge = [part.splitlines() for part in log.read_text().split("----\n")[:2]]
    assert "--cpus-per-task=2" in array and not [a for a in array if a.startswith("--gres") or a.startswith("--mem")]
    assert "--partition=debug" in array and "--partition=debug" in merge
    assert ran.read_text().splitlines()[0].endswith("--device cpu --shard 1/3")


def test_slurm_script_refuses_bad_usage(tmp_path):
    env, _, _ = _fakes(tmp_path)
    usage = subprocess.run(["bash", str(SCRIPT), "a"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "a", "d", str(tmp_path / "o")], env=dict(env, SHARDS="0"),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "SHARDS must be a whole number" in bad.stderr


def test_setup_env_gives_scripts_a_real_hamfast_executable(tmp_path):
    # After `source scripts/setup_env.sh`, a child /bin/sh (a script, a job) finds `hamfast` on PATH.
    script = f"source {ROOT / 'scripts' / 'setup_env.sh'} > /dev/null && cd {tmp_path} && /bin/sh -c 'hamfast --version'"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("hamfast ")
