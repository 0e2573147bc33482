"""Triton export: a model repository entry whose config.pbtxt Triton's own protobuf accepts,
holding export_onnx's parity-checked graph, labels in output order, and no overwriting of
folders medsight did not write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper

from medsight.bundle import BundleSpec, OnnxPredictor, load_bundle
from medsight.bundle.spec import DomainSpec
from medsight.cli import main
from medsight.errors import MedsightError
from medsight.serving.triton import export_triton, model_config, model_name

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _parse(path: Path):
    """config.pbtxt read by Triton's own ModelConfig definition (unknown fields, bad types or
    syntax raise)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exported(xray_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared test bundle exported once through the CLI (default name)."""
    repo = tmp_path_factory.mktemp("triton")
    assert main(["export", str(xray_bundle), "--format", "triton", "--out", str(repo)]) == 0
    return repo / "xray"


def test_export_is_a_triton_model_folder_with_the_checked_graph(
    exported: Path, xray_bundle: Path
) -> None:
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*")}
    assert files == {"config.pbtxt", "labels.txt", "1", "1/model.onnx", "1/model.onnx.json"}
    assert not (xray_bundle / "model.onnx").exists()  # the bundle itself is left alone

    config = _parse(exported / "config.pbtxt")
    assert config.name == "xray" and config.backend == "onnxruntime"
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    [pixels] = config.input
    assert pixels.name == "pixels" and list(pixels.dims) == [64, 64, 3]
    assert pixels.data_type == model_config_pb2.DataType.TYPE_UINT8
    [logits] = config.output  # no domain guard in this bundle: no second output
    assert logits.name == "logits" and list(logits.dims) == [2]
    assert logits.data_type == model_config_pb2.DataType.TYPE_FP32
    assert logits.label_filename == "labels.txt"
    labels = (exported / logits.label_filename).read_text().splitlines()
    assert labels == ["NORMAL", "PNEUMONIA"]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {
        "medsight_temperature": "1.5",
        "medsight_positive_class": "PNEUMONIA",
        "medsight_threshold": "0.4",
    }

    meta = json.loads((exported / "1" / "model.onnx.json").read_text())
    assert meta["parity"]["decisions_differ"] == 0 and meta["parity"]["max_abs_logit_diff"] <= 1e-3
    bundle = load_bundle(xray_bundle)
    served = OnnxPredictor(exported / "1" / "model.onnx")  # spec from the sidecar
    batch = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(served.logits(batch), bundle.logits(batch), atol=1e-4)
    graph = onnx.load(exported / "1" / "model.onnx").graph
    assert [o.name for o in graph.output] == [o.name for o in config.output]


def test_a_guarded_graph_gets_its_distance_output_reshaped(tmp_path: Path) -> None:
    """A per-image scalar output ([batch] in ONNX) is dims [1] reshaped to [] for Triton."""
    graph = helper.make_graph(
        [],
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 28, 28, 1])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("domain_distance", TensorProto.FLOAT, ["batch"]),
        ],
    )
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    domain = DomainSpec(features="test", threshold=12.5, fitted_on=10, val_out_of_domain=0.05)
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["a", 'b "quoted"', "c"],
        image_size=(28, 28),
        channels=1,
        mean=(0.5,),
        std=(0.5,),
        domain=domain,
    )
    (tmp_path / "config.pbtxt").write_text(model_config("m-1", spec, tmp_path / "model.onnx", 4))
    config = _parse(tmp_path / "config.pbtxt")
    assert config.name == "m-1" and config.max_batch_size == 4
    logits, distance = config.output
    assert list(logits.dims) == [3] and logits.label_filename == "labels.txt"
    assert distance.name == "domain_distance" and list(distance.dims) == [1]
    assert distance.HasField("reshape") and list(distance.reshape.shape) == []
    assert not distance.label_filename
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"medsight_temperature": "1.0", "medsight_domain_threshold": "12.5"}

    fixed = helper.make_tensor_value_info("pixels", TensorProto.UINT8, [2, 28, 28, 1])
    graph.input[0].CopyFrom(fixed)
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    with pytest.raises(MedsightError, match="pixels: the graph's first dimension is not the batch"):
        model_config("m", spec, tmp_path / "model.onnx")


@pytest.mark.parametrize(
    ("folder", "name", "expected"),
    [
        ("xray", None, "xray"),
        ("My Bundle (v2)", None, "My_Bundle_v2"),
        ("..__", None, "medsight"),
        ("run42/bundle", None, "run42"),  # a run's bundle takes the run's name
        ("xray", "chest-xray.v1", "chest-xray.v1"),
    ],
)
def test_model_name(tmp_path: Path, folder: str, name: str | None, expected: str) -> None:
    assert model_name(tmp_path / folder, name) == expected


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", "x" * 129, "naïve"])
def test_unusable_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MedsightError, match="is not usable"):
        model_name(tmp_path, name)


def test_re_export_replaces_only_a_previous_medsight_export(
    exported: Path, xray_bundle: Path, tmp_path: Path, capsys
) -> None:
    repo = tmp_path / "repo"
    previous = Path(shutil.copytree(exported, repo / "xray"))
    (previous / "labels.txt").write_text("stale\n")
    path = export_triton(xray_bundle, repo, check_images=None)
    assert path == previous and (path / "labels.txt").read_text() == "NORMAL\nPNEUMONIA\n"
    assert _parse(path / "config.pbtxt").name == "xray"
    assert not [p for p in repo.iterdir() if p.name != "xray"]  # no temporary folders left

    (path / "2").mkdir()  # the user's own model version: not medsight's to delete
    (path / "2" / "model.onnx").write_bytes(b"theirs")
    foreign = repo / "other"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    (repo / "afile").write_text("x")
    cases = [
        ("xray", "'2' in it is not medsight's"),
        ("other", "is not empty and not a medsight export"),
        ("afile", "is a file"),
    ]
    for name, reason in cases:
        args = ["export", str(xray_bundle), "--format", "triton", "--out", str(repo)]
        assert main([*args, "--name", name]) == 2
        assert reason in capsys.readouterr().err
    assert (path / "2" / "model.onnx").read_bytes() == b"theirs"
    assert (foreign / "notes.txt").read_text() == "keep me" and (repo / "afile").read_text() == "x"


def test_cli_refuses_triton_options_that_do_not_fit(xray_bundle: Path, capsys) -> None:
    assert main(["export", str(xray_bundle), "--format", "triton"]) == 2
    assert "needs out" in capsys.readouterr().err
    args = ["export", str(xray_bundle), "--format", "triton", "--out", "x", "--quantize", "int8"]
    assert main(args) == 2
    assert "int8 is for format='onnx'" in capsys.readouterr().err
    assert main(["export", str(xray_bundle), "--name", "x"]) == 2
    assert "format='triton'" in capsys.readouterr().err
