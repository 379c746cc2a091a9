"""A middle stage of an n-stage chain: wire frames in, layers (s_{i-1}, s_i], wire frames out.

::

    <upstream>/features ─▶ FeatureReceiverNode (checks, replay, receipts) ─▶ StageEngine:
                           decode (input_configuration) ─▶ blocks (s_{i-1}, s_i] ─▶ encode
                           (output_configuration) ─▶ <output_namespace>/features

The edge node is the chain's first stage and the cloud node its last; this node shares the
receiving half with the cloud node (:class:`~split_infer.ros.receiver.FeatureReceiverNode`)
and the sending half with the edge node (:meth:`EdgeEngine.pack_features
<split_infer.pipeline.engine.EdgeEngine.pack_features>` and the same ``features`` message:
camera header kept, ``format`` naming the codec). The next stage acknowledges on
``<output_namespace>/receipts``; this node's ``metrics/downstream_ms`` reports how long the
next stage took, and it keeps each frame's sequence number, so results at the end of the
chain still name the camera frame's number.

``split-infer plan --devices ... --out plan.yaml`` plans a chain and writes a launch file that
starts one of these per middle device.

Topics: subscribes ``<upstream>/features`` and ``<output_namespace>/receipts``; publishes
``<upstream>/receipts``, ``<upstream>/metrics/{stage_ms,fps}``, ``<output_namespace>/features``
and ``/diagnostics``.

Parameters: ``bundle``, ``upstream`` and ``output_namespace`` ('' = this node's namespace;
relative or absolute), ``input_configuration`` and ``output_configuration`` (bundle
configuration ids of the two links; both baseline codecs, input split < output split;
empty: the two smallest split points' most accurate baseline configurations), ``backend``
(ONNX Runtime: the segment is cut from the bundle's tapped ONNX model; torch: from its
safetensors backbone), ``replay_window``, ``future_tolerance``, ``max_frame_age``,
``threads``, ``auth_key_file`` (incoming frames must be signed with one of its keys, outgoing
ones are signed with ``auth_key_id``). All but ``backend``, ``replay_window``,
``future_tolerance`` and ``max_frame_age`` are read-only.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.exceptions import InvalidTopicNameException
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64MultiArray

from split_infer.bundle import BundleConfiguration, BundleError, is_link_configuration
from split_infer.frame_auth import KeyFileError, sign, single_key
from split_infer.pipeline.counters import ReasonCounts
from split_infer.pipeline.stages import StageEngine
from split_infer.ros.common import (
    MetricPublishers,
    NodeConfigError,
    declare_int,
    declare_str,
    diagnostic_status,
    join_topic,
    run_node,
)
from split_infer.ros.messages import FEATURE_QOS, RECEIPTS_QOS, parse_receipts
from split_infer.ros.receiver import LOG_THROTTLE_S, FeatureReceiverNode, FeatureStream
from split_infer.wire import AUTH_VERSION, VERSION, Frame, format_string

__all__ = ["StageNode", "default_link_configurations", "main"]

STAGE_METRICS = ("stage_ms", "fps")


def default_link_configurations(configs: list[BundleConfiguration]
                                ) -> tuple[BundleConfiguration, BundleConfiguration]:
    """Without explicit ids: the most accurate baseline configuration at each of the two
    smallest split points that have one (a plan names its links explicitly)."""
    by_split: dict[int, list[BundleConfiguration]] = {}
    for config in configs:
        if is_link_configuration(config):
            by_split.setdefault(config.split_point, []).append(config)
    if len(by_split) < 2:
        raise NodeConfigError("a middle stage needs baseline configurations at two split "
                              f"points; this bundle has them at {sorted(by_split)}")
    first, second = sorted(by_split)[:2]
    best = [max(by_split[s], key=lambda c: (c.accuracy or 0.0, -c.ratio))
            for s in (first, second)]
    return best[0], best[1]


class StageNode(FeatureReceiverNode):
    """Runs one middle segment of the bundle's backbone between two links."""

    STREAM_METRICS = STAGE_METRICS
    STAGE_MS_METRIC = "stage_ms"

    def __init__(self, **kwargs) -> None:
        super().__init__("stage_node", **kwargs)
        upstream = declare_str(self, "upstream", "upstream",
                               "namespace of the previous stage (its 'features' are this "
                               "stage's input); '' = this node's own", read_only=True)
        output_namespace = declare_str(self, "output_namespace", "",
                                       "namespace this stage publishes 'features' in; '' = "
                                       "this node's own", read_only=True)
        input_id = declare_str(self, "input_configuration", "",
                               "bundle configuration id of the incoming link", read_only=True)
        output_id = declare_str(self, "output_configuration", "",
                                "bundle configuration id of the outgoing link", read_only=True)
        key_id = declare_int(self, "auth_key_id", -1, -1, 0xFFFFFFFF,
                             "with auth_key_file: the key outgoing frames are signed with "
                             "(-1: the file's only key)", read_only=True)
        if upstream == output_namespace:
            raise NodeConfigError(f"upstream and output_namespace are both {upstream!r}: the "
                                  "stage would read its own output")
        configs = self._bundle.configurations
        try:
            if input_id or output_id:
                if not (input_id and output_id):
                    raise NodeConfigError("set both input_configuration and "
                                          "output_configuration, or neither")
                inbound = self._bundle.configuration_by_id(input_id)
                outbound = self._bundle.configuration_by_id(output_id)
            else:
                inbound, outbound = default_link_configurations(configs)
            self._engine = StageEngine.from_bundle(
                self._bundle, inbound, outbound, backend=self._backend,
                threads=self._threads or None)
        except (BundleError, ValueError) as exc:
            if isinstance(exc, NodeConfigError):
                raise
            ids = ", ".join(c.id for c in configs)
            raise NodeConfigError(f"{exc} (configurations: {ids})") from None
        self._inbound, self._outbound = inbound, outbound
        try:  # authenticated in, authenticated out
            self._signer = single_key(self._keys, key_id) if self._keys else None
        except KeyFileError as exc:
            raise NodeConfigError(str(exc)) from None
        self._format = format_string(self._engine.outbound.codec.spec,
                                     AUTH_VERSION if self._signer else VERSION)
        self._ignored = ReasonCounts()
        self._sent = 0
        self._downstream_ms: float | None = None
        try:
            self._features_pub = self.create_publisher(
                CompressedImage, join_topic(output_namespace, "features"), FEATURE_QOS)
            self._downstream = self.create_subscription(
                Float64MultiArray, join_topic(output_namespace, "receipts"),
                self._on_receipts, RECEIPTS_QOS)
        except InvalidTopicNameException as exc:
            raise NodeConfigError(f"output_namespace {output_namespace!r}: {exc}") from None
        self._out_metrics = MetricPublishers(self, ("downstream_ms",),
                                             prefix=join_topic(output_namespace, "metrics"))
        self._start([upstream], "upstream")
        self.get_logger().info(
            f"stage ({inbound.split_point}, {outbound.split_point}] of "
            f"{self._bundle.model_name}: {self._streams[0].topic} ({inbound.id}) → "
            f"{self._features_pub.topic_name} ({outbound.id}), backend {self._backend}")

    def _rebuild_engine(self, backend: str) -> None:
        self._engine = StageEngine.from_bundle(self._bundle, self._inbound, self._outbound,
                                               backend=backend, threads=self._threads or None)

    @property
    def engine(self) -> StageEngine:
        return self._engine

    def _decode(self, frame: Frame) -> tuple[Frame, bytes]:
        decoded, features = self._engine.run(frame)
        # Encoding is part of this stage's time (the receipt reports it upstream).
        stamp_ns = self.get_clock().now().nanoseconds
        data = self._engine.encode(features, decoded.seq, stamp_ns)
        return decoded, sign(data, self._signer) if self._signer else data

    def _deliver(self, stream: FeatureStream, msg: CompressedImage, frame: Frame,
                 output: bytes) -> None:
        out = CompressedImage()
        out.header = msg.header
        out.format = self._format
        out.data = output
        self._features_pub.publish(out)
        self._sent += 1

    def _on_receipts(self, msg: Float64MultiArray) -> None:
        try:
            for row in parse_receipts(msg):
                if row["cloud_ms"] >= 0:
                    self._downstream_ms = float(row["cloud_ms"])
                    self._out_metrics.publish(downstream_ms=self._downstream_ms)
        except (ValueError, TypeError, OverflowError) as exc:
            self._ignored.add("bad_receipt")
            self.get_logger().warning(f"ignored a malformed receipt: {exc}",
                                      throttle_duration_sec=LOG_THROTTLE_S)

    def _status(self) -> DiagnosticStatus:
        downstream = self._downstream_ms
        return diagnostic_status(self, "stage", DiagnosticStatus.OK, "forwarding", {
            "blocks": f"({self._inbound.split_point}, {self._outbound.split_point}]",
            "input_configuration": self._inbound.id,
            "output_configuration": self._outbound.id,
            "codec_out": self._engine.outbound.codec.spec,
            "frames_sent": self._sent,
            **{f"ignored.{reason}": n for reason, n in self._ignored.snapshot().items()},
            "downstream_ms": "unknown" if downstream is None else f"{downstream:.2f}",
            "backend": self._backend,
            "bundle": str(self._bundle.path),
            "model": self._bundle.model_name,
        })


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer stage_node --ros-args -p bundle:=DIR -p upstream:=/robot ...``;
    exit status 2 on a bad configuration (fatal log, no traceback)."""
    return run_node(StageNode, "stage_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
