"""Figures for the run directory and the report (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medsight.evaluate.metrics import decide  # noqa: E402


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
    probs: np.ndarray,
    class_names: list[str],
    positive_index: int | None,
    threshold: float,
    path: Path,
    n: int = 16,
    seed: int = 0,
) -> None:
    """A grid of held-out images titled 'pred / true' (red when wrong), as tutorial (a) shows."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pixels), size=min(n, len(pixels)), replace=False)
    predicted = decide(probs, positive_index, threshold)
    cols = 4
    rows = max(1, int(np.ceil(len(pick) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), pick, strict=False):
        image = pixels[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        ok = predicted[i] == labels[i]
        ax.set_title(
            f"pred {class_names[predicted[i]]}\ntrue {class_names[labels[i]]}",
            fontsize=8,
            color="black" if ok else "red",
        )
    _save(fig, path)
