"""scripts/slurm_study.sh submits one array task per shard and a merge job that depends on them
(checked with a fake `sbatch` that records its arguments)."""
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_study.sh"


def test_slurm_script_submits_shards_then_a_merge(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> {log}\necho ---- >> {log}\necho 4242\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SHARDS="3", EXTRA="--runs 30", HAMFAST_SETUP="true")
    out = tmp_path / "runs"
    done = subprocess.run(["bash", str(SCRIPT), "a", "/data/cache", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    array, merge = log.read_text().split("----\n")[:2]
    assert "--array=0-2" in array and "--shard ${SLURM_ARRAY_TASK_ID}/3" in array
    assert "hamfast experiment a --data /data/cache --out " + str(out) + " --preset paper --device cuda --runs 30" in array
    assert "--dependency=afterok:4242" in merge and "--shard" not in merge
    assert "submitted merge: job 4242" in done.stdout
    assert (out / "slurm").is_dir()

    usage = subprocess.run(["bash", str(SCRIPT), "a"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
