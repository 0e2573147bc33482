"""One training run, start to finish: the run directory, its data, the fit and its outputs.

:class:`Run` is the one path every training takes (``train``, ``--resume``, each fold of
``--folds``, and the benchmarks): prepare (load, split, decode, lung-crop) -> fit -> outputs.
Everything about the run lands in its run directory (docs/bundle.md). A run killed at any
moment continues with :func:`resume` from its last checkpoint and ends as an uninterrupted run
would have (same seed, same data, same draws).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only

from medsight.config import Recipe, load_recipe, save_recipe
from medsight.data.sources import ImageTable
from medsight.errors import MedsightError
from medsight.models.extras import check_extras
from medsight.training.device import resolve_device
from medsight.training.fit import FirstEpochStopped, FitPlan, fit, num_nodes, plan_fit
from medsight.training.prepare import (
    Prepared,
    crop_to_lungs,
    discard_unfinished_start,
    prepare,
    prepare_run_dir,
    reload_prepared,
    settle,
)
from medsight.training.tracking import check_tracking

log = logging.getLogger(__name__)
RESUME_NEEDS = ("config.yaml", "run.json", "splits.csv", "checkpoints/last.ckpt")


class Run:
    """A run directory with its recipe; ``devices`` processes train it (DDP when more than one:
    every process prepares the same data, only the first one writes)."""

    def __init__(self, recipe: Recipe, out: str | Path, devices: int = 1):
        self.recipe, self.out, self.devices = recipe, Path(out), devices
        self.writes = rank_zero_only.rank == 0
        self.created_folder = False

    @classmethod
    def create(
        cls,
        recipe: Recipe,
        out: str | Path,
        overwrite: bool = False,
        devices: int = 1,
        data: str | Path | None = None,
    ) -> Run:
        """A new run directory holding the resolved recipe (``config.yaml``); refuses a folder
        that holds something else, and replaces (deletes) an earlier run only with
        ``overwrite``, never one that holds the run's own ``data`` or starting weights. A
        missing optional extra the recipe needs, or a GPU it asks for and the machine lacks, is
        reported first, before any image is read."""
        check_extras(recipe)
        check_tracking(recipe)
        resolve_device(recipe.train)
        run = cls(recipe, out, devices)
        if run.writes:
            run.created_folder = not run.out.exists()
            prepare_run_dir(run.out, overwrite, run._inputs(data))
            save_recipe(recipe, run.out / "config.yaml")
        return run

    @classmethod
    def reopen(cls, out: str | Path, devices: int = 1, accelerator: str | None = None) -> Run:
        """An interrupted run, to be resumed with its own recipe and splits (on another
        ``accelerator`` when given: a run started on a GPU may end on a CPU)."""
        out = Path(out)
        for needed in RESUME_NEEDS:
            if not (out / needed).is_file():
                raise MedsightError(
                    f"cannot resume {out}: {Path(needed).name} is missing (a run can be "
                    "resumed once it has finished its first epoch)"
                )
        recipe = load_recipe(str(out / "config.yaml"))
        if accelerator is not None:
            recipe.train = recipe.train.model_copy(update={"accelerator": accelerator})
        check_extras(recipe)
        check_tracking(recipe)
        resolve_device(recipe.train)
        return cls(recipe, out, devices)

    def _inputs(self, data: str | Path | None) -> tuple[str | Path, ...]:
        """The files and folders the run reads: its data, pretrained weights and lung model."""
        lungs = self.recipe.preprocess.lung_crop
        found = [data, self.recipe.model.pretrained, lungs.model if lungs else None]
        return tuple(p for p in found if p and p != "imagenet" and Path(p).expanduser().exists())

    def _seed(self) -> None:
        L.seed_everything(self.recipe.train.seed, workers=True, verbose=False)

    def prepare(self, data: str | Path, table: ImageTable | None = None) -> Prepared:
        """Split and decode ``data`` (or an already hashed ``table``) and crop it to the lungs
        when the recipe says so, recording the splits in the run directory. A new data set is
        decoded while the first epoch trains (``data.overlap_decoding``), except where every
        image is needed first (a lung crop) or several processes would each decode it."""
        self._seed()
        overlap = (
            self.recipe.data.overlap_decoding
            and self.recipe.preprocess.lung_crop is None
            and self.devices == 1
            and num_nodes(self.devices) == 1
        )
        prepared = prepare(self.recipe, data, self.out, self.writes, table, overlap)
        return crop_to_lungs(self.recipe, prepared, data, self.out, reuse=not self.writes)

    def reload(self) -> Prepared:
        """The data of this run as it started: its exact splits, decoded again."""
        self._seed()
        prepared = reload_prepared(self.recipe, self.out)
        return crop_to_lungs(self.recipe, prepared, "", self.out, reuse=True)

    def plan(self, data: Prepared) -> FitPlan:
        """The model, loaders and callbacks a fit of this run uses."""
        return plan_fit(self.recipe, data)

    def fit(self, data: Prepared, resume: bool = False) -> Path:
        """Fit (from the last checkpoint when ``resume``) and write the outputs. A first epoch
        that met an unreadable file while its images were decoded starts again without it, as
        a run that had decoded everything first would have trained."""
        try:
            return fit(self.recipe, data, self.out, self.devices, resume=resume)
        except FirstEpochStopped as stop:
            log.warning("%s; training starts again without the files that cannot be read", stop)
        data = settle(data, self.out if self.writes else None)
        self._seed()
        return fit(self.recipe, data, self.out, self.devices, resume=resume)

    def discard_if_unfinished(self) -> None:
        """After a failure: remove what this run wrote when it never finished an epoch (nothing
        to resume), so the corrected command finds the folder as it was."""
        if self.writes:
            discard_unfinished_start(self.out, self.created_folder)


def train(
    recipe: Recipe, data: str | Path, out: str | Path, overwrite: bool = False, devices: int = 1
) -> Path:
    """Train ``recipe`` on ``data`` and write the complete run directory ``out``."""
    run = Run.create(recipe, out, overwrite, devices, data)
    try:
        return run.fit(run.prepare(data))
    except BaseException:
        run.discard_if_unfinished()
        raise


def resume(out: str | Path, devices: int = 1, accelerator: str | None = None) -> Path:
    """Continue a killed or interrupted run from ``out/checkpoints/last.ckpt``."""
    run = Run.reopen(out, devices, accelerator)
    return run.fit(run.reload(), resume=True)
