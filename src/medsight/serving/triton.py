"""Export a bundle as an NVIDIA Triton model repository entry.

``DIR/<name>/1/model.onnx`` is the graph :func:`~medsight.serving.export.export_onnx` writes and
proves equal to PyTorch (its ``model.onnx.json`` beside it, parity included); ``config.pbtxt``
describes it to Triton's ONNX Runtime backend with dynamic batching, and ``labels.txt`` holds
the class names in output order (Triton's ``label_filename``, for its classification extension).
Triton serves the graph's raw outputs: ``logits`` (calibrated probabilities are
``softmax(logits / medsight_temperature)``; of a multi-label bundle ``sigmoid(logits /
medsight_label_temperatures)``, each label at its ``medsight_label_thresholds``) and, with a
domain guard, ``domain_distance`` (``domain_score = distance / medsight_domain_threshold``,
above 1 out of domain); those numbers and the decision threshold are the config's
``parameters``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medsight import __version__
from medsight.bundle import BundleSpec, bundle_folder
from medsight.bundle.runtime import LOGIT_TOLERANCE, ONNX_NAME, sidecar
from medsight.errors import MedsightError
from medsight.fsutil import atomic_dir

__all__ = ["export_triton", "model_config", "model_name"]

CONFIG, LABELS, VERSION = "config.pbtxt", "labels.txt", "1"
MARKER = "# medsight Triton export"  # first line of every config.pbtxt medsight writes
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# ONNX TensorProto element types -> Triton data types (the ones a medsight graph can have)
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 10: "TYPE_FP16", 7: "TYPE_INT64"}


def model_name(bundle_path: str | Path, name: str | None = None) -> str:
    """``name`` if it is a valid model name, else the bundle's folder name made one (the run's
    name for ``RUN/bundle``): letters, digits, ``_ . -``; it is a folder and part of a URL."""
    if name is not None:
        if not NAME.fullmatch(name):
            raise MedsightError(
                f"model name {name!r} is not usable: use 1-128 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        return name
    folder = bundle_folder(bundle_path).resolve()
    raw = folder.parent.name if folder.name == "bundle" else folder.name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.-")[:128]
    return cleaned or "medsight"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _tensor(value_info, extra: tuple[str, ...] = ()) -> str:
    """One ``input``/``output`` entry: the ONNX tensor's type and shape without the batch."""
    tensor = value_info.type.tensor_type
    if tensor.elem_type not in TRITON_TYPES:
        raise MedsightError(f"{value_info.name}: ONNX element type {tensor.elem_type} unsupported")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if not dims or dims[0] != -1:
        raise MedsightError(f"{value_info.name}: the graph's first dimension is not the batch")
    lines = [f"name: {_quote(value_info.name)}", f"data_type: {TRITON_TYPES[tensor.elem_type]}"]
    if len(dims) == 1:  # one number per image: Triton needs a dimension, reshaped away
        lines += ["dims: [ 1 ]", "reshape: { shape: [ ] }"]
    else:
        lines.append(f"dims: [ {', '.join(map(str, dims[1:]))} ]")
    body = "".join(f"    {line}\n" for line in [*lines, *extra])
    return f"  {{\n{body}  }}"


def _block(key: str, entries: list[str]) -> str:
    joined = ",\n".join(entries)
    return f"{key} [\n{joined}\n]\n"


def model_config(
    name: str, spec: BundleSpec, onnx_path: Path, max_batch_size: int = 16, delay_us: int = 2000
) -> str:
    """``config.pbtxt`` for the ONNX graph at ``onnx_path``: its inputs and outputs as the graph
    declares them (the first output, the logits, labelled with ``labels.txt``), dynamic
    batching up to ``max_batch_size`` waiting at most ``delay_us``, the bundle's rules as
    ``parameters``."""
    import onnx

    if max_batch_size < 1:
        raise MedsightError(f"max_batch_size must be at least 1, not {max_batch_size}")
    graph = onnx.load(onnx_path).graph
    labelled = (f"label_filename: {_quote(LABELS)}",)
    outputs = [_tensor(v, labelled if i == 0 else ()) for i, v in enumerate(graph.output)]
    parameters: dict[str, object] = {"medsight_temperature": spec.temperature}
    if spec.task == "multilabel":  # a sigmoid per label: each its own temperature, threshold
        parameters = {
            "medsight_task": "multilabel",
            "medsight_label_temperatures": ",".join(map(str, spec.label_temperatures)),
            "medsight_label_thresholds": ",".join(map(str, spec.label_thresholds)),
        }
    elif spec.positive_class is not None:
        parameters["medsight_positive_class"] = spec.positive_class
        parameters["medsight_threshold"] = spec.threshold
    if spec.domain is not None:
        parameters["medsight_domain_threshold"] = spec.domain.threshold
    params = [
        f"  {{ key: {_quote(key)} value: {{ string_value: {_quote(str(value))} }} }}"
        for key, value in parameters.items()
    ]
    return (
        f"{MARKER} (medsight {__version__}): re-export rather than edit\n"
        f"name: {_quote(name)}\n"
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _block("input", [_tensor(v) for v in graph.input])
        + _block("output", outputs)
        + f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}\n"
        + _block("parameters", params)
    )


def _refuse_foreign(target: Path) -> None:
    """Only an empty folder or a previous medsight export (exactly its files) is replaced."""
    if not target.exists():
        return
    advice = "it is left as it is: choose another --out or --name, or move it"
    if not target.is_dir():
        raise MedsightError(f"{target}: is a file, not a model folder; {advice}")
    found = {p.relative_to(target).as_posix() for p in target.rglob("*")}
    if not found:
        return
    config = target / CONFIG
    if not (config.is_file() and config.read_text(errors="replace").startswith(MARKER)):
        raise MedsightError(f"{target}: is not empty and not a medsight export; {advice}")
    ours = {CONFIG, LABELS, VERSION, f"{VERSION}/{ONNX_NAME}", f"{VERSION}/{ONNX_NAME}.json"}
    if found - ours:
        other = sorted(found - ours)[0]
        raise MedsightError(
            f"{target}: a medsight export, but {other!r} in it is not medsight's; {advice}"
        )


def export_triton(
    bundle_path: str | Path,
    out: str | Path,
    name: str | None = None,
    check_images: list[str | Path] | None = None,
    max_batch_size: int = 16,
    atol: float = LOGIT_TOLERANCE,
) -> Path:
    """Write the Triton model folder ``out/<name>`` (``name`` defaults to the bundle's,
    sanitised) and return it. The graph is kept only if it matches PyTorch on
    ``check_images`` (as in :func:`export_onnx`); a previous medsight export of the same name
    is replaced whole, anything else there is refused."""
    from medsight.serving.export import export_onnx  # PyTorch: not for model_name's users

    folder = bundle_folder(bundle_path)
    name = model_name(folder, name)
    target = Path(out) / name
    _refuse_foreign(target)
    with atomic_dir(target) as tmp:
        graph = export_onnx(folder, tmp / VERSION / ONNX_NAME, check_images=check_images, atol=atol)
        spec = BundleSpec.model_validate(json.loads(sidecar(graph).read_text())["bundle"])
        if any("\n" in c or not c.strip() for c in spec.class_names):
            raise MedsightError(f"{folder}: a class name is empty or has a line break")
        (tmp / LABELS).write_text("".join(f"{c}\n" for c in spec.class_names), encoding="utf-8")
        config = model_config(name, spec, graph, max_batch_size)
        (tmp / CONFIG).write_text(config, encoding="utf-8")
    return target
