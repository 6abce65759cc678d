"""`hamfast experiment --from OUT/experiment.json` reproduces a study with its recorded settings (another
--out) or extends it (the same --out, more --runs), and refuses a file that is not a record in one line;
a refused study leaves no folder behind."""
import json

import pytest

from hamfast import cli

data = pytest.importorskip("hamfast.data")

TINY = ["--widths", "2", "2", "2", "2", "--test-size", "10", "--runs", "1", "--completeness", "0.5", "--methods",
        "dropout", "ham", "--stop", "fixed", "2", "--batch-size", "4", "--seed", "7"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    data.make_synthetic_brats(root / "brats", n_cases=30, shape=(64, 64, 8), seed=3)
    data.prepare_brats(root / "brats", cache_dir=root / "cache", size=96)
    return root / "cache"


def _settings(out):
    return json.loads((out / "experiment.json").read_text())["settings"]


def test_from_a_record_reproduces_then_extends_the_study(cohort, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    common = ["--data", str(cohort), "--device", "cpu", "-q"]
    assert cli.main(["experiment", "a", "--out", str(first)] + TINY + common) == 0
    record = first / "experiment.json"

    assert cli.main(["experiment", "--from", str(record), "--out", str(again)] + common) == 0
    assert _settings(again) == _settings(first)
    assert (again / "runs.csv").read_text() == (first / "runs.csv").read_text()
    assert (again / "predictions.csv").read_text() == (first / "predictions.csv").read_text()

    stamps = {p.name: p.stat().st_mtime_ns for p in (first / "tasks").glob("*.json")}
    assert cli.main(["experiment", "a", "--from", str(record), "--out", str(first), "--runs", "2"] + common) == 0
    assert _settings(first) == dict(_settings(again), runs=2)
    tasks = {p.name: p.stat().st_mtime_ns for p in (first / "tasks").glob("*.json")}
    assert len(tasks) == 4 and all(tasks[name] == stamp for name, stamp in stamps.items())  # run 0 kept, run 1 added


def test_a_bad_record_is_refused_in_one_line(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cohort.json").write_text("{}")
    base = ["experiment", "--data", str(cache), "--out", str(tmp_path / "o"), "--device", "cpu", "-q"]
    bad = tmp_path / "bad.json"
    for text, words in (("not json", "not a study record"), ('{"settings": {"colour": 1}}', "unknown experiment settings")):
        bad.write_text(text)
        assert cli.main(base + ["--from", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--from {bad}" in err and words in err, err
    assert cli.main(base + ["--from", str(tmp_path / "missing.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert cli.main(base) == 2
    assert "say which experiment" in capsys.readouterr().err
    record = tmp_path / "experiment.json"
    record.write_text(json.dumps({"settings": cli.make_settings("b", "quick").to_dict()}))
    assert cli.main(base + ["a", "--from", str(record)]) == 2
    assert "records experiment b, not a" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_refused_study_leaves_no_folder_behind(cohort, tmp_path, capsys):
    out = tmp_path / "refused"
    # 30 cases cannot hold a test set of 40: refused after the folder was locked, before any work.
    assert cli.main(["experiment", "a", "--data", str(cohort), "--out", str(out), "--device", "cpu", "-q"]
                    + TINY[:5] + ["--test-size", "40"]) == 2
    assert "cannot hold a test set of 40" in capsys.readouterr().err
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert cli.main(["experiment", "a", "--data", str(cohort), "--out", str(kept), "--device", "cpu", "-q"]
                    + TINY[:5] + ["--test-size", "40"]) == 2
    assert sorted(p.name for p in kept.iterdir()) == [".hamfast.lock", "notes.txt"]  # a folder it did not make stays
