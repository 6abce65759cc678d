"""Build of hamfast and its op library hamfast._C.

The CPU kernels are always built. The CUDA kernels are built when torch is a CUDA build and nvcc
is found, whether or not a GPU is present; HAMFAST_BUILD_CUDA=1 forces them (failing if that is
impossible), HAMFAST_BUILD_CUDA=0 leaves them out. Without a visible GPU and without
TORCH_CUDA_ARCH_LIST, the CUDA code is built for sm_75, sm_80, sm_86, sm_89 and sm_90 (+PTX).

Without CUDA_HOME the CUDA toolkit is found from the real location of `nvcc` (a link or wrapper in
/usr/local/bin is followed); a toolkit that cannot be found stops the build saying to set CUDA_HOME.

Before compiling, a tiny C++ library is linked with the configured compiler: if it links libstdc++
statically (a wrapper adding -static-libstdc++ in CXX), every error the op raises would crash torch,
so the build switches to the system compiler (/usr/bin/gcc, /usr/bin/g++) with a note, or stops
saying what to set (HAMFAST_KEEP_COMPILER=1 stops instead of switching). The built library is
checked the same way.

Build without isolation so the extension matches the torch you run:
    pip install --no-build-isolation .
The wheel requires the torch release it was built against (``torch==X.Y.*``, see
torch_requirement): hamfast._C links libtorch's C++ API, which changes between releases.
"""
import glob
import importlib.util
import os

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as exc:  # pragma: no cover - a build-time message
    raise SystemExit(
        "hamfast needs torch installed before it is built: `pip install torch`, then "
        "`pip install --no-build-isolation .`"
    ) from exc

DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"
HERE = os.path.dirname(os.path.abspath(__file__))


def load_toolchain():
    """hamfast/_toolchain.py, loaded by path: importing the hamfast package here would load the old build."""
    spec = importlib.util.spec_from_file_location("hamfast_toolchain", os.path.join(HERE, "hamfast", "_toolchain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toolchain = load_toolchain()


def resolve_cuda_home():
    """The CUDA toolkit root (also handed to torch's build helpers), or None without nvcc and CUDA_HOME."""
    try:
        root = toolchain.find_cuda_home()
    except toolchain.ToolchainError as exc:
        raise SystemExit(str(exc)) from None
    if root is not None and root != cpp_extension.CUDA_HOME:
        if not os.environ.get("CUDA_HOME"):
            print(f"hamfast: CUDA_HOME is unset; using the CUDA toolkit at {root} (from the real path of nvcc)")
        os.environ["CUDA_HOME"] = root
        cpp_extension.CUDA_HOME = root
    return root


def want_cuda() -> bool:
    mode = os.environ.get("HAMFAST_BUILD_CUDA", "auto").lower()
    if mode in ("0", "false", "no"):
        return False
    forced = mode in ("1", "true", "yes")
    if torch.version.cuda is None:
        if forced:
            raise SystemExit(f"HAMFAST_BUILD_CUDA=1 but torch {torch.__version__} is not a CUDA build")
        return False
    if resolve_cuda_home() is None:
        if forced:
            raise SystemExit("HAMFAST_BUILD_CUDA=1 but there is no nvcc on the PATH: set CUDA_HOME")
        return False
    return True


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, refusing toolchains whose extensions would crash torch on an error."""

    def build_extensions(self):
        keep = os.environ.get("HAMFAST_KEEP_COMPILER", "0").lower() not in ("", "0", "false", "no")
        try:
            toolchain.ensure_shared_cxx_runtime(self.compiler, allow_switch=not keep)
        except toolchain.ToolchainError as exc:
            raise SystemExit(str(exc)) from None
        super().build_extensions()
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            problem = toolchain.cxx_runtime_problem(toolchain.needed_libraries(path)) if os.path.exists(path) else None
            if problem:
                os.remove(path)
                raise SystemExit(
                    f"hamfast: the built {path} {problem} and was removed (it would crash torch on the first error "
                    "it raises); set CC=/usr/bin/gcc CXX=/usr/bin/g++ and rebuild"
                )


def extension():
    here = HERE
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx_flags = ["-O3"]
    if not want_cuda():
        print("hamfast: building the CPU kernels only")
        return cpp_extension.CppExtension(
            "hamfast._C", sources, extra_compile_args={"cxx": cxx_flags}, include_dirs=[os.path.join(here, "csrc")]
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    print(f"hamfast: building the CPU and CUDA kernels (archs: {os.environ.get('TORCH_CUDA_ARCH_LIST', 'visible GPU')})")
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")) + glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    return cpp_extension.CUDAExtension(
        "hamfast._C",
        sources,
        define_macros=[("HAMFAST_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
        include_dirs=[os.path.join(here, "csrc")],
    )


def torch_requirement() -> str:
    """The torch release this build is bound to (its C++ ABI changes between minor releases)."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return f"torch=={major}.{minor}.*"


# Name, version (hamfast.__version__), license and the other metadata: pyproject.toml's [project].
setup(
    install_requires=[torch_requirement(), "numpy", "scipy", "monai>=1.3", "nibabel", "tqdm"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
