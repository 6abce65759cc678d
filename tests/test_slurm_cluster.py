"""scripts/slurm_study.sh on a real one-node SLURM cluster that this test starts itself: munged,
slurmctld and slurmd (Debian's slurm-wlm and munge, installed with apt-get when missing) with every
path, socket and port of their own in a scratch folder; a tiny study in two shards plus the merge
goes through the unchanged script, and the files the jobs write are checked (never job states: a
misconfigured cluster can report jobs COMPLETED that never ran). Every daemon is stopped by its PID.
See /docs/experiments.md ("On a SLURM cluster") and the notes on this set-up in the docstring of
``cluster`` below."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_study.sh"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
TINY = ("--runs 1 --methods dropout ham --completeness 0.5 --widths 2 2 2 2 --test-size 10 --stop fixed 2 "
        "--batch-size 4")


def _installed() -> bool:
    return all(os.access(path, os.X_OK) for path in DAEMONS) and shutil.which("sbatch") is not None


def _install_or_skip() -> None:
    if _installed():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"SLURM is not installed and cannot be ({' '.join(PACKAGES)} need apt-get as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"SLURM is not installed and `{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
    if not _installed():
        pytest.skip(f"SLURM is not installed: {' '.join(PACKAGES)} installed without {', '.join(DAEMONS)}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _read_pid(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.2)
    raise AssertionError(f"no pid file {path}")


def _stop(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s (slurmd can take > 10 s once its controller is gone)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    """A one-node cluster: ``{"env": environment for its clients, "log": the log folder}``.

    As the Debian packages run here without systemd: munged as user munge on a socket of its own;
    ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no cgroup set-up needed),
    ``SlurmUser=root``; free ports, so it runs beside another cluster.
    """
    _install_or_skip()
    # Not under pytest's folder: user munge must reach its files, and pytest's base is private (0700).
    scratch = Path(tempfile.mkdtemp(prefix="hamfast-slurm-"))
    scratch.chmod(0o755)
    for name in ("etc", "state", "spool", "log", "run", "munge"):
        (scratch / name).mkdir()
    munge = pwd.getpwnam("munge")
    os.chown(scratch / "munge", munge.pw_uid, munge.pw_gid)
    key = Path("/etc/munge/munge.key")
    if not key.is_file():  # a fresh install normally makes one
        key = scratch / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        os.chown(key, munge.pw_uid, munge.pw_gid)
    sock = scratch / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = _free_ports(2)
    conf = scratch / "etc" / "slurm.conf"
    conf.write_text(f"""ClusterName=hamfastci
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile={scratch}/run/slurmctld.pid
SlurmdPidFile={scratch}/run/slurmd.pid
SlurmdSpoolDir={scratch}/spool
StateSaveLocation={scratch}/state
SlurmctldLogFile={scratch}/log/slurmctld.log
SlurmdLogFile={scratch}/log/slurmd.log
NodeName={host} CPUs={os.cpu_count() or 2} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    pids = []
    try:
        subprocess.run(["runuser", "-u", "munge", "--", DAEMONS[0], f"--socket={sock}",
                        f"--pid-file={scratch}/munge/munged.pid", f"--log-file={scratch}/munge/munged.log",
                        f"--seed-file={scratch}/munge/munged.seed", f"--key-file={key}"], check=True, timeout=60)
        pids.append(_read_pid(scratch / "munge" / "munged.pid"))
        for daemon, pid_file in ((DAEMONS[1], "slurmctld.pid"), (DAEMONS[2], "slurmd.pid")):
            subprocess.run([daemon, "-f", str(conf)], env=env, check=True, timeout=60)
            pids.append(_read_pid(scratch / "run" / pid_file))
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.split()
            if "idle" in state:
                break
            assert time.monotonic() < deadline, f"the node never became idle ({state}): " + _logs(scratch / "log")
            time.sleep(0.5)
        yield {"env": env, "log": scratch / "log"}
    finally:
        if len(pids) == 3:  # no job may outlive the cluster (its slurmstepd would run on)
            jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()
            if jobs:
                subprocess.run(["scancel", *jobs], env=env, capture_output=True, timeout=60)
                _wait_for_jobs(env, timeout=60)
            _wait_for_steps(scratch / "spool", host, timeout=60)
        for pid in reversed(pids):  # slurmd, slurmctld, munged
            _stop(pid)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for_jobs(env: dict, timeout: float) -> None:
    """Until the queue is empty (or ``timeout`` s): every job ran, failed or was cancelled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        if queue.returncode == 0 and not queue.stdout.strip():
            return
        time.sleep(2)


def _wait_for_steps(spool: Path, host: str, timeout: float) -> None:
    """Until no job step has its socket in ``spool`` (a step ends just after its job leaves the queue)."""
    deadline = time.monotonic() + timeout
    while list(spool.glob(f"{host}_*")) and time.monotonic() < deadline:
        time.sleep(0.5)


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(folder.glob("*.log")))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    data = pytest.importorskip("hamfast.data")
    root = tmp_path_factory.mktemp("slurm-cohort")
    data.make_synthetic_brats(root / "brats", n_cases=30, shape=(64, 64, 8), seed=2)
    data.prepare_brats(root / "brats", cache_dir=root / "cache", size=96)
    return root / "cache"


def test_a_sharded_study_runs_through_slurm_study_sh(cluster, cohort, tmp_path):
    out = tmp_path / "study"
    env = dict(cluster["env"], SHARDS="2", PRESET="quick", EXTRA=TINY, DEVICE="cpu", TIME="00:15:00",
               SHARD_RESOURCES="--cpus-per-task=1 --mem=1500M", MERGE_RESOURCES="--cpus-per-task=1 --mem=1500M",
               SBATCH_ARGS="--partition=debug")
    env.pop("HAMFAST_SETUP", None)
    env.pop("HAMFAST", None)
    submitted = subprocess.run(["bash", str(SCRIPT), "a", str(cohort), str(out)], env=env, capture_output=True,
                               text=True, timeout=900, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    _wait_for_jobs(env, timeout=600)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((out / "slurm").glob("*.log")))
    assert (out / "summary.md").is_file(), f"no summary.md; job logs:\n{logs}\n{_logs(cluster['log'])}"

    tasks = sorted(p.stem for p in (out / "tasks").glob("*.json"))
    assert tasks == ["run000-c050-dropout", "run000-c050-ham"]
    rows = (out / "runs.csv").read_text().splitlines()
    assert rows[0].startswith("experiment,method,condition,run") and len(rows) == 3
    assert {r.split(",")[1] for r in rows[1:]} == {"dropout", "ham"}
    assert (out / "predictions.csv").is_file()
    names = sorted(p.name for p in (out / "slurm").glob("*.log"))
    array_id = submitted.stdout.split("job array ")[1].split()[0]
    assert [n for n in names if n.startswith("shard-")] == [f"shard-{array_id}_0.log", f"shard-{array_id}_1.log"]
    assert [n for n in names if n.startswith("merge-")], names
    shard_log = (out / "slurm" / f"shard-{array_id}_1.log").read_text()
    assert "not found" not in shard_log  # the job found hamfast under /bin/sh
