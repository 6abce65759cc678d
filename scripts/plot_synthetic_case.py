"""Draw one synthetic case's four modalities as the model sees them (docs/images/synthetic_case.png).

Usage: python scripts/plot_synthetic_case.py [--out PNG] [--seed 0] [--case 1] [--size 96]

Generates the case with hamfast.data.make_synthetic_brats (default volume shape) in a temporary
folder and reads it with hamfast.data.load_case, the reader's own preprocessing (largest-tumour
slice, min-max to [0, 1], brain crop, resize). Needs matplotlib.
"""
import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from hamfast.data import MODALITIES, load_case, make_synthetic_brats  # noqa: E402
from hamfast.data.brats import TRAINING_DIR  # noqa: E402
from hamfast.data.synthetic import TRAIT_RANGES_MM, case_traits, trait_sizes  # noqa: E402

SHOWS = {  # what each modality shows of the size traits, and its private contrast trait
    "t1": "dark necrosis; private: oedema intensity",
    "t1ce": "rim, dark necrosis; private: rim brightness",
    "t2": "lesion extent; private: oedema brightness",
    "flair": "lesion extent; private: oedema brightness",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parents[1] / "docs" / "images" / "synthetic_case.png"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, default=1)
    parser.add_argument("--size", type=int, default=96)  # the quick preset's slice side
    args = parser.parse_args()

    case = f"BraTS19_SYN_{args.case:04d}_1"
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_brats(tmp, n_cases=args.case + 1, seed=args.seed)
        folder = Path(root) / TRAINING_DIR / "HGG" / case
        image, _, index = load_case(folder, size=args.size)
        seg = np.asanyarray(nib.load(str(folder / f"{case}_seg.nii.gz")).dataobj)[..., index]
    z, days = case_traits(args.seed, args.case, np.random.default_rng([args.seed, args.case]))
    sizes = trait_sizes(z)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.8))
    for ax, modality, channel in zip(axes, MODALITIES, image):
        ax.imshow(channel.T, cmap="gray", origin="lower", vmin=0, vmax=1)  # rows = L-R, columns = P-A: show A up
        ax.set_title(f"{modality}\n{SHOWS[modality]}", fontsize=10)
        ax.axis("off")
    traits = ", ".join(f"{name.replace('_mm', '')} {getattr(sizes, name):.1f} mm" for name in TRAIT_RANGES_MM)
    if sizes.contrasts is not None:
        traits += "; private contrasts " + ", ".join(f"{m} {c:.2f}" for m, c in zip(MODALITIES, sizes.contrasts))
    fig.suptitle(f"synthetic case {case} (seed {args.seed}), axial slice {index} ({int((seg > 0).sum())} tumour voxels)\n"
                 f"traits: {traits}; survival {days:.0f} days", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
