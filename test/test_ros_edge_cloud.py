"""Edge and cloud nodes in one process, each on its own executor, over real DDS topics.

Every check is on *what* arrives (frame by frame against an offline run of the same bundle),
never on how fast.
"""

import threading
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_fixtures import (  # noqa: F401  (fixtures: ros_context, tiny_bundle)
    random_images,
    ros_context_fixture,
    ros_domain_id,
    spin,
    tiny_bundle_fixture,
    wait_for,
    with_measurements,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray

from split_infer.bundle import BundleError
from split_infer.data import Preprocessing
from split_infer.pipeline.engine import CloudEngine, EdgeEngine, softmax
from split_infer.pipeline.images import rgb_to_image
from split_infer.ros import cloud_node, edge_node
from split_infer.ros.cloud_node import CloudNode
from split_infer.ros.common import NodeConfigError
from split_infer.ros.edge_node import EdgeNode
from split_infer.ros.messages import (
    CAMERA_QOS,
    RECEIPT_FIELDS,
    link_bytes,
    make_receipt,
    parse_receipts,
)
from split_infer.wire import decode_frame, format_string, pack

# -- helpers -------------------------------------------------------------------------------------


def make_edge(context, bundle, namespace=None, **params):
    overrides = [Parameter("bundle", value=str(bundle.path))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    kwargs = {"namespace": namespace} if namespace else {}
    return EdgeNode(context=context, parameter_overrides=overrides, **kwargs)


def make_cloud(context, bundle, **params):
    overrides = [Parameter("bundle", value=str(bundle.path))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return CloudNode(context=context, parameter_overrides=overrides)


def image_msg(rgb, sec, nanosec=0, frame_id="camera"):
    raw = rgb_to_image(rgb)
    msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                is_bigendian=raw.is_bigendian, step=raw.step)
    msg.data = raw.data
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    return msg


def stamp_of(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class Probe:
    """A test-side node: publishes camera frames, records everything the graph publishes."""

    def __init__(self, context, namespace=""):
        self.node = Node("probe", context=context, namespace=namespace or "/")
        self.features, self.results, self.receipts, self.diagnostics = [], [], [], []
        self.lock = threading.Lock()
        self.node.create_subscription(CompressedImage, "features", self._add(self.features), 50)
        self.node.create_subscription(DiagnosticArray, "results", self._add(self.results), 50)
        self.node.create_subscription(Float64MultiArray, "receipts", self._add(self.receipts),
                                      50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      self._add(self.diagnostics), 50)
        self.images = self.node.create_publisher(Image, "image", CAMERA_QOS)
        self.raw_features = self.node.create_publisher(CompressedImage, "features", 10)

    def _add(self, target):
        def callback(msg):
            with self.lock:
                target.append(msg)
        return callback

    def count(self, target):
        with self.lock:
            return len(target)

    def wait_matched(self, publisher, count=1):
        assert wait_for(lambda: publisher.get_subscription_count() >= count), "no subscriber"


def offline(bundle):
    pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
    return pre, EdgeEngine.from_bundle(bundle), CloudEngine.from_bundle(bundle)


def result_entries(msg):
    """[(class_id, score, seq, split, ratio, label, message)] of a result message."""
    out = []
    for status in msg.status:
        values = {kv.key: kv.value for kv in status.values}
        out.append((int(values["class_id"]), float(values["score"]), int(values["seq"]),
                    int(values["split_point"]), float(values["ratio"]), status.name,
                    status.message))
    return out


def assert_result_matches(msg, logits, classes, top_k):
    probabilities = softmax(logits)
    expected = list(np.argsort(-probabilities, kind="stable")[:top_k])
    entries = result_entries(msg)
    assert [e[0] for e in entries] == expected
    for rank, (class_id, score, _, _, _, label, message) in enumerate(entries, start=1):
        assert score == pytest.approx(probabilities[class_id], rel=1e-5, abs=1e-7)
        assert label == classes[class_id] and message == f"rank {rank}"


def publish_paced(probe, publisher, messages, sink, timeout=20.0):
    """Publish one message, wait until ``sink`` grew by one, repeat: with a depth-1 camera
    queue and backpressure off, no frame can be overwritten."""
    for i, msg in enumerate(messages):
        publisher.publish(msg)
        assert wait_for(lambda i=i: probe.count(sink) >= i + 1, timeout), f"frame {i} lost"


# -- tests ----------------------------------------------------------------------------------------


def test_results_match_offline_frame_by_frame(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, backpressure=False, split_point=3, ratio=8.0)
    cloud = make_cloud(ros_context, tiny_bundle, top_k=3)
    probe = Probe(ros_context)
    pre, ref_edge, ref_cloud = offline(tiny_bundle)
    ref_edge.activate(3, 8.0)
    images = random_images(8, seed=11)
    with spin(ros_context, edge, cloud, probe.node):
        probe.wait_matched(probe.images)
        messages = [image_msg(im, sec=100 + i, nanosec=7 * i) for i, im in enumerate(images)]
        publish_paced(probe, probe.images, messages, probe.results)
        assert wait_for(lambda: probe.count(probe.receipts) >= len(images))
        # The edge reads the same receipts on its own subscription.
        wait_for(lambda: edge.stats()["acknowledged"] >= len(images))

    by_stamp = {stamp_of(m): m for m in probe.results}
    assert len(by_stamp) == len(images)
    predicted = set()
    for i, image in enumerate(images):
        result = by_stamp[(100 + i, 7 * i)]
        assert result.header.frame_id == "camera"
        _, logits = ref_cloud.decode(ref_edge.encode(pre(image), seq=i, stamp_ns=0))
        assert_result_matches(result, logits, tiny_bundle.classes, top_k=3)
        entries = result_entries(result)
        assert {(e[2], e[3], e[4]) for e in entries} == {(i, 3, 8.0)}
        predicted.add(entries[0][0])
    assert len(predicted) > 1, "every image got the same class: the comparison is too weak"

    for feature in probe.features:  # the camera header rides along unchanged
        frame = decode_frame(feature.data)
        assert stamp_of(feature) == (100 + frame.seq, 7 * frame.seq)
        assert feature.format == format_string(ref_edge.active.codec.spec)
    rows = [row for msg in probe.receipts for row in parse_receipts(msg)]
    assert sorted(int(r["seq"]) for r in rows) == list(range(len(images)))
    # A receipt counts the frame as the link carries it: data, strings and every header.
    sizes = {decode_frame(f.data).seq: link_bytes(f) for f in probe.features}
    for row in rows:
        assert row["bytes"] == sizes[int(row["seq"])]
        assert (row["split_point"], row["ratio"]) == (3.0, 8.0)
        assert row["cloud_ms"] > 0 and row["send_stamp_s"] > 0 and row["receive_stamp_s"] > 0
    assert all(link_bytes(f) > len(f.data) + 100 for f in probe.features)
    assert edge.stats()["sent"] == len(images)
    assert edge.stats()["acknowledged"] == len(images)  # the receipts reached the edge


def test_backend_switches_live_to_torch_with_the_same_results(ros_context, tiny_bundle):
    """``backend:=torch`` mid-stream: both nodes rebuild their parts from the bundle's
    safetensors, keep the active configuration, and every frame still gets the offline result
    (to float rounding: eager torch and ONNX Runtime differ in the last bits, which can move a
    feature across one 8-bit quantization step)."""
    edge = make_edge(ros_context, tiny_bundle, backpressure=False, split_point=2, ratio=4.0)
    cloud = make_cloud(ros_context, tiny_bundle, top_k=3)
    probe = Probe(ros_context)
    pre, ref_edge, ref_cloud = offline(tiny_bundle)
    ref_edge.activate(2, 4.0)
    images = random_images(6, seed=12)
    messages = [image_msg(im, sec=200 + i) for i, im in enumerate(images)]
    with spin(ros_context, edge, cloud, probe.node):
        probe.wait_matched(probe.images)
        publish_paced(probe, probe.images, messages[:3], probe.results)
        for node in (edge, cloud):
            assert node.set_parameters([Parameter("backend", value="torch")])[0].successful
        assert edge.active.part.name == "torch"
        assert (edge.active.split_point, edge.active.ratio) == (2, 4.0)
        for i, msg in enumerate(messages[3:], start=3):
            probe.images.publish(msg)
            assert wait_for(lambda i=i: probe.count(probe.results) >= i + 1)
    assert edge.get_parameter("backend").value == cloud.get_parameter("backend").value == "torch"
    by_stamp = {stamp_of(m): m for m in probe.results}
    for i, image in enumerate(images):
        _, logits = ref_cloud.decode(ref_edge.encode(pre(image), seq=i, stamp_ns=0))
        entries = result_entries(by_stamp[(200 + i, 0)])
        probabilities = softmax(logits)
        assert entries[0][0] == int(np.argmax(probabilities))
        for class_id, score, *_ in entries:
            assert score == pytest.approx(probabilities[class_id], rel=2e-2, abs=2e-3)


def test_live_switching_loses_nothing_and_labels_every_frame(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, backpressure=False)
    cloud = make_cloud(ros_context, tiny_bundle, top_k=2)
    probe = Probe(ros_context)
    scheduler = Node("scheduler", context=ros_context)
    client = AsyncParameterClient(scheduler, "edge_node")
    pre, ref_edge, ref_cloud = offline(tiny_bundle)
    configs = [(2, 8.0), (3, 16.0), (3, 4.0), (2, 4.0), (3, 8.0), (2, 8.0)]
    images = random_images(40, seed=5)
    done = threading.Event()

    def camera():  # paced on the features topic, so switches land while frames flow
        for i, image in enumerate(images):
            probe.images.publish(image_msg(image, sec=500 + i))
            if not wait_for(lambda i=i: probe.count(probe.features) >= i + 1, 20.0):
                break
        done.set()

    with spin(ros_context, edge, cloud, probe.node, scheduler):
        probe.wait_matched(probe.images)
        assert client.wait_for_services(timeout_sec=20.0)
        thread = threading.Thread(target=camera)
        thread.start()
        try:
            for split, ratio in configs:
                before = probe.count(probe.features)
                future = client.set_parameters_atomically([
                    Parameter("split_point", Parameter.Type.INTEGER, split),
                    Parameter("ratio", Parameter.Type.DOUBLE, ratio)])
                assert wait_for(future.done)
                assert future.result().result.successful, future.result().result.reason
                wait_for(lambda b=before: probe.count(probe.features) >= b + 3 or done.is_set())
        finally:
            thread.join(timeout=60.0)
        assert wait_for(lambda: probe.count(probe.results) >= len(images))

    assert len(probe.features) == len(images), "a frame was lost"
    assert len(probe.results) == len(images)
    results = {stamp_of(m): m for m in probe.results}
    used = []
    for feature in probe.features:
        frame = decode_frame(feature.data)
        index = feature.header.stamp.sec - 500
        # Re-encode the same image offline with the configuration the header names: the
        # payload and codec params must be identical, so the whole frame used that config.
        ref_edge.activate(*frame.config)
        reference = decode_frame(ref_edge.encode(pre(images[index]), seq=frame.seq,
                                                 stamp_ns=frame.stamp_ns))
        assert (frame.payload, frame.params, frame.codec_id) == \
            (reference.payload, reference.params, reference.codec_id)
        assert feature.format == format_string(ref_edge.active.codec.spec)
        result = results[stamp_of(feature)]
        assert {(e[3], e[4]) for e in result_entries(result)} == {frame.config}
        _, logits = ref_cloud.decode(bytes(feature.data))
        assert_result_matches(result, logits, tiny_bundle.classes, top_k=2)
        used.append(frame.config)
    assert set(used) == {(s, float(np.float32(r))) for s, r in configs}
    # Switches happen in order: the configurations appear as runs in the requested order.
    runs = [c for i, c in enumerate(used) if i == 0 or c != used[i - 1]]
    assert runs[-1] == (2, 8.0)
    assert edge.get_parameter("split_point").value == 2
    assert edge.get_parameter("ratio").value == 8.0


def test_invalid_parameters_are_rejected_with_reasons(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, split_point=2, ratio=4.0)
    cloud = make_cloud(ros_context, tiny_bundle)
    tool = Node("tool", context=ros_context)
    edge_client = AsyncParameterClient(tool, "edge_node")
    cloud_client = AsyncParameterClient(tool, "cloud_node")

    def atomically(client, **values):
        future = client.set_parameters_atomically([Parameter(k, value=v)
                                                   for k, v in values.items()])
        assert wait_for(future.done)
        return future.result().result

    def one_by_one(client, **values):
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        assert wait_for(future.done)
        return future.result().results

    with spin(ros_context, edge, cloud, tool):
        assert edge_client.wait_for_services(timeout_sec=20.0)
        assert cloud_client.wait_for_services(timeout_sec=20.0)
        result = atomically(edge_client, split_point=2, ratio=16.0)  # (2, 16) does not exist
        assert not result.successful
        assert "valid (split_point, ratio) pairs" in result.reason and "(3, 16)" in result.reason
        # One at a time (the SetParameters service applies them separately), a ratio that
        # only exists for another split point is refused, with the way to do it right.
        (result,) = one_by_one(edge_client, ratio=16.0)
        assert not result.successful and "set_parameters_atomically" in result.reason
        assert not atomically(edge_client, ratio=-1.0).successful  # out of the declared range
        assert not atomically(edge_client, max_rate=-5.0).successful
        assert not atomically(edge_client, split_point=70000).successful
        assert not atomically(edge_client, split_point=-1).successful  # start-up only
        result = atomically(edge_client, backend="tensorrt")
        assert not result.successful and "tensorrt" in result.reason
        assert not atomically(edge_client, bundle="/elsewhere").successful  # read-only
        assert not atomically(edge_client, split_point="3").successful  # wrong type
        # A rejected atomic call changes nothing, even its valid parts.
        assert not atomically(edge_client, max_rate=5.0, backend="tensorrt").successful
        assert edge.get_parameter("max_rate").value == 0.0
        assert (edge.active.split_point, edge.active.ratio) == (2, 4.0)
        # Valid changes still go through, alone or together.
        assert all(r.successful for r in one_by_one(edge_client, split_point=3))
        assert (edge.active.split_point, edge.active.ratio) == (3, 4.0)
        assert atomically(edge_client, max_rate=5.0, backpressure=False).successful
        assert edge.get_parameter("max_rate").value == 5.0

        assert not atomically(cloud_client, top_k=0).successful
        assert not atomically(cloud_client, top_k=len(tiny_bundle.classes) + 1).successful
        assert not atomically(cloud_client, backend="tensorrt").successful
        assert not atomically(cloud_client, edge_namespaces=["/x"]).successful  # read-only
        assert atomically(cloud_client, top_k=1).successful


def test_cloud_refuses_frames_captured_too_long_ago(ros_context, tiny_bundle):
    """max_frame_age: a frame whose camera stamp is older than the bound on arrival is refused
    as stale (counted, still acknowledged); a fresh one is answered."""
    cloud = make_cloud(ros_context, tiny_bundle, max_frame_age=1.0)
    probe = Probe(ros_context)
    pre, ref_edge, _ = offline(tiny_bundle)
    x = pre(random_images(1, seed=30)[0])
    now_ns = time.time_ns()
    with spin(ros_context, cloud, probe.node):
        probe.wait_matched(probe.raw_features)
        for seq, age_s in enumerate((5.0, 0.0)):
            msg = CompressedImage(format=format_string(ref_edge.active.codec.spec))
            msg.data = ref_edge.encode(x, seq, now_ns + seq)
            captured = now_ns - int(age_s * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(captured, 10**9)
            probe.raw_features.publish(msg)
            assert wait_for(lambda seq=seq: probe.count(probe.receipts) >= seq + 1)
        assert wait_for(lambda: probe.count(probe.results) >= 1)
    (stream,) = cloud.stats().values()
    assert stream["rejects"] == {"stale": 1} and stream["frames"] == 1
    assert [int(e[2]) for e in result_entries(probe.results[0])][:1] == [1]


def test_two_robots_get_their_own_results(ros_context, tiny_bundle):
    edges = [make_edge(ros_context, tiny_bundle, namespace=ns, backpressure=False,
                       split_point=split, ratio=ratio)
             for ns, split, ratio in (("/r1", 2, 4.0), ("/r2", 3, 16.0))]
    cloud = make_cloud(ros_context, tiny_bundle, edge_namespaces=["/r1", "/r2"], top_k=1)
    probes = [Probe(ros_context, "/r1"), Probe(ros_context, "/r2")]
    pre, ref_edge, ref_cloud = offline(tiny_bundle)
    images = {"/r1": random_images(4, seed=21), "/r2": random_images(4, seed=22)}
    with spin(ros_context, *edges, cloud, *(p.node for p in probes)):
        for probe in probes:
            probe.wait_matched(probe.images)
        for i in range(4):  # interleave the robots
            for base, (ns, probe) in zip((1000, 2000), zip(("/r1", "/r2"), probes)):
                probe.images.publish(image_msg(images[ns][i], sec=base + i))
                assert wait_for(lambda p=probe, i=i: p.count(p.results) >= i + 1)
        for probe in probes:
            assert wait_for(lambda p=probe: p.count(p.receipts) >= 4)

    for (ns, base, config), probe in zip((("/r1", 1000, (2, 4.0)), ("/r2", 2000, (3, 16.0))),
                                         probes):
        assert sorted(m.header.stamp.sec for m in probe.results) == [base + i for i in range(4)]
        assert len(probe.receipts) == 4
        ref_edge.activate(*config)
        for msg in probe.results:
            i = msg.header.stamp.sec - base
            _, logits = ref_cloud.decode(ref_edge.encode(pre(images[ns][i]), 0, 0))
            assert_result_matches(msg, logits, tiny_bundle.classes, top_k=1)
            assert msg.status[0].hardware_id == ns
    stats = cloud.stats()
    assert stats["/r1/features"]["frames"] == 4 and stats["/r2/features"]["frames"] == 4
    assert stats["/r1/features"]["last_config"] == (2, 4.0)


def test_malformed_frames_are_counted_and_the_cloud_keeps_working(ros_context, tiny_bundle):
    cloud = make_cloud(ros_context, tiny_bundle)
    probe = Probe(ros_context)
    pre, ref_edge, _ = offline(tiny_bundle)
    ref_edge.activate(2, 8.0)
    x = pre(random_images(1, seed=3)[0])
    stamp = time.time_ns()
    good = ref_edge.encode(x, seq=1, stamp_ns=stamp)
    spec = ref_edge.active.codec.spec
    features = ref_edge.features(x)
    unknown = pack(ref_edge.active.codec, features, split_point=7, ratio=8.0, seq=2,
                   stamp_ns=stamp + 1)
    other = ref_edge.activate(2, 4.0)  # right configuration id, wrong codec for it
    wrong_codec = pack(other.codec, ref_edge.features(x), split_point=2, ratio=8.0, seq=3,
                       stamp_ns=stamp + 2)
    corrupt = bytearray(ref_edge.encode(x, seq=4, stamp_ns=stamp + 3))
    corrupt[60] ^= 0xFF
    # a minute old and no newer in seq than what was served: a recording, not a sender
    # whose clock stepped back (that one's seq moves on; test_freshness.py)
    stale = ref_edge.encode(x, seq=0, stamp_ns=stamp - 60 * 10**9)
    ref_edge.activate(2, 8.0)
    after = ref_edge.encode(x, seq=6, stamp_ns=stamp + 4)

    def frame(data, fmt=None, sec=1):
        msg = CompressedImage(format=format_string(spec) if fmt is None else fmt)
        msg.data = bytes(data)
        msg.header.stamp.sec = sec
        return msg

    sequence = [
        (frame(good), None),
        (frame(good[:-5]), "truncated"),
        (frame(b""), "truncated"),
        (frame(corrupt), "crc_mismatch"),
        (frame(good), "replayed"),
        (frame(stale), "replayed"),
        (frame(unknown), "unknown_config"),
        (frame(wrong_codec), "unknown_codec"),
        (frame(good, fmt="jpeg"), "bad_format"),
        (frame(good, fmt="split_infer/9; quant:bits=8"), "bad_version"),
        (frame(b"SPIF" + bytes(60)), "bad_version"),
        (frame(after, sec=2), None),
    ]
    expected: dict[str, int] = {}
    for _, reason in sequence:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    with spin(ros_context, cloud, probe.node):
        probe.wait_matched(probe.raw_features)
        def handled():
            stream = cloud.stats()["/features"]
            return stream["frames"] + sum(stream["rejects"].values())

        for msg, _ in sequence:
            # One at a time: the reliable depth-4 queue must not overflow, whatever the load.
            before = handled()
            probe.raw_features.publish(msg)
            assert wait_for(lambda before=before: handled() > before)
        assert wait_for(lambda: probe.count(probe.results) >= 2)
        assert wait_for(lambda: sum(cloud.stats()["/features"]["rejects"].values())
                        >= sum(expected.values()))

        def reported():
            with probe.lock:
                messages = list(probe.diagnostics)
            for msg in reversed(messages):
                for status in msg.status:
                    if status.name.endswith("stream /features"):
                        return {kv.key: kv.value for kv in status.values}
            return {}

        assert wait_for(lambda: reported().get("rejected") == str(sum(expected.values())))
    stats = cloud.stats()["/features"]
    assert stats["rejects"] == expected
    assert stats["frames"] == 2
    assert sorted(m.header.stamp.sec for m in probe.results) == [1, 2]
    values = reported()
    for reason, count in expected.items():
        assert values[f"rejects.{reason}"] == str(count)
    # Receipts for every frame whose header decoded, except replays: good, unknown_config,
    # unknown_codec and the last one.
    seqs = sorted(int(row["seq"]) for m in probe.receipts for row in parse_receipts(m))
    assert seqs == [1, 2, 3, 6]
    assert len(RECEIPT_FIELDS) == len(probe.receipts[0].data)


def test_edge_counts_bad_images_and_keeps_going(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, backpressure=False)
    probe = Probe(ros_context)
    good = image_msg(random_images(1, seed=9)[0], sec=9)
    bad_encoding = image_msg(random_images(1)[0], sec=1)
    bad_encoding.encoding = "yuv_unknown"
    empty = Image(height=0, width=0, encoding="rgb8", step=0)
    short = image_msg(random_images(1)[0], sec=3)
    short.data = bytes(short.data)[:-1]
    huge = Image(height=9000, width=1, encoding="mono8", step=1)
    huge.data = bytes(9000)
    with spin(ros_context, edge, probe.node):
        probe.wait_matched(probe.images)
        for msg in (bad_encoding, empty, short, huge):
            before = edge.stats()["received"]
            probe.images.publish(msg)
            assert wait_for(lambda b=before: edge.stats()["received"] > b)
        probe.images.publish(good)
        assert wait_for(lambda: probe.count(probe.features) >= 1)
    assert edge.stats()["drops"] == {"image_unsupported_encoding": 1, "image_empty": 1,
                                     "image_size_mismatch": 1, "image_too_large": 1}
    assert edge.stats()["sent"] == 1 and stamp_of(probe.features[0]) == (9, 0)


def test_compressed_input(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, backpressure=False, input_type="compressed")
    probe = Probe(ros_context)
    publisher = probe.node.create_publisher(CompressedImage, "image/compressed", CAMERA_QOS)
    image = random_images(1, seed=4)[0]
    _, png = cv2.imencode(".png", image[:, :, ::-1].copy())
    pre, ref_edge, _ = offline(tiny_bundle)
    with spin(ros_context, edge, probe.node):
        probe.wait_matched(publisher)
        garbage = CompressedImage(format="png")
        garbage.data = b"not an image"
        publisher.publish(garbage)
        assert wait_for(lambda: edge.stats()["received"] >= 1)
        msg = CompressedImage(format="png")
        msg.data = png.tobytes()
        msg.header.stamp.sec = 42
        publisher.publish(msg)
        assert wait_for(lambda: probe.count(probe.features) >= 1)
    assert edge.stats()["drops"] == {"image_unsupported_format": 1}
    frame = decode_frame(probe.features[0].data)
    ref_edge.activate(frame.split_point, frame.ratio)
    reference = decode_frame(ref_edge.encode(pre(image), 0, 0))
    assert frame.payload == reference.payload and stamp_of(probe.features[0]) == (42, 0)


def test_backpressure_holds_frames_until_receipts_arrive(ros_context, tiny_bundle):
    edge = make_edge(ros_context, tiny_bundle, max_in_flight=2, ack_timeout=60.0)
    probe = Probe(ros_context)
    receipts = probe.node.create_publisher(Float64MultiArray, "receipts", 10)
    images = random_images(6, seed=8)

    def send(i):
        before = edge.stats()["received"]
        probe.images.publish(image_msg(images[i], sec=i))
        assert wait_for(lambda: edge.stats()["received"] > before)

    with spin(ros_context, edge, probe.node):  # no cloud: nothing acknowledges the frames
        probe.wait_matched(probe.images)
        probe.wait_matched(receipts)
        for i in range(4):
            send(i)
        assert wait_for(lambda: probe.count(probe.features) >= 2)
        assert edge.stats()["drops"] == {"backpressure_in_flight": 2}
        # A receipt for frame 0 frees one slot (a malformed one is ignored, not raised).
        bad = Float64MultiArray()
        bad.data = [1.0, 2.0]
        receipts.publish(bad)
        receipts.publish(make_receipt([0, 100, 1.0, 1.0, 2, 4.0, 1.0]))
        assert wait_for(lambda: edge.stats()["acknowledged"] == 1)
        send(4)
        send(5)
        assert wait_for(lambda: probe.count(probe.features) >= 3)
    assert edge.stats()["drops"] == {"backpressure_in_flight": 3}
    assert edge.stats()["ignored"] == {"bad_receipt": 1}
    assert [decode_frame(f.data).seq for f in probe.features] == [0, 1, 2]


def test_edge_only_fallback_classifies_held_back_frames_on_the_robot(ros_context, tiny_bundle,
                                                                    tmp_path):
    """With no cloud acknowledging anything (an outage), frames that backpressure holds back
    are classified by the bundle's whole model on the edge and published on ``results``."""
    import torch

    from split_infer.pipeline.backends import OrtBackend
    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    model = load_backbone(tiny_bundle)
    full = export_onnx(model, torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    with pytest.raises(NodeConfigError, match="client_only"):
        make_edge(ros_context, tiny_bundle, fallback="edge_only")
    edge = make_edge(ros_context, bundle, max_in_flight=1, ack_timeout=60.0,
                     fallback="edge_only")
    probe = Probe(ros_context)
    pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
    reference = OrtBackend(full)
    images = random_images(5, seed=9)
    with spin(ros_context, edge, probe.node):
        probe.wait_matched(probe.images)
        for i, image in enumerate(images):
            probe.images.publish(image_msg(image, sec=300 + i))
            assert wait_for(lambda i=i: edge.stats()["received"] > i)
        assert wait_for(lambda: probe.count(probe.results) >= len(images) - 1)
        (result,) = edge.set_parameters([Parameter("fallback", value="drop")])
        assert result.successful
        probe.images.publish(image_msg(images[0], sec=400))
        assert wait_for(lambda: edge.stats()["received"] == len(images) + 1)
    stats = edge.stats()
    assert stats["sent"] == 1 and stats["edge_only"] == len(images) - 1  # one slot in flight
    assert stats["drops"] == {"backpressure_in_flight": 1}  # after switching back to drop
    for msg in probe.results:
        i = msg.header.stamp.sec - 300
        assert 1 <= i < len(images)
        entries = result_entries(msg)
        assert {(e[3], e[4]) for e in entries} == {(-1, 1.0)}  # no cut: the whole model
        assert_result_matches(msg, reference(pre(images[i]))[0], bundle.classes, top_k=5)


def test_the_edge_only_configuration_is_set_like_a_split(ros_context, tiny_bundle, tmp_path):
    """``split_point`` -1 with ``ratio`` 1, set atomically as the scheduler does, runs the whole
    model on every frame and sends nothing; a split set the same way sends again."""
    import torch

    from split_infer.pipeline.parts import load_backbone
    from split_infer.pipeline.torch_backend import export_onnx

    full = export_onnx(load_backbone(tiny_bundle), torch.zeros(1, 3, 32, 32))
    bundle = with_measurements(tiny_bundle, tmp_path / "bundle", lambda c: {},
                               files={"onnx/full.onnx": full},
                               client_only={"onnx": "onnx/full.onnx"})
    plain = make_edge(ros_context, tiny_bundle)
    refused = plain.set_parameters_atomically([Parameter("split_point", value=-1),
                                               Parameter("ratio", value=1.0)])
    assert not refused.successful and "client_only" in refused.reason
    plain.destroy_node()
    edge = make_edge(ros_context, bundle)
    probe = Probe(ros_context)
    images = random_images(4, seed=5)
    with spin(ros_context, edge, probe.node):
        probe.wait_matched(probe.images)
        result = edge.set_parameters_atomically([Parameter("split_point", value=-1),
                                                 Parameter("ratio", value=1.0)])
        assert result.successful, result.reason
        for i, image in enumerate(images):
            probe.images.publish(image_msg(image, sec=500 + i))
            assert wait_for(lambda i=i: edge.stats()["received"] > i)
        assert wait_for(lambda: probe.count(probe.results) >= len(images))
        assert edge.stats()["sent"] == 0 and edge.stats()["edge_only"] == len(images)
        back = edge.set_parameters_atomically([Parameter("split_point", value=3),
                                               Parameter("ratio", value=8.0)])
        assert back.successful, back.reason
        probe.images.publish(image_msg(images[0], sec=600))
        assert wait_for(lambda: edge.stats()["sent"] == 1)
    for msg in probe.results:
        assert {(e[3], e[4]) for e in result_entries(msg)} == {(-1, 1.0)}


def test_startup_errors_are_clear(ros_context, tiny_bundle, tmp_path):
    cases = [
        ({}, NodeConfigError, "'bundle' is required"),
        ({"bundle": str(tmp_path)}, BundleError, "manifest.json"),
            ({"bundle": str(tiny_bundle.path), "backend": "tensorrt"}, NodeConfigError,
             "tensorrt"),
        ({"bundle": str(tiny_bundle.path), "preload": ["9:1.0"]}, NodeConfigError, "9:1.0"),
        ({"bundle": str(tiny_bundle.path), "split_point": 2, "ratio": 16.0}, NodeConfigError,
         "(3, 16)"),
        ({"bundle": str(tiny_bundle.path), "input_type": "video"}, NodeConfigError, "video"),
    ]
    for params, error, text in cases:
        with pytest.raises(error) as info:
            EdgeNode(context=ros_context,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        assert text in str(info.value)
    with pytest.raises(NodeConfigError, match="duplicates"):
        make_cloud(ros_context, tiny_bundle, edge_namespaces=["/a", "/a"])
    with pytest.raises(NodeConfigError, match="edge_namespaces"):
        make_cloud(ros_context, tiny_bundle, edge_namespaces=["bad name!"])
    # Preloading a subset: only those configurations can be activated.
    edge = make_edge(ros_context, tiny_bundle, preload=["3:8", "3:16"])
    try:
        # Unmeasured configurations: the start is the highest ratio (the smallest frames).
        assert (edge.active.split_point, edge.active.ratio) == (3, 16.0)
        assert not edge.set_parameters_atomically([Parameter("split_point", value=2)]).successful
        assert edge.set_parameters_atomically([Parameter("ratio", value=8.0)]).successful
    finally:
        edge.destroy_node()


@pytest.mark.parametrize("module", [edge_node, cloud_node])
def test_main_exits_nonzero_on_a_bad_bundle(module, tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id()))
    assert module.main(["--ros-args", "-p", f"bundle:={tmp_path}"]) == 2
    assert module.main(["--ros-args", "-p", "backend:=tensorrt",
                        "-p", f"bundle:={tmp_path}"]) == 2


def test_the_estimate_and_its_lower_bound_flag_arrive_together(ros_context, tiny_bundle):
    """One message carries both, so the edge never paces by a lower bound (the monitor used
    to publish them on two topics, and the edge paired a new estimate with an old flag)."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    from split_infer.ros.messages import ESTIMATE_QOS, make_estimate, parse_estimate

    assert parse_estimate(make_estimate(3e6, True, 12.0)) == (3e6, True, 12.0, False)
    assert parse_estimate(make_estimate(3e6, False)) == (3e6, False, None, False)
    assert parse_estimate(make_estimate(4e3, False, stale=True)).stale
    old = Float64MultiArray(data=[2e6, 1.0, 5.0])  # recorded before the silence flag existed
    old.layout.dim = [MultiArrayDimension(label="bandwidth_bps,lower_bound,rtt_ms", size=3,
                                          stride=3)]
    assert parse_estimate(old) == (2e6, True, 5.0, False)
    with pytest.raises(ValueError, match="not an estimate"):
        parse_estimate(Float64MultiArray(data=[1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="positive"):
        parse_estimate(make_estimate(float("nan"), False))
    edge = make_edge(ros_context, tiny_bundle)
    probe = Node("estimator", context=ros_context)
    publisher = probe.create_publisher(Float64MultiArray, "bandwidth_estimate", ESTIMATE_QOS)
    bandwidth = edge.pipeline._pressure.bandwidth_bps
    with spin(ros_context, edge, probe):
        assert wait_for(lambda: publisher.get_subscription_count() >= 1)
        publisher.publish(make_estimate(5e6, False))
        assert wait_for(lambda: bandwidth(time.monotonic()) == 5e6)
        publisher.publish(make_estimate(1e5, True))  # a lower bound: never used for pacing
        publisher.publish(make_estimate(2e6, False))
        assert wait_for(lambda: bandwidth(time.monotonic()) == 2e6)
        bad = make_estimate(1e6, False)
        bad.data = [1e6, 0.0]
        publisher.publish(bad)
        assert wait_for(lambda: edge.stats()["ignored"].get("bad_bandwidth") == 1)


def test_the_demos_slow_robot_reports_its_stretched_time_and_camera_share(
        ros_context, tiny_bundle, monkeypatch):
    """The demo's stand-in for a weak robot reports the time per frame it emulates (what the
    scheduler plans with), not the host's; and the camera share comes from the frames' stamps."""
    from rclpy.serialization import serialize_message

    from split_infer.tools.demo.graph import SlowRobotEdgeNode

    edge = SlowRobotEdgeNode(6.0, context=ros_context, parameter_overrides=[
        Parameter("bundle", value=str(tiny_bundle.path))])
    try:
        outcomes, published = [], {}
        process = edge.pipeline.process

        def recording(*args, **kwargs):
            outcomes.append(process(*args, **kwargs))
            return outcomes[-1]

        monkeypatch.setattr(edge.pipeline, "process", recording)
        monkeypatch.setattr(edge._metrics, "publish", lambda **values: published.update(values))
        image = np.zeros((32, 32, 3), np.uint8)
        # A 10-Hz camera whose frame at 0.3 s never reached the node.
        for stamp in (0.0, 0.1, 0.2, 0.4, 0.5, 0.6):
            edge._on_image(serialize_message(image_msg(image, 100, int(stamp * 1e9))))
        edge._report()
        sent = [o for o in outcomes if o.kind == "sent"]
        assert sent, [o.reason for o in outcomes]
        assert published["edge_ms"] == pytest.approx(
            6.0 * 1e3 * sum(o.edge_s for o in sent) / len(sent))
        assert published["camera_share"] == pytest.approx(0.1 / 0.12)
        assert published["received_fps"] > 0
    finally:
        edge.destroy_node()


def test_a_switch_is_answered_while_frames_take_longer_than_they_arrive(
        ros_context, tiny_bundle, monkeypatch):
    """Frames that each take longer than the camera interval (a weak robot) must not hold
    back the scheduler's requests: the node works on the newest frame only (the others are
    lost in its depth-1 camera queue) and answers the request after at most the frame in
    hand and the one waiting. On rclpy's EventsExecutor, which queues one event per message,
    the request waited behind every frame that had arrived (common.executor_kind)."""
    edge = make_edge(ros_context, tiny_bundle)
    probe = Probe(ros_context)
    tool = Node("switcher", context=ros_context)
    process = edge.pipeline.process
    frames_worked = [0]

    def slow(*args, **kwargs):
        time.sleep(0.2)  # 5 frames a second at most, against a 50-Hz camera
        frames_worked[0] += 1
        return process(*args, **kwargs)

    monkeypatch.setattr(edge.pipeline, "process", slow)
    client = AsyncParameterClient(tool, "edge_node")
    images = random_images(4, seed=9)
    streaming, answered = threading.Event(), threading.Event()
    with spin(ros_context, edge, probe.node, tool):
        probe.wait_matched(probe.images)
        assert client.wait_for_services(20.0)
        images_published = [0]

        def camera():  # 50 Hz for up to 20 s, or until the request has been answered
            for i in range(1000):
                probe.images.publish(image_msg(images[i % len(images)], sec=900 + i))
                images_published[0] = i + 1
                if i == 25:
                    streaming.set()
                if answered.wait(0.02):
                    break

        thread = threading.Thread(target=camera)
        thread.start()
        try:
            assert streaming.wait(20.0)
            before = frames_worked[0]
            future = client.set_parameters([Parameter("max_rate", value=20.0)])
            assert wait_for(future.done), "the request was never answered"
            answered.set()
            behind = frames_worked[0] - before
            assert behind <= 3, f"the request waited behind {behind} frames"
            assert future.result().results[0].successful
        finally:
            answered.set()
            thread.join()
        assert edge.pipeline.settings.max_rate == 20.0
        published = images_published[0]
        stats = edge.stats()
        assert 1 <= stats["received"] < published  # the slow robot took the newest only
