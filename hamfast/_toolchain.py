"""Build-toolchain checks shared by ``setup.py`` and the tests (standard library only, no torch).

Why: torch's libraries use the shared ``libstdc++.so.6``. An extension linked against a static copy
of libstdc++ (a compiler wrapper adding ``-static-libstdc++``, as some clusters and GPU images set
in ``CXX``) still builds and loads, but every C++ exception thrown inside it and caught in torch
(each ``TORCH_CHECK`` of a bad argument) then crashes the process or comes back garbled. So the
build links a tiny C++ library with exactly the compiler and linker it will use, reads the
dynamic dependencies (``DT_NEEDED``) of the result, and switches to the system compiler or stops
with a one-line message before compiling anything; the tests read the built ``hamfast/_C*.so``
the same way.

It also finds the CUDA toolkit root when ``CUDA_HOME`` is unset, from the real location of
``nvcc`` (torch's own guess takes the folder above ``nvcc``'s directory, which is wrong when
``nvcc`` is a link or wrapper in ``/usr/local/bin``).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from typing import Callable, Mapping, Optional, Sequence

# Compilers tried, in order, when the configured one links libstdc++ statically: (CC, CXX).
SYSTEM_COMPILERS: tuple[tuple[str, str], ...] = (("/usr/bin/gcc", "/usr/bin/g++"),)

# A C++ exception thrown and caught inside the library, as a TORCH_CHECK's is: it makes the
# library need the C++ runtime, so the link shows whether that runtime is shared.
PROBE_SOURCE = r"""
#include <stdexcept>
#include <string>

extern "C" int hamfast_toolchain_probe(int n) {
  try {
    if (n > 0) throw std::runtime_error(std::string(static_cast<size_t>(n), 'x'));
  } catch (const std::exception& e) {
    return static_cast<int>(std::string(e.what()).size());
  }
  return 0;
}
"""


class ToolchainError(RuntimeError):
    """The toolchain cannot build an extension that is safe to load into torch."""


# ---- reading an ELF shared object's dynamic dependencies -------------------------------------
_SHT_DYNAMIC = 6
_DT_NULL, _DT_NEEDED = 0, 1


def needed_libraries(path: str) -> list[str]:
    """The ``DT_NEEDED`` entries of an ELF file (what ``readelf -d`` lists as "Shared library").

    Args:
        path: an ELF shared object or executable (32- or 64-bit, either byte order).

    Returns:
        The sonames in the order the file lists them, e.g. ``["libc10.so", "libstdc++.so.6", ...]``.

    Raises:
        ToolchainError: the file is not ELF or its sections are malformed.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise ToolchainError(f"{path} is not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        if is64:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            section_fmt, dyn_fmt = end + "IIQQQQIIQQ", end + "qQ"
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            section_fmt, dyn_fmt = end + "IIIIIIIIII", end + "iI"
        sections = [struct.unpack_from(section_fmt, data, shoff + i * shentsize) for i in range(shnum)]
        needed = []
        for sh_type, sh_offset, sh_size, sh_link in ((s[1], s[4], s[5], s[6]) for s in sections):
            if sh_type != _SHT_DYNAMIC:
                continue
            strtab_offset = sections[sh_link][4]
            step = struct.calcsize(dyn_fmt)
            for pos in range(sh_offset, sh_offset + sh_size, step):
                tag, value = struct.unpack_from(dyn_fmt, data, pos)
                if tag == _DT_NULL:
                    break
                if tag == _DT_NEEDED:
                    start = strtab_offset + value
                    needed.append(data[start : data.index(b"\0", start)].decode())
        return needed
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ToolchainError(f"{path}: malformed ELF sections ({exc})") from exc


def cxx_runtime_problem(needed: Sequence[str]) -> Optional[str]:
    """Why a library with these ``DT_NEEDED`` entries is unsafe to load into torch, or None if it is safe."""
    if any(name.startswith("libstdc++.so") for name in needed):
        return None
    if any(name.startswith("libc++.so") for name in needed):
        return "links LLVM's libc++ where torch uses libstdc++"
    return f"links libstdc++ statically (its dynamic dependencies are only {', '.join(needed) or 'none'})"


# ---- probing a compiler -----------------------------------------------------------------------
def _distutils():
    try:
        from setuptools._distutils import ccompiler, sysconfig
    except ImportError:  # pragma: no cover - very old setuptools
        from distutils import ccompiler, sysconfig  # type: ignore[no-redef]
    return ccompiler, sysconfig


def configured_compiler(env: Optional[Mapping[str, str]] = None):
    """A distutils compiler set up the way ``build_ext`` sets it up, with ``env`` (e.g. CC, CXX) applied."""
    ccompiler, sysconfig = _distutils()
    env = dict(env or {})
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        compiler = ccompiler.new_compiler()
        sysconfig.customize_compiler(compiler)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return compiler


def compiler_name(compiler) -> str:
    """The C++ compiler command of a distutils compiler, for messages."""
    cxx = getattr(compiler, "compiler_cxx", None) or getattr(compiler, "compiler_so", None) or ["?"]
    words = list(cxx) if isinstance(cxx, (list, tuple)) else str(cxx).split()
    command = []
    for word in words:  # the command without its flags ("ccache g++", not "g++ -O3 -Wall")
        if word.startswith("-"):
            break
        command.append(word)
    return " ".join(command) or words[0]


def probe_compiler(compiler, workdir: Optional[str] = None) -> list[str]:
    """Compile and link :data:`PROBE_SOURCE` as a C++ shared object with ``compiler``; return its NEEDED entries.

    The link goes through ``compiler.link_shared_object(..., target_lang="c++")``, the call
    ``build_ext`` makes for the real extension, so wrapper scripts and LDFLAGS count the same.

    Raises:
        ToolchainError: the probe does not compile or link (the message names the compiler).
    """
    with tempfile.TemporaryDirectory(prefix="hamfast-probe-", dir=workdir) as tmp:
        source = os.path.join(tmp, "probe.cpp")
        with open(source, "w") as f:
            f.write(PROBE_SOURCE)
        output = os.path.join(tmp, "libprobe.so")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fPIC"])
            compiler.link_shared_object(objects, output, target_lang="c++")
        except Exception as exc:  # CompileError / LinkError / OSError, all alike here
            raise ToolchainError(f"the C++ compiler {compiler_name(compiler)} cannot build a shared library: {exc}")
        return needed_libraries(output)


def adopt_compiler(compiler, cc: str, cxx: str) -> None:
    """Make ``compiler`` (build_ext's, already configured) and torch's ninja build use ``cc``/``cxx``.

    Sets ``CC``/``CXX`` in the environment (torch reads ``CXX`` for compiling and ``CC`` as nvcc's
    host compiler) and copies the executables of a freshly configured compiler onto ``compiler``.
    """
    os.environ["CC"], os.environ["CXX"] = cc, cxx
    fresh = configured_compiler()
    for key in getattr(compiler, "executables", {}):
        if hasattr(fresh, key):
            compiler.set_executable(key, getattr(fresh, key))


def ensure_shared_cxx_runtime(
    compiler,
    *,
    candidates: Sequence[tuple[str, str]] = SYSTEM_COMPILERS,
    allow_switch: bool = True,
    log: Callable[[str], None] = print,
) -> Optional[tuple[str, str]]:
    """Check that ``compiler`` links the C++ runtime the way torch does; switch to a system compiler if not.

    Args:
        compiler: build_ext's configured distutils compiler.
        candidates: (CC, CXX) pairs tried in order when ``compiler`` is unsafe; a pair is used only
            if its files exist and its own probe passes.
        allow_switch: False to stop with the message instead of switching.
        log: where the note about a switch goes.

    Returns:
        None if ``compiler`` is fine (or cannot be probed, which is logged), else the (CC, CXX) now
        in use.

    Raises:
        ToolchainError: one line saying what is wrong and what to set.
    """
    try:
        problem = cxx_runtime_problem(probe_compiler(compiler))
    except ToolchainError as exc:
        # Not a verdict on the real build (which may compile differently): setup.py checks the
        # library it builds in any case.
        log(f"hamfast: could not probe the C++ toolchain ({exc}); the built library will be checked instead")
        return None
    if problem is None:
        return None
    current = compiler_name(compiler)
    if allow_switch:
        for cc, cxx in candidates:
            if not (os.path.isfile(cc) and os.path.isfile(cxx)):
                continue
            try:
                if cxx_runtime_problem(probe_compiler(configured_compiler({"CC": cc, "CXX": cxx}))) is not None:
                    continue
            except ToolchainError:
                continue
            adopt_compiler(compiler, cc, cxx)
            log(
                f"hamfast: the C++ compiler {current} {problem}, so errors raised by the op would crash "
                f"torch; building with CC={cc} CXX={cxx} instead (set HAMFAST_KEEP_COMPILER=1 to stop instead)"
            )
            return cc, cxx
    hint = " ".join(f"CC={cc} CXX={cxx}" for cc, cxx in candidates[:1]) or "CC and CXX"
    raise ToolchainError(
        f"hamfast: the C++ compiler {current} {problem}; an extension built with it crashes torch on the first "
        f"error it raises. Set {hint} (a compiler that links libstdc++ dynamically) and rebuild."
    )


# ---- the CUDA toolkit root ----------------------------------------------------------------------
def _is_cuda_root(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
        os.path.join(root, "include", "crt", "host_defines.h")
    )


def _nvcc_bin_dir(nvcc: str) -> Optional[str]:
    """The folder nvcc really runs from, as nvcc itself reports it (``_HERE_``): right through wrapper scripts."""
    try:
        result = subprocess.run(
            [nvcc, "--dryrun", "-v", "-E", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("#$ _HERE_="):
            return line.split("=", 1)[1].strip()
    return None


def find_cuda_home(
    env: Mapping[str, str] = os.environ,
    which: Callable[[str], Optional[str]] = shutil.which,
    fallback: Optional[str] = "/usr/local/cuda",
) -> Optional[str]:
    """The CUDA toolkit root (the folder holding ``bin/nvcc`` and ``include/crt/host_defines.h``).

    ``CUDA_HOME`` (or ``CUDA_PATH``) when set; otherwise found from ``nvcc`` on the PATH: its real
    path (links resolved), then the folder nvcc reports running from, then ``fallback``.

    Returns:
        The root, or None when there is no ``nvcc`` on the PATH and no ``CUDA_HOME``.

    Raises:
        ToolchainError: ``CUDA_HOME`` is set but wrong, or nvcc is found but no toolkit around it
            (the message says to set CUDA_HOME).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = env.get(var)
        if root:
            if not _is_cuda_root(root):
                raise ToolchainError(
                    f"hamfast: {var}={root} holds no CUDA toolkit (bin/nvcc and include/crt/host_defines.h); "
                    "set CUDA_HOME to the toolkit's root, e.g. /usr/local/cuda"
                )
            return root
    nvcc = which("nvcc")
    if nvcc is None:
        return None
    tried = []
    real_bin = os.path.dirname(os.path.realpath(nvcc))
    for bin_dir in (real_bin, _nvcc_bin_dir(nvcc)):
        if bin_dir:
            root = os.path.dirname(os.path.abspath(bin_dir))
            tried.append(root)
            if _is_cuda_root(root):
                return root
    if fallback and _is_cuda_root(fallback):
        return fallback
    raise ToolchainError(
        f"hamfast: found nvcc at {nvcc} but no CUDA toolkit around it (looked in {', '.join(tried)}); "
        "set CUDA_HOME to the toolkit's root, or HAMFAST_BUILD_CUDA=0 for the CPU kernels only"
    )
