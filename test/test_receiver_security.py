"""Forged and replayed frames against real edge and cloud nodes, frame authentication, and
bundle files that change after load (issue: frames nobody can forge or replay into a DoS)."""

from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
import pytest
from ros_fixtures import (  # noqa: F401
    random_images,
    ros_context_fixture,
    spin,
    tiny_bundle_fixture,
    wait_for,
    with_measurements,
)
from sensor_msgs.msg import CompressedImage
from test_ros_edge_cloud import Probe, image_msg, make_cloud, make_edge

from split_infer.bundle import Bundle, BundleError
from split_infer.errors import FrameError
from split_infer.frame_auth import (
    TRAILER_BYTES,
    KeyFileError,
    load_key_file,
    sign,
    single_key,
    verify,
)
from split_infer.pipeline.edge import EdgePipeline
from split_infer.pipeline.engine import CloudEngine, EdgeEngine
from split_infer.ros.common import NodeConfigError
from split_infer.wire import decode_frame, encode_frame

HOUR_NS = 3600 * 10**9


def write_keys(path, lines, mode=0o600):
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, mode)
    return path


def _feed(probe, images, start_sec, timeout=5.0):
    """Publish camera frames one at a time, each waited for (a result, or the timeout);
    returns how many got a result."""
    got = 0
    for i, image in enumerate(images):
        before = probe.count(probe.results)
        probe.images.publish(image_msg(image, sec=start_sec + i))
        if wait_for(lambda before=before: probe.count(probe.results) > before, timeout):
            got += 1
    return got


def _unsigned(signed: bytes) -> bytes:
    """The version-1 frame inside a signed one (trailer off, version 1, CRC re-sealed)."""
    body = signed[:4] + b"\x01" + signed[5:-TRAILER_BYTES - 4]
    return body + struct.pack("<I", zlib.crc32(body))


def _forged_future_copy(data: bytes) -> bytes:
    """A copy of a genuine frame with its wire stamp an hour ahead and the CRC recomputed."""
    frame = decode_frame(data)
    return encode_frame(type(frame)(**{**frame.__dict__, "stamp_ns": frame.stamp_ns + HOUR_NS}))


def _results_after(context, bundle, event) -> int:
    """Edge and cloud nodes: 40 camera frames (all must get results), then ``event(edge,
    cloud, probe)``, then 40 more; returns how many of those got a result."""
    edge = make_edge(context, bundle, backpressure=False)
    cloud = make_cloud(context, bundle)
    probe = Probe(context)
    with spin(context, edge, cloud, probe.node):
        probe.wait_matched(probe.images)
        assert _feed(probe, random_images(40, seed=1), 100) == 40
        event(edge, cloud, probe)
        return _feed(probe, random_images(40, seed=2), 200)


@pytest.mark.realtime
def test_one_forged_future_frame_does_not_cut_the_robot_off(ros_context, tiny_bundle):
    def forge(edge, cloud, probe):
        genuine = probe.features[-1]
        forged = CompressedImage(header=genuine.header, format=genuine.format)
        forged.data = _forged_future_copy(bytes(genuine.data))
        probe.raw_features.publish(forged)
        assert wait_for(lambda: cloud.stats()["/features"]["rejects"].get("future") == 1)

    assert _results_after(ros_context, tiny_bundle, forge) >= 36


@pytest.mark.realtime
def test_a_clock_step_back_on_the_edge_does_not_cut_the_robot_off(ros_context, tiny_bundle):
    def step_back(edge, cloud, probe):
        clock = edge.pipeline._clock_ns  # an NTP step: the robot's clock goes back a minute
        edge.pipeline._clock_ns = lambda: clock() - 60 * 10**9

    assert _results_after(ros_context, tiny_bundle, step_back) >= 36


# -- authentication ------------------------------------------------------------------------------

KEY_1 = "11" * 32
KEY_2 = "22" * 32


def test_key_files_are_checked(tmp_path):
    keys = load_key_file(write_keys(tmp_path / "k", ["# robots", f"7 {KEY_1} /r1", f"8 {KEY_2}"]))
    assert sorted(keys.keys) == [7, 8] and keys.keys[7].allows("/r1")
    assert not keys.keys[7].allows("/r2") and keys.keys[8].allows("/r2")
    assert single_key(keys, 8).key_id == 8
    with pytest.raises(KeyFileError, match="holds 2 keys"):
        single_key(keys)
    for lines, message in [([f"1 {KEY_1}", f"1 {KEY_2}"], "appears twice"),
                           (["x " + KEY_1], "not an integer"), (["1 zz"], "not hexadecimal"),
                           (["1 abcd"], "at least 16 bytes"), (["# nothing"], "holds no key"),
                           (["5"], "expected")]:
        with pytest.raises(KeyFileError, match=message):
            load_key_file(write_keys(tmp_path / "bad", lines))
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(write_keys(tmp_path / "open", [f"1 {KEY_1}"], mode=0o644))
    with pytest.raises(KeyFileError, match="No such file"):
        load_key_file(tmp_path / "missing")


def test_signed_frames_verify_and_any_change_is_refused(tiny_bundle, tmp_path):
    keys = load_key_file(write_keys(tmp_path / "k", [f"7 {KEY_1} /r1", f"8 {KEY_2} /r2"]))
    engine = EdgeEngine.from_bundle(tiny_bundle)
    frame = engine.encode(tiny_bundle.preprocessing(random_images(1)[0]), seq=3, stamp_ns=9)
    signed = sign(frame, keys.keys[7])
    assert len(signed) == len(frame) + TRAILER_BYTES and signed[4] == 2
    body = verify(signed, keys, "/r1")
    header = decode_frame(body)
    assert header == decode_frame(signed)  # an unauthenticating receiver decodes it too
    assert (header.seq, header.stamp_ns) == (3, 9)
    cloud = CloudEngine.from_bundle(tiny_bundle)
    np.testing.assert_array_equal(cloud.decode(body)[1], cloud.decode(frame)[1])

    def reason(data, namespace="/r1"):
        with pytest.raises(FrameError) as info:
            verify(data, keys, namespace)
        assert info.value.reason == "unauthenticated"
        return info.value.message

    assert "not signed" in reason(frame)  # an unsigned (version 1) frame
    assert "does not match" in reason(sign(frame, load_key_file(write_keys(
        tmp_path / "other", [f"7 {KEY_2}"])).keys[7]))  # the wrong key under id 7
    assert "may not sign for" in reason(signed, "/r2")  # r1's key on r2's stream
    for position in (10, 40, len(signed) - TRAILER_BYTES - 2, len(signed) - 1):
        tampered = bytearray(signed)
        tampered[position] ^= 0x01
        assert "does not match" in reason(bytes(tampered))
    assert _unsigned(signed) == frame
    unknown = signed[:-TRAILER_BYTES] + struct.pack("<I", 9) + bytes(16)
    assert "unknown key id 9" in reason(unknown)


@pytest.mark.realtime
def test_authenticating_cloud_serves_signed_frames_and_counts_the_rest(ros_context, tiny_bundle,
                                                                       tmp_path):
    edge_keys = write_keys(tmp_path / "edge.keys", [f"7 {KEY_1}"])
    cloud_keys = write_keys(tmp_path / "cloud.keys", [f"7 {KEY_1} /", f"8 {KEY_2}"])
    edge = make_edge(ros_context, tiny_bundle, backpressure=False,
                     auth_key_file=str(edge_keys))
    cloud = make_cloud(ros_context, tiny_bundle, auth_key_file=str(cloud_keys))
    probe = Probe(ros_context)
    with spin(ros_context, edge, cloud, probe.node):
        probe.wait_matched(probe.images)
        assert _feed(probe, random_images(5, seed=1), 100) == 5
        genuine = probe.features[-1]
        assert genuine.format.startswith("split_infer/2; ")
        wrong_key = sign(_unsigned(bytes(genuine.data)), load_key_file(write_keys(
            tmp_path / "x", [f"7 {KEY_2}"])).keys[7])  # right id, wrong secret
        modified = bytearray(genuine.data)
        modified[45] ^= 0x10
        for data in (wrong_key, bytes(modified), _unsigned(bytes(genuine.data))):
            msg = CompressedImage(header=genuine.header, format=genuine.format)
            msg.data = data
            probe.raw_features.publish(msg)
        assert wait_for(lambda: cloud.stats()["/features"]["rejects"].get(
            "unauthenticated") == 3), cloud.stats()
        assert _feed(probe, random_images(5, seed=2), 200) == 5
    with pytest.raises(NodeConfigError, match="chmod 600"):
        make_cloud(ros_context, tiny_bundle, auth_key_file=str(
            write_keys(tmp_path / "open", [f"1 {KEY_1}"], mode=0o644)))


def test_without_authentication_the_bytes_are_as_before(tiny_bundle):
    pipeline = EdgePipeline(tiny_bundle, tiny_bundle.configurations, (3, 8.0),
                            clock_ns=lambda: 5)
    reference = EdgeEngine.from_bundle(tiny_bundle)
    reference.activate(3, 8.0)
    image = random_images(1)[0]
    assert pipeline.process(image, now=0.0).data == reference.encode(
        pipeline.preprocessing(image), seq=0, stamp_ns=5)
    assert pipeline.wire_version == 1


# -- bundle files that change after load ------------------------------------------------------


def test_a_bundle_file_swapped_after_load_is_never_run(tiny_bundle, tmp_path):
    import shutil

    copy = Bundle.load(shutil.copytree(tiny_bundle.path, tmp_path / "bundle"))
    config = copy.configuration(3, 8.0)
    EdgeEngine.from_bundle(copy, [config])  # fine while the files are as loaded
    other = copy.configuration(2, 4.0)
    for relative in (config.edge_onnx, config.calibration):
        path = copy.file(relative)
        original = path.read_bytes()
        path.write_bytes(copy.file(other.edge_onnx if relative == config.edge_onnx
                                   else other.calibration).read_bytes())
        with pytest.raises(BundleError, match="changed since the bundle was loaded"):
            EdgeEngine.from_bundle(copy, [config])
        path.write_bytes(original)
    fill = copy.configuration(3, 16.0)
    copy.file(fill.fill).write_bytes(b"not safetensors")
    with pytest.raises(BundleError, match=fill.fill):
        copy.fill_values(fill)
    assert stat.S_ISREG(os.stat(copy.file(fill.fill)).st_mode)
