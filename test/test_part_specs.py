"""Part specs: configurations whose parts are cut from the bundle's one tapped whole model and
chained with small files, so the backbone exists once however many configurations use it."""

import numpy as np
import pytest

from split_infer.bundle import Bundle, BundleError, part_components
from split_infer.pipeline.backends import OrtBackend
from split_infer.pipeline.onnx_parts import TappedModel, chain
from split_infer.pipeline.parts import PartLoader, part_bytes
from split_infer.tools.synthetic_bundle import build_tiny_bundle, with_measurements


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="module")
def cut(tiny, tmp_path_factory):
    """The same configurations with every part a segment of onnx/full.onnx."""
    return with_measurements(
        tiny, tmp_path_factory.mktemp("cut") / "bundle",
        lambda c: {"edge_onnx": f"model[0:{c.split_point}]",
                   "cloud_onnx": f"model[{c.split_point}:]"})


def test_specs_parse_into_files_and_segments():
    assert part_components("onnx/split4_edge.onnx") == ["onnx/split4_edge.onnx"]
    assert part_components("model[0:7]+onnx/enc.onnx") == [(0, 7), "onnx/enc.onnx"]
    assert part_components("onnx/dec.onnx + model[7:]") == ["onnx/dec.onnx", (7, None)]
    for bad in ("model[5:3]", "model[x:]", "onnx/a.onnx++model[0:1]", "model[0:2", ""):
        with pytest.raises(BundleError):
            part_components(bad)


def test_segment_parts_compute_what_the_exported_parts_compute(tiny, cut):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    files, segments = PartLoader(tiny), PartLoader(cut)
    for a, b in zip(tiny.configurations, cut.configurations, strict=True):
        features = files.edge(a)(x)
        np.testing.assert_allclose(segments.edge(b)(x), features, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(segments.cloud(b)(features), files.cloud(a)(features),
                                   rtol=1e-5, atol=1e-4)


def test_chained_segments_equal_the_segment_they_cover(tiny):
    tapped = TappedModel(tiny.read("onnx/full.onnx"))
    first, last = tapped.split_points[0], tapped.split_points[-1]
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    head = OrtBackend(tapped.part(0, first))(x)
    whole = OrtBackend(tapped.part(first, None))(head)
    two = OrtBackend(chain([tapped.part(first, last), tapped.part(last, None)]))(head)
    np.testing.assert_allclose(two, whole, rtol=1e-5, atol=1e-5)
    only = tapped.part(0, first)
    assert chain([only]) is only


def test_specs_are_checked_when_the_bundle_loads(cut, tmp_path):
    spec = cut.configurations[0].edge_onnx
    assert part_bytes(cut, spec)  # the segment is cut from the verified whole model
    with pytest.raises(BundleError, match=r"absent\.onnx"):
        Bundle.load(with_measurements(
            cut, tmp_path / "a", lambda c: {"edge_onnx": "model[0:1]+onnx/absent.onnx"}).path)
    manifest = cut.base_manifest()
    del manifest["model"]["onnx"]
    with pytest.raises(BundleError, match="tapped"):
        Bundle.load(with_measurements(cut, tmp_path / "b", lambda c: {},
                                      model=manifest["model"]).path)
