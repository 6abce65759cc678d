"""The build's toolchain checks (hamfast/_toolchain.py, used by setup.py) and the built library itself.

An extension that links libstdc++ statically crashes torch on the first error it raises (issue 9):
these tests catch such a build before any op test could die with a signal.
"""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from hamfast import _extension, _toolchain

SYSTEM_CC, SYSTEM_CXX = _toolchain.SYSTEM_COMPILERS[0]
requires_system_gcc = pytest.mark.skipif(
    not (os.path.isfile(SYSTEM_CC) and os.path.isfile(SYSTEM_CXX)), reason=f"needs {SYSTEM_CXX}"
)


def built_library() -> Path:
    from hamfast import _C

    return Path(_C.__file__)


@pytest.mark.skipif(not _extension.available(), reason="hamfast._C is not built")
def test_built_library_links_libstdcxx_dynamically():
    so = built_library()
    needed = _toolchain.needed_libraries(str(so))
    problem = _toolchain.cxx_runtime_problem(needed)
    assert problem is None, (
        f"{so} {problem}: every error the op raises would crash the process. "
        f"Rebuild with CC={SYSTEM_CC} CXX={SYSTEM_CXX} (see setup.py)."
    )
    assert any(name.startswith(("libtorch", "libc10")) for name in needed), needed


@pytest.mark.skipif(not _extension.available() or shutil.which("readelf") is None, reason="needs _C and readelf")
def test_needed_libraries_reads_what_readelf_reads():
    so = built_library()
    out = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    expected = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert _toolchain.needed_libraries(str(so)) == expected


def test_needed_libraries_refuses_a_non_elf_file(tmp_path):
    path = tmp_path / "not.so"
    path.write_bytes(b"#!/bin/sh\n" + bytes(100))
    with pytest.raises(_toolchain.ToolchainError, match="not an ELF file"):
        _toolchain.needed_libraries(str(path))


@pytest.mark.parametrize(
    "needed, fragment",
    [
        (["libtorch.so", "libstdc++.so.6", "libc.so.6"], None),
        (["libgcc_s.so.1", "libc.so.6"], "statically"),
        (["libc++.so.1", "libc.so.6"], "libc++"),
        ([], "statically"),
    ],
)
def test_cxx_runtime_problem(needed, fragment):
    problem = _toolchain.cxx_runtime_problem(needed)
    assert (problem is None) if fragment is None else (fragment in problem)


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def static_wrapper(tmp_path):
    """A g++ wrapper like the GPU image's /opt/gcc/bin/g++: links libstdc++ statically."""
    return write_script(tmp_path / "g++-static", f'#!/bin/sh\nexec {SYSTEM_CXX} "$@" -static-libstdc++\n')


@pytest.fixture
def restore_compiler_env(monkeypatch):
    for var in ("CC", "CXX"):  # adopt_compiler sets them; monkeypatch puts the old values back
        monkeypatch.setenv(var, os.environ[var]) if var in os.environ else monkeypatch.delenv(var, raising=False)


@requires_system_gcc
def test_probe_accepts_the_system_compiler():
    needed = _toolchain.probe_compiler(_toolchain.configured_compiler({"CC": SYSTEM_CC, "CXX": SYSTEM_CXX}))
    assert _toolchain.cxx_runtime_problem(needed) is None, needed


@requires_system_gcc
def test_probe_detects_a_static_libstdcxx_wrapper(static_wrapper):
    compiler = _toolchain.configured_compiler({"CC": static_wrapper, "CXX": static_wrapper})
    try:
        needed = _toolchain.probe_compiler(compiler)
    except _toolchain.ToolchainError as exc:  # no libstdc++.a installed: the wrapper cannot link at all
        pytest.skip(f"this machine cannot link libstdc++ statically: {exc}")
    assert "statically" in _toolchain.cxx_runtime_problem(needed)


@requires_system_gcc
def test_unsafe_compiler_is_replaced_by_the_system_one(static_wrapper, restore_compiler_env):
    compiler = _toolchain.configured_compiler({"CC": static_wrapper, "CXX": static_wrapper})
    notes = []
    try:
        switched = _toolchain.ensure_shared_cxx_runtime(compiler, log=notes.append)
    except _toolchain.ToolchainError as exc:
        pytest.skip(f"this machine cannot link libstdc++ statically: {exc}")
    assert switched == (SYSTEM_CC, SYSTEM_CXX)
    assert os.environ["CXX"] == SYSTEM_CXX and os.environ["CC"] == SYSTEM_CC  # what torch's ninja build reads
    assert len(notes) == 1 and "statically" in notes[0] and f"CXX={SYSTEM_CXX}" in notes[0]
    assert _toolchain.cxx_runtime_problem(_toolchain.probe_compiler(compiler)) is None
    assert _toolchain.ensure_shared_cxx_runtime(compiler, log=notes.append) is None


@requires_system_gcc
@pytest.mark.parametrize("how", ["switch refused", "no working candidate"])
def test_unsafe_compiler_stops_the_build_with_one_line(static_wrapper, how, restore_compiler_env):
    compiler = _toolchain.configured_compiler({"CC": static_wrapper, "CXX": static_wrapper})
    kwargs = {"allow_switch": False} if how == "switch refused" else {"candidates": [(static_wrapper, static_wrapper)]}
    with pytest.raises(_toolchain.ToolchainError) as info:
        _toolchain.ensure_shared_cxx_runtime(compiler, log=pytest.fail, **kwargs)
    message = str(info.value)
    if "cannot build a shared library" in message:
        pytest.skip(f"this machine cannot link libstdc++ statically: {message}")
    assert "\n" not in message
    assert static_wrapper in message and "statically" in message and "Set CC=" in message


def test_a_compiler_that_cannot_build_the_probe_is_named_but_not_fatal(tmp_path):
    broken = write_script(tmp_path / "cxx-broken", "#!/bin/sh\necho 'no such compiler' >&2\nexit 1\n")
    compiler = _toolchain.configured_compiler({"CC": broken, "CXX": broken})
    with pytest.raises(_toolchain.ToolchainError, match="cxx-broken cannot build a shared library"):
        _toolchain.probe_compiler(compiler)
    notes = []  # the build goes on (and fails on its own, or its library is checked after the link)
    assert _toolchain.ensure_shared_cxx_runtime(compiler, log=notes.append) is None
    assert len(notes) == 1 and "could not probe" in notes[0] and "cxx-broken" in notes[0]


# ---- the CUDA toolkit root ----------------------------------------------------------------------
def fake_toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include" / "crt").mkdir(parents=True)
    (root / "include" / "crt" / "host_defines.h").write_text("")
    write_script(root / "bin" / "nvcc", "#!/bin/sh\nexit 0\n")
    return root


def test_cuda_home_follows_a_symlinked_nvcc(tmp_path):
    """As on the GPU machine: /usr/local/bin/nvcc -> /usr/local/cuda/bin/nvcc; torch guesses /usr/local."""
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    (tmp_path / "local" / "bin").mkdir(parents=True)
    link = tmp_path / "local" / "bin" / "nvcc"
    link.symlink_to(toolkit / "bin" / "nvcc")
    found = _toolchain.find_cuda_home(env={}, which=lambda name: str(link), fallback=None)
    assert found == str(toolkit)


def test_cuda_home_follows_a_wrapper_script_via_nvcc_itself(tmp_path):
    """As on this project's CPU machine: /usr/local/bin/nvcc is a script exec'ing the real one."""
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = write_script(
        tmp_path / "nvcc", f"#!/bin/sh\necho '#$ _HERE_={toolkit}/bin' >&2\necho '#$ _THERE_={toolkit}/bin' >&2\n"
    )
    assert _toolchain.find_cuda_home(env={}, which=lambda name: wrapper, fallback=None) == str(toolkit)


def test_cuda_home_unfindable_says_set_cuda_home(tmp_path):
    lonely = write_script(tmp_path / "nvcc", "#!/bin/sh\nexit 1\n")
    with pytest.raises(_toolchain.ToolchainError, match="set CUDA_HOME"):
        _toolchain.find_cuda_home(env={}, which=lambda name: lonely, fallback=None)


def test_wrong_cuda_home_is_refused_early(tmp_path):
    with pytest.raises(_toolchain.ToolchainError, match=r"CUDA_HOME=.* holds no CUDA toolkit.*set CUDA_HOME"):
        _toolchain.find_cuda_home(env={"CUDA_HOME": str(tmp_path)}, which=lambda name: None)
    toolkit = fake_toolkit(tmp_path / "cuda")
    assert _toolchain.find_cuda_home(env={"CUDA_HOME": str(toolkit)}, which=lambda name: None) == str(toolkit)


def test_no_nvcc_means_no_cuda():
    assert _toolchain.find_cuda_home(env={}, which=lambda name: None) is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_home_found_on_this_machine():
    root = _toolchain.find_cuda_home(env={})
    assert os.path.isfile(os.path.join(root, "include", "crt", "host_defines.h"))
