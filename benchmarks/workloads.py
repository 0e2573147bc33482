"""What each side runs on: the recipes, their image files, and how many steps are timed.

Both sides read the same files: each data set becomes a class-folder tree of symbolic links
(original file names, so patients stay recognisable), which Keras' ``flow_from_directory`` and
medsight's folder source read alike. Tutorial (d)'s data is medsight's curation of the ieee8023
collection (COVID-19 PA X-rays against Kermany normals), used by recipes (b) and (d).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODES = ("quick", "full")


@dataclass(frozen=True)
class Workload:
    """One tutorial recipe: its data set and (warm-up, timed) training steps per mode."""

    recipe: str
    tutorial: str
    dataset: str
    steps: dict[str, tuple[int, int]]


WORKLOADS = {
    w.recipe: w
    for w in (
        Workload("malaria-lenet", "(a)", "malaria", {"quick": (2, 6), "full": (10, 150)}),
        Workload("covid-scratch", "(b)", "covid", {"quick": (2, 6), "full": (10, 150)}),
        Workload("covid-resnet50", "(b) transfer", "covid", {"quick": (1, 2), "full": (3, 20)}),
        Workload("pneumonia-cnn", "(c)", "chest_xray", {"quick": (1, 3), "full": (5, 60)}),
        Workload("covid-vgg16", "(d)", "covid", {"quick": (1, 3), "full": (5, 40)}),
    )
}
# images per data set in quick mode (full mode: all of them)
QUICK_IMAGES = {"malaria": 128, "chest_xray": 100, "covid": 32}


def spread(files: list[Path], n: int | None) -> list[Path]:
    """Every k-th file of a sorted list: a subset that still spans many patients."""
    if n is None or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def source_files(dataset: str, data_root: Path) -> dict[str, list[Path]]:
    """Class name -> image files of one data set, sorted."""
    if dataset == "malaria":
        root = data_root / "malaria"
    elif dataset == "chest_xray":
        root = data_root / "chest_xray" / "train"
    elif dataset == "covid":
        return _curated_covid(data_root)
    else:
        raise ValueError(f"unknown data set {dataset!r}")
    from medsight.data.io import is_image_file

    return {
        folder.name: sorted(p for p in folder.iterdir() if is_image_file(p))
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }


def _curated_covid(data_root: Path) -> dict[str, list[Path]]:
    from medsight.data.curate import curate_covid

    frame = curate_covid(data_root / "covid", data_root / "chest_xray").table.frame
    return {
        label: sorted(Path(p).resolve() for p in group["path"])
        for label, group in frame.groupby("label")
    }


def build_tree(dataset: str, data_root: Path, dest: Path, per_dataset: int | None) -> Path:
    """``dest/<class>/<file>`` links to ``per_dataset`` files (all when None), spread evenly
    over the classes; returns ``dest``. An existing tree is kept as it is."""
    if dest.is_dir():
        return dest
    classes = source_files(dataset, data_root)
    per_class = None if per_dataset is None else max(1, per_dataset // len(classes))
    tmp = dest.with_name(dest.name + ".tmp")
    for label, files in classes.items():
        folder = tmp / label
        folder.mkdir(parents=True)
        for file in spread(files, per_class):
            (folder / file.name).symlink_to(file.resolve())
    tmp.rename(dest)
    return dest


def image_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file())
