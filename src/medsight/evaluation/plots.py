"""Figures for the run directory and the report (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from medsight.evaluation.bootstrap import group_indices, resample_indices  # noqa: E402

GRID = np.linspace(0, 1, 101)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy per epoch, train and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            column = f"{stage}_{metric}"
            if column in history:
                ax.plot(history["epoch"], history[column], style, label=stage, markersize=3)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """Confusion matrix with counts and row-normalised fractions (rows: true class)."""
    rows = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{fractions[i, j]:.1%}",
                ha="center",
                va="center",
                color=colour,
            )
    ticks = range(len(class_names))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix ({title})",
    )
    _save(fig, path)


def plot_prediction_grid(
    pixels: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: list[str],
    path: Path,
    n: int = 16,
    seed: int = 0,
) -> None:
    """A grid of held-out images titled 'pred / true' (red when wrong), as tutorial (a) shows
    (docs/tutorials.md)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pixels), size=min(n, len(pixels)), replace=False)
    titles = [f"pred {class_names[predicted[i]]}\ntrue {class_names[labels[i]]}" for i in pick]
    _image_grid(pixels[pick], titles, [predicted[i] != labels[i] for i in pick], path)


def worst_errors(
    labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray, n: int
) -> np.ndarray:
    """Indices of the most confident wrong predictions (highest probability of the wrongly
    predicted class, the figure their plot titles show)."""
    wrong = np.nonzero(predicted != labels)[0]
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:n]


def plot_worst_errors(
    pixels: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    predicted: np.ndarray,
    class_names: list[str],
    path: Path,
    n: int = 8,
) -> bool:
    """The most confident mistakes, as images; False (nothing drawn) when there are none."""
    pick = worst_errors(labels, probs, predicted, n)
    if not len(pick):
        return False
    titles = [
        f"true {class_names[labels[i]]}\npred {class_names[predicted[i]]} "
        f"({probs[i, predicted[i]]:.2f})"
        for i in pick
    ]
    _image_grid(pixels[pick], titles, [True] * len(pick), path)
    return True


def _image_grid(pixels: np.ndarray, titles: list[str], red: list[bool], path: Path) -> None:
    cols = 4
    rows = max(1, int(np.ceil(len(pixels) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, image, title, bad in zip(
        np.atleast_1d(axes).ravel(), pixels, titles, red, strict=False
    ):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        ax.set_title(title, fontsize=8, color="red" if bad else "black")
    _save(fig, path)


def plot_roc_pr(
    is_positive: np.ndarray,
    score: np.ndarray,
    groups: list | None,
    path: Path,
    resamples: int = 200,
    seed: int = 0,
) -> None:
    """ROC and precision-recall curves with 95 % bands from the same patient bootstrap as the
    figures (curves interpolated on a fixed grid, percentiles taken point by point)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    fpr, tpr, _ = roc_curve(is_positive, score)
    precision, recall, _ = precision_recall_curve(is_positive, score)
    roc_draws, pr_draws = [], []
    parts, _ = group_indices(groups, len(score))
    for rows in resample_indices(parts, resamples, seed):
        y, s = is_positive[rows], score[rows]
        if y.all() or not y.any():
            continue
        f, t, _ = roc_curve(y, s)
        roc_draws.append(np.interp(GRID, f, t))
        p, r, _ = precision_recall_curve(y, s)
        pr_draws.append(np.interp(GRID, r[::-1], p[::-1]))
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    roc_ax.plot(fpr, tpr, label="ROC")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    pr_ax.plot(recall, precision, label="PR")
    pr_ax.axhline(is_positive.mean(), linestyle=":", color="grey", label="prevalence")
    for ax, draws in ((roc_ax, roc_draws), (pr_ax, pr_draws)):
        if draws:
            low, high = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
            ax.fill_between(GRID, low, high, alpha=0.25, label="95 % CI")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve")
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
    _save(fig, path)


def plot_reliability(before: list[dict], after: list[dict], path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after calibration."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for bins, style, label in ((before, "-o", "before"), (after, "-s", "after (temperature)")):
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, label=label)
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability diagram", xlim=(0, 1.02))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_label_rocs(targets: np.ndarray, probs: np.ndarray, names: list[str], path: Path) -> None:
    """A multi-label model's ROC curve per label, on the images where that label is recorded
    (a label without both values on them has no curve and says so in the legend)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    for j, name in enumerate(names):
        observed = ~np.isnan(targets[:, j])
        y = targets[observed, j] == 1
        if y.all() or not y.any():
            ax.plot([], [], label=f"{name}: needs images with and without it")
            continue
        fpr, tpr, _ = roc_curve(y, probs[observed, j])
        ax.plot(fpr, tpr, label=f"{name} (n={int(observed.sum())}, {int(y.sum())} with)")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve per label")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)
