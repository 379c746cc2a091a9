"""Packing a bundle without its derivable backbone and assembling it again, verified."""

import json

import pytest

from split_infer.bundle import Bundle, BundleError
from split_infer.defaults import DEFAULT_BUNDLE
from split_infer.tools.cli import main
from split_infer.training.assemble import ASSEMBLY, assemble_bundle, pack_bundle


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "default"
    derived = pack_bundle(DEFAULT_BUNDLE, out)
    return out, derived


def test_pack_leaves_out_exactly_what_regenerates_byte_for_byte(packed):
    out, derived = packed
    # The shipped bundle's backbone comes from the shipped weights: both files regenerate.
    assert derived == {"weights/backbone.safetensors": "backbone_weights",
                       "onnx/full.onnx": "tapped_onnx"}
    assert not (out / "onnx" / "full.onnx").exists()
    assert json.loads((out / ASSEMBLY).read_text())["derived"] == derived
    with pytest.raises(BundleError, match=r"is a packed bundle.*split-infer bundle assemble"):
        Bundle.load(out)  # a packed bundle is not a bundle until assembled


def test_assembled_bundle_is_the_packed_one(packed, tmp_path):
    out, _ = packed
    bundle = assemble_bundle(out, tmp_path / "assembled")
    original = Bundle.load(DEFAULT_BUNDLE)
    assert bundle.manifest["files"] == original.manifest["files"]  # every sha256 verified
    assert [c.id for c in bundle.configurations] == [c.id for c in original.configurations]
    # Assembling again replaces the earlier result.
    assert assemble_bundle(out, tmp_path / "assembled").path == tmp_path / "assembled"


def test_a_tampered_packed_file_is_refused(packed, tmp_path):
    import shutil

    out, _ = packed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = next((copy / "calibration").iterdir())
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        assemble_bundle(copy, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_pack_and_assemble(tmp_path, capsys):
    assert main(["bundle", "pack", str(DEFAULT_BUNDLE), str(tmp_path / "p")]) == 0
    assert "regenerated at assembly: weights/backbone.safetensors, onnx/full.onnx" in \
        capsys.readouterr().out
    assert main(["bundle", "pack", str(DEFAULT_BUNDLE), str(tmp_path / "p")]) == 2
    assert main(["bundle", "assemble", str(tmp_path / "p"), str(tmp_path / "b")]) == 0
    assert "files verified" in capsys.readouterr().out
    assert main(["bundle", "assemble", str(tmp_path / "nothing"), str(tmp_path / "c")]) == 2


def test_assembled_on_first_use_then_reused_and_repaired(packed, tmp_path, monkeypatch):
    from split_infer.training.assemble import assembled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out, _ = packed
    path = assembled(out)
    assert path.parent == tmp_path / "split_infer" / "bundles"
    stamp = (path / "onnx" / "full.onnx").stat().st_mtime_ns
    assert assembled(out) == path
    assert (path / "onnx" / "full.onnx").stat().st_mtime_ns == stamp  # reused, not rebuilt
    (path / "onnx" / "full.onnx").write_bytes(b"damaged")
    assert Bundle.load(assembled(out)).manifest["files"] == Bundle.load(DEFAULT_BUNDLE).manifest[
        "files"]
    with pytest.raises(BundleError, match="not a packed bundle"):
        assembled(tmp_path / "nothing")


def test_verbs_given_a_packed_bundle_assemble_it_once_into_the_cache(packed, tmp_path,
                                                                     monkeypatch, capsys):
    out, _ = packed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["bundle", "assemble", str(out)]) == 0
    printed = capsys.readouterr().out
    cached = next((tmp_path / "cache" / "split_infer" / "bundles").iterdir())
    assert str(cached) in printed
    first = (cached / "onnx" / "full.onnx").stat().st_mtime_ns
    # eval takes the packed directory and uses the cached assembly (not assembled again).
    assert main(["eval", str(out), "--images", "20", "--config",
                 Bundle.load(cached).configurations[0].id]) == 0
    assert (cached / "onnx" / "full.onnx").stat().st_mtime_ns == first
    assert len(list((tmp_path / "cache" / "split_infer" / "bundles").iterdir())) == 1


def test_pack_can_leave_out_a_method_and_its_files(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["bundle", "pack", str(DEFAULT_BUNDLE), str(out), "--drop-method",
                 "rateless"]) == 0
    bundle = assemble_bundle(out, tmp_path / "b")
    original = Bundle.load(DEFAULT_BUNDLE)
    assert {c.method for c in bundle.configurations} == \
        {c.method for c in original.configurations} - {"rateless"}
    assert not any("rateless" in f for f in bundle.manifest["files"])
    assert not any("rateless" in k for k in bundle.manifest["learned"]["configurations"])
    kept = [c for c in original.configurations if c.method != "rateless"]
    assert [c.to_dict() for c in bundle.configurations] == [c.to_dict() for c in kept]
    capsys.readouterr()
    assert main(["bundle", "pack", str(DEFAULT_BUNDLE), str(tmp_path / "q"), "--drop-method",
                 "aecnn"]) == 2
    assert "has no aecnn configurations" in capsys.readouterr().err


def test_export_copies_weights_and_computes_batchnorm_constants_in_float64():
    # Why a bundle assembles on any machine: no float32 arithmetic of the exporter's (its
    # BatchNorm folding rounded differently on another CPU) reaches the graph's constants.
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from torch import nn

    from split_infer.pipeline.torch_backend import export_onnx

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
    with torch.no_grad():
        for tensor, low, high in ((bn.running_mean, -1, 1), (bn.running_var, 0.5, 2),
                                  (bn.weight, 0.5, 2), (bn.bias, -1, 1)):
            tensor.uniform_(low, high)
    model = nn.Sequential(conv, bn, nn.ReLU6()).train()
    data = export_onnx(model, torch.zeros(1, 3, 8, 8))
    graph = onnx.load_from_string(data).graph
    constants = [numpy_helper.to_array(t).ravel() for t in graph.initializer]
    constants += [numpy_helper.to_array(n.attribute[0].t).ravel() for n in graph.node
                  if n.op_type == "Constant" and n.attribute[0].type == onnx.AttributeProto.TENSOR]

    def present(expected: np.ndarray) -> bool:
        flat = np.asarray(expected, dtype=np.float32).ravel()
        return any(c.dtype == np.float32 and np.array_equal(c, flat) for c in constants)

    var = bn.running_var.detach().double().numpy()
    scale = bn.weight.detach().double().numpy() / np.sqrt(var + 1e-3)
    shift = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * scale
    assert present(conv.weight.detach().numpy())  # verbatim, not folded
    assert present(scale) and present(shift)
    assert model.training and bn.training and "forward" not in vars(bn)  # restored
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-5)
