"""Build of hamfast and its op library hamfast._C.

The CPU kernels are always built. The CUDA kernels are built when torch is a CUDA build and nvcc
is found, whether or not a GPU is present; HAMFAST_BUILD_CUDA=1 forces them (failing if that is
impossible), HAMFAST_BUILD_CUDA=0 leaves them out. Without a visible GPU and without
TORCH_CUDA_ARCH_LIST, the CUDA code is built for sm_75, sm_80, sm_86, sm_89 and sm_90 (+PTX).

Build without isolation so the extension matches the torch you run:
    pip install --no-build-isolation .
"""
import glob
import os

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as exc:  # pragma: no cover - a build-time message
    raise SystemExit(
        "hamfast needs torch installed before it is built: `pip install torch`, then "
        "`pip install --no-build-isolation .`"
    ) from exc

DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def want_cuda() -> bool:
    mode = os.environ.get("HAMFAST_BUILD_CUDA", "auto").lower()
    possible = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if mode in ("1", "true", "yes"):
        if not possible:
            raise SystemExit(
                "HAMFAST_BUILD_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}"
            )
        return True
    if mode in ("0", "false", "no"):
        return False
    return possible


def extension():
    here = os.path.dirname(os.path.abspath(__file__))
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


setup(
    name="hamfast",
    version="0.1.0",
    description="HAM (Hypernetwork for Absent Modalities) with a fused grouped-convolution op for mixed-modality batches",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hamfast", "hamfast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "scipy", "monai>=1.3", "nibabel", "tqdm"],
    extras_require={
        "plots": ["matplotlib"],
        "test": ["pytest", "pytest-benchmark", "matplotlib", "expecttest"],
    },
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    entry_points={"console_scripts": ["hamfast = hamfast.cli:main"]},
)
