"""The package as published: an sdist with every source the build needs, a wheel built from that
sdist (against this environment's torch, without build isolation) that installs and imports with
the compiled extension, ships LICENSE and py.typed, and requires the torch release it was built with."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

import hamfast

ROOT = Path(__file__).resolve().parents[1]
# What a copy of the checkout leaves out: builds, caches and the committed study results.
SKIP = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".pytest_cache",
                              ".benchmarks", ".whl", "results", "out")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist, built by setuptools' PEP 517 backend from a copy of the checkout."""
    base = tmp_path_factory.mktemp("sdist")
    shutil.copytree(ROOT, base / "src", ignore=SKIP)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(base / "dist")], cwd=base / "src", capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "dist" / done.stdout.strip().splitlines()[-1]


def test_one_version_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project
    assert "version=" not in (ROOT / "setup.py").read_text().replace(" ", "")
    assert project["license"] == "Apache-2.0" and (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_sdist_holds_every_source_the_build_needs(sdist):
    assert sdist.name == f"hamfast-{hamfast.__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cpp", ".cu", ".cuh")}
    assert sources and sources <= names, sorted(sources - names)
    assert {"LICENSE", "README.md", "setup.py", "pyproject.toml", "hamfast/py.typed", "hamfast/_toolchain.py"} <= names
    assert not [n for n in names if n.endswith(".so")]


@pytest.mark.slow
def test_wheel_from_the_sdist_installs_and_imports_with_the_extension(sdist, tmp_path):
    env = dict(os.environ, MAX_JOBS=os.environ.get("MAX_JOBS", "2"), HAMFAST_BUILD_CUDA="0")
    env.pop("PYTHONPATH", None)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                            str(tmp_path / "wheel"), str(sdist)], capture_output=True, text=True, env=env, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("hamfast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"hamfast-{hamfast.__version__}.dist-info/METADATA").decode()
    assert "hamfast/py.typed" in names
    assert f"hamfast-{hamfast.__version__}.dist-info/licenses/LICENSE" in names
    assert [n for n in names if re.fullmatch(r"hamfast/_C\..*\.so", n)]
    assert "License-Expression: Apache-2.0" in metadata
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    assert f"Requires-Dist: torch=={major}.{minor}.*" in metadata.splitlines()  # the ABI it was compiled against

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, env=env, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    check = ("import hamfast, hamfast._extension as e; d = e.describe(); "
             "print(hamfast.__file__, hamfast.__version__, d['extension'], d['load_error'])")
    ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(env, PYTHONPATH=str(site)), timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    where, version, extension, error = ran.stdout.split(maxsplit=3)
    assert Path(where).is_relative_to(site) and version == hamfast.__version__
    assert extension == "True", error
