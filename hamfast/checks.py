"""Checks run before any long work starts: the device, the data path, the slice size against the
network's depth and a memory estimate. Each failure is a :class:`ValueError` whose message is one
line naming the option (``--device``, ``--data``, ``--size``), so a command fails in its first
second rather than after the cohort is read or the training has run.

torch and the data package are imported inside the functions that need them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

__all__ = [
    "resolve_device",
    "check_data_path",
    "count_cases",
    "check_network_fits",
    "check_checkpoint_size",
    "MAX_SLICE_SIZE",
    "training_memory",
    "cohort_memory",
    "available_memory",
    "check_memory",
]

log = logging.getLogger(__name__)

# training_memory counts float32 copies of every block's conv output (per sample, times the
# batch): the conv, BatchNorm and ReLU outputs kept for backward, the gradients flowing back, and
# per method its extra branches. Measured on CPU (torch 2.13, batch 16, widths 16/32/32/64, no
# augmentation; peak RSS growth of a 2-step training over the conv output of one step): Standard
# 2.9 copies at 256 px and 3.2 at 512 px; HAM 6.4 at 192, 5.8 at 256, 4.7 at 320 px; FeatImpute
# (one encoder per modality) 17.3 at 256 px. Dropout is the Standard network. Rounded up:
_ACTIVATION_COPIES = {"standard": 4, "dropout": 4, "ham": 8, "featimpute": 20}
# Refuse above this share of the memory available now; warn above _WARN_SHARE.
_REFUSE_SHARE = 0.9
_WARN_SHARE = 0.5


def resolve_device(device: str, option: str = "--device") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; others are checked and returned.

    hamfast's grouped convolution has CPU and CUDA kernels only, so every other device type
    (``mps``, ``meta``, ``xpu``, ...) is refused here, in one line, instead of failing inside the
    first training step.

    Raises:
        ValueError: not a torch device, not cpu/cuda, or a GPU that is not there.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{option} {device!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cpu":
        return device
    if parsed.type != "cuda":
        raise ValueError(f"{option} {device}: hamfast runs on cpu or cuda only (its grouped convolution has "
                         f"no {parsed.type} kernel)")
    if not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: no CUDA GPU is visible to torch here (use --device cpu)")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"{option} {device}: only {count} GPU(s) are visible (cuda:0 to cuda:{count - 1})")
    return device


def check_data_path(path, option: str = "--data") -> Path:
    """Check that ``path`` looks like something ``hamfast.data.open_cohort`` reads, without reading it.

    Accepted: a BraTS root (``MICCAI_BraTS_2019_Data_Training/`` or a survival table in it), an
    nnU-Net raw dataset (``dataset.json`` and ``imagesTr/``), a cache
    folder (holding ``*.json`` manifests; which one matches is decided when it is opened), or a
    cohort file (``.npz``/``.json``, the suffix may be left out).

    Raises:
        ValueError: one line naming the option and the path.
    """
    from hamfast.data.brats import SURVIVAL_TABLES, TRAINING_DIR
    from hamfast.data.cohort import cohort_paths
    from hamfast.data.nnunet import DATASET_JSON, IMAGES_DIR
    from hamfast.data.sources import dataset_layout

    path = Path(path).expanduser()
    try:
        if path.is_dir():
            if dataset_layout(path) is not None:
                return path
            if (path / DATASET_JSON).is_file():
                raise ValueError(f"{option} {path} has a {DATASET_JSON} but no {IMAGES_DIR}/ folder: not an nnU-Net raw "
                                 "dataset hamfast reads")
            if any(path.glob("*.json")):
                return path
            raise ValueError(f"{option} {path} holds no cohort: neither a BraTS copy ({TRAINING_DIR}/ or "
                             f"{' / '.join(SURVIVAL_TABLES)}), nor an nnU-Net raw dataset ({DATASET_JSON} and "
                             f"{IMAGES_DIR}/), nor a cache folder (run `hamfast prepare`)")
        if path.exists() and not path.is_file():
            raise ValueError(f"{option} {path} is neither a folder nor a file")
        if not cohort_paths(path)[0].is_file():
            raise ValueError(f"{option} {path}: no such dataset folder (BraTS or nnU-Net), cache folder or cohort file")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
    return path


def count_cases(root) -> int:
    """The number of cases of a dataset folder without reading them: a BraTS copy's case folders
    (HGG/ and LGG/ subfolders), an nnU-Net dataset's distinct ``<case>_XXXX`` names in imagesTr;
    0 for anything else."""
    from hamfast.data.brats import TRAINING_DIR
    from hamfast.data.nnunet import IMAGES_DIR, channel_file_case
    from hamfast.data.sources import dataset_layout

    root = Path(root)
    layout = dataset_layout(root)
    if layout == "nnunet":
        return len({case for case in map(channel_file_case, (root / IMAGES_DIR).iterdir()) if case is not None})
    total = 0
    if layout != "brats":
        return total
    for base in (root / TRAINING_DIR, root):
        for grade in ("HGG", "LGG"):
            folder = base / grade
            if folder.is_dir():
                total += sum(1 for p in folder.iterdir() if p.is_dir())
        if total:
            return total
    return total
    return total


def check_network_fits(side: int, widths: Sequence[int], kernel_size: int, option: str = "--size") -> None:
    """Raise unless a ``side`` x ``side`` slice is large enough for CBRTiny with these widths and kernel.

    Args:
        side: the slice side in pixels (the smaller one of a non-square slice).
        widths: the block widths (their count is the depth).
        kernel_size: the conv kernel side.
        option: what gave ``side`` (``"--size"``, or ``"--data X (native size)"``), for the message.
    """
    from hamfast.models import min_input_size

    smallest = min_input_size(len(widths), kernel_size)
    if side < smallest:
        raise ValueError(
            f"{option}: {side}x{side} px slices are too small for {len(widths)} blocks of {kernel_size}x{kernel_size} "
            f"conv + 3x3/2 max-pool, which need at least {smallest}x{smallest}; give --size {smallest} or more, "
            "or fewer/smaller blocks (--widths, --kernel-size)"
        )


# The largest slice side a checkpoint's reader settings may ask for: far above any MRI slice (BraTS:
# 240 px), far below what would take minutes to allocate.
MAX_SLICE_SIZE = 4096


def check_checkpoint_size(size, widths: Sequence[int], kernel_size: int, method: str, batch_size: int,
                          what: str, device: str = "cpu") -> None:
    """Range and memory check of a checkpoint's slice side before any case is read at it.

    Args:
        size: the reader's slice side from the checkpoint (int px, or None: native size).
        widths, kernel_size, method: the checkpoint's network (sets the smallest side and the memory).
        batch_size: samples per forward pass of the prediction.
        what: names the checkpoint in the message.
        device: where the prediction runs.

    Raises:
        ValueError: one line: the size is not an int in [the network's smallest input,
            MAX_SLICE_SIZE], or one case at that size and a forward pass need more memory than is free.
    """
    from hamfast.models import min_input_size

    if size is None:
        return
    smallest = min_input_size(len(widths), kernel_size)
    if isinstance(size, bool) or not isinstance(size, int) or not smallest <= size <= MAX_SLICE_SIZE:
        raise ValueError(f"{what}: its slice size {size!r} is out of range: it must be an integer in "
                         f"[{smallest}, {MAX_SLICE_SIZE}] px (the checkpoint is damaged or was edited)")
    check_memory(cohort_memory(batch_size, size) + training_memory(size, widths, kernel_size, batch_size, [method]),
                 f"{what}: predicting at its slice size {size} px", device)


def _conv_outputs(side: int, widths: Sequence[int], kernel_size: int) -> int:
    """Elements of every block's conv output for one sample."""
    total = 0
    for width in widths:
        conv = side - kernel_size + 1
        if conv < 3:
            break
        total += width * conv * conv
        side = (conv - 3) // 2 + 1
    return total


def training_memory(side: int, widths: Sequence[int], kernel_size: int, batch_size: int,
                    methods: Sequence[str] = ("featimpute",)) -> int:
    """Estimated peak bytes of training on ``side`` x ``side`` slices, beyond the data.

    ``_ACTIVATION_COPIES[method]`` float32 copies of every block's conv output per sample, times
    the batch, for the most demanding of ``methods``. The weights (a few MB even at the paper's
    widths) are left out.
    """
    copies = max(_ACTIVATION_COPIES.get(m, max(_ACTIVATION_COPIES.values())) for m in methods)
    return copies * 4 * batch_size * _conv_outputs(side, widths, kernel_size)


def cohort_memory(cases: int, side: int, channels: int = 4) -> int:
    """Bytes of a cohort's float32 images [cases, channels, side, side]."""
    return 4 * cases * channels * side * side


def available_memory(device: str = "cpu") -> Optional[int]:
    """Bytes free now: on cuda the GPU's free memory, else the host's available memory (Linux
    ``MemAvailable``; elsewhere the physical memory); None when unknown."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, device: str = "cpu", available: Optional[int] = None) -> None:
    """Refuse when ``needed`` bytes exceed 90 % of the memory available now; warn above 50 %.

    Args:
        needed: the estimate, bytes.
        what: what the estimate is of, with the options that set it (the message's subject).
        device: where the memory is needed (``cuda...``: the GPU's; else the host's).
        available: bytes available (default: :func:`available_memory`).

    Raises:
        ValueError: one line with the estimate and what is available.
    """
    available = available_memory(device) if available is None else available
    if available is None:
        return
    where = "GPU" if device.startswith("cuda") else "RAM"
    text = f"{what} needs about {_gib(needed)} but {_gib(available)} of {where} is available"
    if needed > _REFUSE_SHARE * available:
        raise ValueError(f"{text}; reduce it (smaller --size, --batch-size, --widths or --jobs)")
    if needed > _WARN_SHARE * available:
        log.warning("%s: it may run out of memory", text)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"
