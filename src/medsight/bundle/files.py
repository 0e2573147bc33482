"""A bundle folder's files, its description, and finding it inside a run directory.

Apart from :mod:`.folder` (weights and the PyTorch model) because none of this needs PyTorch:
an exported bundle predicts and serves through ONNX Runtime without importing it (half a
gigabyte less memory and seconds less start-up per process).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from medsight.bundle.spec import FORMAT_VERSION, BundleSpec
from medsight.errors import MedsightError
from medsight.fsutil import atomic_write_text

SPEC_FILE, WEIGHTS_FILE, CARD_FILE = "bundle.json", "model.safetensors", "model_card.md"
HUB_CARD_FILE = "README.md"  # the Hugging Face Hub shows (and reads the metadata of) this one


def bundle_folder(path: str | Path) -> Path:
    """A bundle folder, or the run directory holding ``bundle/``, as the bundle folder."""
    folder = Path(path)
    return folder / "bundle" if (folder / "bundle" / SPEC_FILE).is_file() else folder


def read_spec(folder: str | Path) -> BundleSpec:
    """A bundle's description (also from the run directory that holds ``bundle/``); one line
    naming the file when it is missing, invalid or newer than this medsight."""
    folder = bundle_folder(folder)
    spec_file, weights_file = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_file.is_file() or not weights_file.is_file():
        raise MedsightError(
            f"{folder}: not a medsight bundle (expected {SPEC_FILE} and "
            f"{WEIGHTS_FILE}; a training run writes one to RUN_DIR/bundle)"
        )
    try:
        spec = BundleSpec.model_validate_json(spec_file.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in exc.errors()
        )
        raise MedsightError(f"{spec_file}: invalid bundle description: {problems}") from exc
    if spec.format_version > FORMAT_VERSION:
        raise MedsightError(
            f"{folder}: bundle format {spec.format_version} is newer than this "
            f"medsight understands ({FORMAT_VERSION}); upgrade medsight"
        )
    return spec


def write_card(folder: Path, card: str) -> None:
    """The bundle's model card, as ``model_card.md`` and as ``README.md``: a bundle folder
    uploaded as a Hub repository then shows its card and the Hub reads its YAML metadata."""
    for name in (CARD_FILE, HUB_CARD_FILE):
        atomic_write_text(Path(folder) / name, card)
