"""Bad settings, outputs and files fail in one line before any work starts (issue 9): output
locations, devices, unreadable checkpoints, slices too small for the network, memory estimates,
filesystem errors, and bugs kept apart from user errors."""
import io
import os
import pickle
import sys

import pytest
import torch

from hamfast import checks, cli, files
from hamfast.experiments.workers import WorkerDied
from hamfast.training import TrainConfig, save_checkpoint
from hamfast.training.checkpoints import CheckpointError, load_checkpoint
from hamfast.training.trainer import build_from_config


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as reading a cohort or training."""
    import hamfast.experiments.study as study
    import hamfast.training

    def refuse(*args, **kwargs):
        pytest.fail("the command started work before checking its settings")

    monkeypatch.setattr(cli, "load_cohort", refuse)
    monkeypatch.setattr(study, "load_cohort", refuse)
    monkeypatch.setattr(hamfast.training, "train", refuse)


@pytest.fixture
def cache(tmp_path):
    """A folder that passes the data-path check (a cohort manifest); opening it is never reached."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "cohort.json").write_text("{}")
    return folder


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


# --- output locations -------------------------------------------------------------------------------


def test_output_file_checks(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(files.OutputPathError, match=r"--out .*a_file/model.pt: .*a_file is a file"):
        files.check_output_file(blocker / "model.pt", "--out")
    with pytest.raises(files.OutputPathError, match="is a folder; give a file path"):
        files.check_output_file(tmp_path, "--out")
    with pytest.raises(files.OutputPathError, match="exists and is not a folder"):
        files.check_output_dir(blocker, "--out")
    # Missing folders are fine (writing creates them) and nothing is left behind.
    assert files.check_output_file(tmp_path / "new" / "deeper" / "m.pt") == tmp_path / "new" / "deeper" / "m.pt"
    files.check_output_dir(tmp_path / "new_dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_output_in_a_place_that_cannot_be_written(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(files.OutputPathError, match=r"--json .*: cannot write in .* \(Read-only file system\)"):
        files.check_output_file(tmp_path / "m.json", "--json")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes in read-only folders")
def test_output_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(files.OutputPathError, match="Permission denied"):
            files.check_output_dir(folder / "out", "--out")
    finally:
        folder.chmod(0o755)


def _train_argv(data, out):
    return ["train", "--data", str(data), "--method", "ham", "--out", str(out), "--device", "cpu", "-q"]


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_train_checks_out_before_training(where, tmp_path, cache, capsys, no_work):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "m.pt" if where == "under_a_file" else tmp_path
    assert cli.main(_train_argv(cache, out)) == 2
    assert f"hamfast train: error: --out {out}" in _error(capsys)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "a", "--data", "{cache}", "--out", "{file}"], "--out {file} exists and is not a folder"),
        (["demo", "--out", "{file}/demo"], "--out {file}/demo: {file} is a file"),
        (["synth", "{file}/brats"], "out {file}/brats: {file} is a file"),
        (["prepare", "{cache}", "--cache", "{file}/cache"], "--cache {file}/cache: {file} is a file"),
    ],
)
def test_every_command_checks_its_output_first(argv, message, tmp_path, cache, capsys, no_work, monkeypatch):
    import hamfast.data

    monkeypatch.setattr(hamfast.data, "make_synthetic_brats", lambda *a, **k: pytest.fail("wrote a cohort"))
    monkeypatch.setattr(hamfast.data, "prepare_brats", lambda *a, **k: pytest.fail("read a cohort"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    names = dict(cache=cache, file=blocker)
    assert cli.main([a.format(**names) for a in argv] + ["-q"]) == 2
    assert message.format(**names) in _error(capsys)


def test_evaluate_checks_json_before_reading(tmp_path, cache, capsys, no_work):
    assert cli.main(["evaluate", str(tmp_path / "ckpt.pt"), "--data", str(cache), "--json", str(tmp_path), "--device", "cpu"]) == 2
    assert f"--json {tmp_path} is a folder" in _error(capsys)


def test_bench_checks_out_before_benchmarking(tmp_path, capsys, monkeypatch):
    import hamfast.bench.cli as bench_cli

    monkeypatch.setattr(bench_cli, "run", lambda *a, **k: pytest.fail("benchmarked"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--dry-run", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err


# --- devices and data paths ---------------------------------------------------------------------


@pytest.mark.parametrize("device, message", [
    ("mps", "--device mps: hamfast runs on cpu or cuda only"),
    ("meta", "--device meta: hamfast runs on cpu or cuda only"),
    ("gpu7", "--device 'gpu7' is not a torch device"),
])
def test_unsupported_devices(device, message, tmp_path, cache, capsys, no_work):
    assert cli.main(_train_argv(cache, tmp_path / "m.pt")[:-3] + ["--device", device, "-q"]) == 2
    assert message in _error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu(tmp_path, cache, capsys, no_work):
    assert cli.main(["experiment", "a", "--data", str(cache), "--out", str(tmp_path / "o"), "--device", "cuda:0", "-q"]) == 2
    assert "--device cuda:0: no CUDA GPU is visible" in _error(capsys)


def test_data_path_without_a_cohort(tmp_path, capsys, no_work):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["experiment", "a", "--data", str(empty), "--out", str(tmp_path / "o"), "--device", "cpu", "-q"]) == 2
    assert f"--data {empty} holds no cohort" in _error(capsys)
    assert not (tmp_path / "o").exists()  # refused before the output folder was made


# --- slices too small for the network, memory -------------------------------------------------------


def test_paper_preset_on_small_slices_fails_before_any_worker(tmp_path, cache, capsys, monkeypatch):
    import hamfast.experiments.study as study
    from hamfast.experiments import workers

    class Small:  # the default synthetic cohort at its native size: 71 px crops
        images = torch.zeros(40, 4, 71, 71).numpy()
        modalities = ("t1", "t1ce", "t2", "flair")

        def __len__(self):
            return 40

    monkeypatch.setattr(study, "load_cohort", lambda *a, **k: Small())
    monkeypatch.setattr(workers, "run_in_workers", lambda *a, **k: pytest.fail("workers started"))
    argv = ["experiment", "a", "--preset", "paper", "--data", str(cache), "--out", str(tmp_path / "o"), "--jobs", "4", "--device", "cpu", "-q"]
    assert cli.main(argv) == 2
    err = _error(capsys)
    assert f"--data {cache} (71 px slices" in err and "71x71 px slices are too small" in err
    assert "need at least 91x91" in err


def test_explicit_size_too_small_fails_before_reading(tmp_path, cache, capsys, no_work):
    assert cli.main(["experiment", "a", "--size", "64", "--data", str(cache), "--out", str(tmp_path / "o"), "--device", "cpu", "-q"]) == 2
    assert "--size: 64x64 px slices are too small for 4 blocks of 5x5 conv" in _error(capsys)
    assert cli.main(_train_argv(cache, tmp_path / "m.pt") + ["--size", "90"]) == 2
    assert "--size: 90x90 px" in _error(capsys)


def test_min_size_agrees_with_the_network():
    # The check's bound is the network's: the smallest accepted side runs, one less is refused.
    from hamfast.models import min_input_size

    config = TrainConfig("standard", widths=(2, 2, 2, 2), kernel_size=3)
    model = build_from_config(config).eval()
    side = min_input_size(4, 3)
    checks.check_network_fits(side, config.widths, 3)
    model(torch.zeros(1, 4, side, side), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="too small"):
        checks.check_network_fits(side - 1, config.widths, 3)


def test_memory_estimate_refuses_and_warns(caplog):
    need = checks.training_memory(96, (16, 32, 32, 64), 5, 16, ["standard"])
    # By hand: conv outputs 16*92^2 + 32*41^2 + 32*16^2 + 64*3^2 = 135,424 + 53,792 + 8,192 + 576
    # = 197,984 floats per sample (96 -> conv 92 -> pool 45 -> 41 -> 20 -> 16 -> 7 -> 3).
    assert need == 4 * 4 * 16 * 197_984
    with pytest.raises(ValueError, match=r"training needs about 48 MiB but 40 MiB of RAM is available; reduce it"):
        checks.check_memory(need, "training", available=40 * 2**20)
    checks.check_memory(need, "training", available=80 * 2**20)
    assert "may run out of memory" in caplog.text
    assert checks.cohort_memory(213, 240) == 4 * 213 * 4 * 240 * 240
    # The most demanding method counts: FeatImpute keeps an encoder per modality.
    assert checks.training_memory(96, (16, 32, 32, 64), 5, 16, ["standard", "featimpute"]) == 5 * need


def test_huge_size_is_refused_before_reading(tmp_path, capsys, no_work):
    root = tmp_path / "brats"
    for case in ("BraTS19_A_1", "BraTS19_A_2", "BraTS19_A_3"):
        (root / "MICCAI_BraTS_2019_Data_Training" / "HGG" / case).mkdir(parents=True)
    (root / "MICCAI_BraTS_2019_Data_Training" / "survival_data.csv").write_text("BraTS19ID,Age,Survival\n")
    argv = _train_argv(root, tmp_path / "m.pt") + ["--size", "100000", "--cache", str(tmp_path / "c")]
    assert cli.main(argv) == 2
    assert "reading 3 cases at --size 100000 and training with --batch-size 16 needs about" in _error(capsys)
    argv = ["experiment", "a", "--data", str(root), "--out", str(tmp_path / "o"), "--size", "100000", "--cache",
            str(tmp_path / "c"), "--device", "cpu", "-q"]
    assert cli.main(argv) == 2
    assert "reading 3 cases at --size 100000 needs about 447.0 GiB but" in _error(capsys)  # 4 * 3 * 4 * 1e10 bytes


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "good.pt"
    config = TrainConfig("ham", widths=(2, 2, 2, 2), device="cpu")
    save_checkpoint(path, build_from_config(config), config=config, history={"data": {}})
    return path


def _damage(kind, good, path):
    raw = good.read_bytes()
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "pickled_module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"format": "x"}))
    elif kind in ("other_method", "wrong_state", "bad_config", "no_format"):
        payload = torch.load(good, weights_only=True)
        if kind == "other_method":
            payload["config"]["method"] = "standard"  # HAM's weights under a Standard config
        elif kind == "wrong_state":
            name = next(iter(payload["state_dict"]))
            payload["state_dict"][name] = torch.zeros(3, 3, 3)
        elif kind == "bad_config":
            payload["config"]["widths"] = "wide"
        else:
            del payload["format"]
        torch.save(payload, path)
    elif kind == "folder":
        path.mkdir()


KINDS = ["random", "text", "empty", "truncated", "pickled_module", "plain_pickle", "other_method", "wrong_state",
         "bad_config", "no_format", "folder", "missing"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_checkpoints_fail_in_one_line_naming_the_file(kind, checkpoint, tmp_path):
    path = tmp_path / f"{kind}.pt"
    _damage(kind, checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"checkpoint {path}" in message and "\n" not in message and len(message) < 500
    assert load_checkpoint(checkpoint).config.method == "ham"  # the good one still loads


def test_cli_reports_a_damaged_checkpoint_in_one_line(checkpoint, tmp_path, cache, capsys):
    path = tmp_path / "bad.pt"
    _damage("pickled_module", checkpoint, path)
    assert cli.main(["evaluate", str(path), "--data", str(cache), "--device", "cpu", "-q"]) == 2
    assert f"hamfast evaluate: error: checkpoint {path} holds Python objects other than tensors" in _error(capsys)


def test_save_checkpoint_is_atomic(checkpoint, monkeypatch):
    before = checkpoint.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    config = TrainConfig("ham", widths=(2, 2, 2, 2))
    with pytest.raises(OSError):
        save_checkpoint(checkpoint, build_from_config(config), config=config)
    assert checkpoint.read_bytes() == before and sorted(p.name for p in checkpoint.parent.iterdir()) == ["good.pt"]


# --- how main() reports failures --------------------------------------------------------------------


def _failing(monkeypatch, exc):
    def handler(args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_synth", handler)


@pytest.mark.parametrize("exc, code, message", [
    (PermissionError(13, "Permission denied", "/data/x.nii.gz"), 2, "hamfast synth: error: /data/x.nii.gz: Permission denied"),
    (OSError(18, "Invalid cross-device link", "/a", None, "/b"), 2, "error: /a -> /b: Invalid cross-device link"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "error: 'utf-8' codec can't decode"),
    (ValueError("first line\nsecond line"), 2, "error: first line second line"),
    (MemoryError(), 2, "error: out of memory; use a smaller --size"),
    (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), 2, "out of memory"),
    (WorkerDied("worker process 7 ended with exit code -9"), 2,
     "error: worker process 7 ended with exit code -9"),
    (TypeError("unsupported operand"), 1, "internal error: TypeError: unsupported operand (a bug in hamfast: rerun with -v"),
])
def test_main_turns_failures_into_one_line(exc, code, message, monkeypatch, capsys):
    _failing(monkeypatch, exc)
    assert cli.main(["synth", "somewhere"]) == code
    assert message in _error(capsys)


def test_verbose_shows_a_bugs_traceback(monkeypatch):
    _failing(monkeypatch, TypeError("unsupported operand"))
    with pytest.raises(TypeError):
        cli.main(["-v", "synth", "somewhere"])


def test_synth_says_when_it_reuses(tmp_path, capsys):
    argv = ["synth", str(tmp_path / "b"), "--cases", "3", "--shape", "64", "64", "8", "-q"]
    assert cli.main(argv) == 0
    assert "wrote 3 synthetic cases" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "reusing the 3 synthetic cases" in capsys.readouterr().out
