"""What the synthetic cohort's images can tell (docs/data.md, "What the images can tell").

The bound: the balanced accuracy of a classifier that knows exactly the latent traits a set of
modalities shows, and nothing else. Knowing the traits z_S, the risk is normal with mean
w_S . z_S, so the best classifier of the three ordered survival classes thresholds that score; the
two thresholds are searched on a grid of its quantiles, on ``--cases`` simulated cases.

With ``--data ROOT`` (a cohort written by ``hamfast synth`` with the same signal and private), also
a simple probe: an L2 logistic regression on per-channel intensity statistics of the reader's 96 px
slice, mean balanced accuracy over 10 stratified 177/36 splits.

Usage: python scripts/cohort_bounds.py [--signal S] [--private P] [--cases 200000] [--data ROOT]
"""
import argparse
import itertools

import numpy as np

from hamfast.data import MODALITIES, survival_class
from hamfast.data.synthetic import (DEFAULT_PRIVATE, DEFAULT_SIGNAL, LOG_DAYS_MEAN, LOG_DAYS_SD, TRAIT_NAMES,
                                    risk_weights)

# Which latent traits each modality shows (hamfast.data.phantom's table; "faint" counts as shown).
SHOWN = {
    "t1": ("necrosis", "oedema", "t1_private"),
    "t1ce": ("necrosis", "rim", "oedema", "t1ce_private"),
    "t2": ("oedema", "t2_private"),
    "flair": ("oedema", "flair_private"),
}


def best_threshold_accuracy(score: np.ndarray, label: np.ndarray, grid: int = 60) -> float:
    """The best balanced accuracy of ``label`` (0 short, 1 mid, 2 long) by two thresholds on ``score``
    (higher: shorter survival)."""
    cuts = np.quantile(score, np.linspace(0.02, 0.98, grid))
    best = 0.0
    for high, low in itertools.combinations(cuts[::-1], 2):  # high > low
        predicted = np.where(score > high, 0, np.where(score > low, 1, 2))
        best = max(best, np.mean([(predicted[label == k] == k).mean() for k in range(3)]))
    return float(best)


def intensity_features(images: np.ndarray) -> np.ndarray:
    """float [N, 4, 8]: per channel of the [N, 4, H, W] slices, brain-pixel quantiles (0.5 to 0.99),
    the shares above 0.6 and 0.8, and the standard deviation."""
    flat = images.reshape(len(images), images.shape[1], -1)
    features = np.zeros(flat.shape[:2] + (8,))
    for i, j in np.ndindex(*flat.shape[:2]):
        brain = flat[i, j][flat[i, j] > 0]
        if brain.size:
            features[i, j] = [*np.quantile(brain, [0.5, 0.75, 0.9, 0.95, 0.99]), (brain > 0.6).mean(),
                              (brain > 0.8).mean(), brain.std()]
    return features


def logistic_probe(features: np.ndarray, labels: np.ndarray, splits: int = 10) -> float:
    """Mean balanced accuracy of a class-weighted L2 logistic regression over stratified 177/36 splits."""
    import torch

    from hamfast.data import stratified_split
    from hamfast.metrics import classification_metrics

    scores = []
    for seed in range(splits):
        train, test = stratified_split(labels, test_size=36, seed=seed)
        mean, sd = features[train].mean(0), features[train].std(0) + 1e-6
        x_train, x_test = (torch.tensor((features[idx] - mean) / sd, dtype=torch.float32) for idx in (train, test))
        y = torch.as_tensor(labels[train])
        w = torch.zeros(features.shape[1], 3, requires_grad=True)
        b = torch.zeros(3, requires_grad=True)
        class_weight = torch.tensor(len(y) / (3 * np.bincount(labels[train], minlength=3)), dtype=torch.float32)
        optimiser = torch.optim.LBFGS([w, b], max_iter=200)

        def closure():
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(x_train @ w + b, y, weight=class_weight) + 0.05 * (w**2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        predicted = (x_test @ w + b).argmax(1).numpy()
        scores.append(classification_metrics(labels[test], predicted)["balanced_accuracy"])
    return float(np.mean(scores))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", type=float, default=DEFAULT_SIGNAL)
    parser.add_argument("--private", type=float, default=DEFAULT_PRIVATE)
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="also probe this cohort with a logistic regression")
    args = parser.parse_args()
    for option, value in (("--signal", args.signal), ("--private", args.private)):
        if not 0 <= value <= 1:  # one line naming the option, before any simulation
            parser.error(f"{option} is a share and must lie in [0, 1], got {value}")
    if args.cases < 1000:
        parser.error(f"--cases must be at least 1000 (simulated cases for the bound), got {args.cases}")
    features = labels = None
    if args.data:
        from hamfast.data import prepare_brats

        try:
            cohort = prepare_brats(args.data, size=96)
        except (OSError, ValueError) as error:  # CaseError is a ValueError
            parser.error(f"--data {args.data}: {error}")
        features, labels = intensity_features(cohort.images), np.asarray(cohort.labels)

    weights = risk_weights(args.signal, args.private)  # 7 traits, then the noise
    rng = np.random.default_rng(args.seed)
    v = rng.standard_normal((args.cases, weights.size))
    risk = v @ weights
    label = survival_class(np.exp(LOG_DAYS_MEAN - LOG_DAYS_SD * risk))  # the cohort's own days and classes
    subsets = [(m,) for m in MODALITIES] + [tuple(MODALITIES)]
    subsets += [tuple(m for m in MODALITIES if m != left) for left in MODALITIES]
    print(f"signal {args.signal}, private {args.private}, {args.cases} simulated cases")
    print(f"{'inputs':22s} bound" + ("  logistic probe" if args.data else ""))
    for subset in subsets:
        shown = sorted({TRAIT_NAMES.index(t) for m in subset for t in SHOWN[m]})
        line = f"{'+'.join(subset):22s} {best_threshold_accuracy(v[:, shown] @ weights[shown], label):.2f}"
        if features is not None:
            channels = [MODALITIES.index(m) for m in subset]
            line += f"   {logistic_probe(features[:, channels].reshape(len(labels), -1), labels):.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
