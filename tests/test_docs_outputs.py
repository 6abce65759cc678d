"""The docs' examples never write into committed files: no `--out results/...` (the committed study
results), and what they write in the checkout (data/, runs/, checkpoints) is git-ignored."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands():
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.splitlines():
                if line.strip().startswith("hamfast "):
                    yield doc.name, line.split("#")[0]


def test_no_example_writes_into_the_committed_results():
    bad = [(doc, line) for doc, line in _commands() if re.search(r"--out\s+\.?/?results/", line)]
    assert not bad, bad


def test_what_the_examples_write_in_the_checkout_is_ignored(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = set()
    for _, line in _commands():
        words = line.split()
        for option in ("--out", "--cache"):
            if option in words and words.index(option) + 1 < len(words):
                written.add(words[words.index(option) + 1])
        if words[1] == "synth" and len(words) > 2:
            written.add(words[2])
    relative = sorted(p for p in written if not p.startswith(("/", "~", "$")) and not p.startswith("-"))
    assert "data/synthetic" in relative and "runs/experiment_a" in relative  # the walk finds the examples
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *relative], cwd=ROOT, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == relative, f"not ignored: {sorted(set(relative) - set(ignored.stdout.split()))}"
