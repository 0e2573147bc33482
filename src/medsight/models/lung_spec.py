"""What a lung-crop model is (stored beside its weights and in ``bundle.json``).

Apart from :mod:`.lungs` because a bundle's description is read without PyTorch: an exported
bundle predicts through ONNX Runtime alone.
"""

from __future__ import annotations

from pydantic import BaseModel


class LungSpec(BaseModel):
    """How a lung model was built and how its masks become a crop box (stored beside it)."""

    encoder: str = "tu-tf_efficientnet_lite0"
    size: int = 128  # the U-Net sees the image at size x size, in grey levels
    margin: float = 0.05  # widen the box by this fraction of its height and width on each side
    tail: float = 0.005  # ignore this fraction of the lung pixels at each edge (stray specks)
    min_area: float = 0.15  # a smaller box (failed segmentation) keeps the whole image
    val_dice: float | None = None  # on held-out masks, when medsight trained it
    trained_on: str = ""
