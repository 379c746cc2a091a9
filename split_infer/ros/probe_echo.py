"""The probe echo (server side): stamps the robot's probe packets as the middleware received
them and returns one row per packet, one message per train, to the robot's bandwidth monitor.
The robot side and the design are in :mod:`split_infer.ros.link_prober` and
:mod:`split_infer.adaptation.probing`.

Topics (relative: the node runs in the robot's namespace, one per robot, beside the cloud
node):

* subscribes ``probe`` (:data:`~split_infer.ros.messages.PROBE_QOS`). The reception stamps are
  the middleware's (``MessageInfo``), not the time a callback ran, so the node spins on a
  single-threaded executor of its own (``EXECUTOR_KIND``): the events executor cannot pass
  ``MessageInfo``;
* publishes ``probe_receipts`` (``std_msgs/Float64MultiArray``, ``layout.dim[0].label`` =
  ``train,index,count,bytes,send_stamp_s,receive_stamp_s``), when a train's last packet
  arrived or ``flush_s`` after its first; ``bytes`` is the packet's size on the wire
  (:func:`~split_infer.adaptation.probing.wire_bytes`).

Parameters: ``flush_s`` (live).
"""

from __future__ import annotations

import time

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from split_infer.adaptation.probing import (
    PROBE_RECEIPT_COLUMNS,
    PROBE_RECEIPT_LABEL,
    ProbePacket,
    parse_probe_format,
    probe_receipt_rows,
)
from split_infer.ros.common import declare_float, run_node
from split_infer.ros.messages import PROBE_QOS, RESULT_QOS, link_bytes

__all__ = ["ProbeEcho", "main"]


class ProbeEcho(Node):
    """Stamps probe packets as the middleware received them and returns one row per packet."""

    EXECUTOR_KIND = "single"  # MessageInfo (reception stamps) needs it
    MAX_OPEN_TRAINS = 16

    def __init__(self, **kwargs) -> None:
        super().__init__("probe_echo", **kwargs)
        self._flush_s = declare_float(self, "flush_s", 0.5, 0.01, 10.0,
                                      "publish a train this long after its first packet even "
                                      "if its last was lost (s)")
        self._open: dict[int, tuple[float, list[ProbePacket]]] = {}
        self.received = self.malformed = self.trains = 0
        self._publisher = self.create_publisher(Float64MultiArray, "probe_receipts",
                                                RESULT_QOS)
        self.create_subscription(CompressedImage, "probe", self._on_probe, PROBE_QOS)
        self.create_timer(0.05, self._flush_old)
        self.add_on_set_parameters_callback(self._validate_parameters)

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        for p in parameters:
            if p.name == "flush_s":
                self._flush_s = float(p.value)
        return SetParametersResult(successful=True)

    def _on_probe(self, msg: CompressedImage, info) -> None:
        # Two parameters without defaults: rclpy then passes MessageInfo.
        received = (info or {}).get("received_timestamp") or 0
        receive_ns = received if received > 0 else self.get_clock().now().nanoseconds
        try:
            train, index, count = parse_probe_format(msg.format)
        except ValueError:
            self.malformed += 1
            return
        self.received += 1
        stamp = msg.header.stamp
        packet = ProbePacket(
            train, index, count,
            link_bytes(msg),
            stamp.sec + stamp.nanosec * 1e-9, receive_ns * 1e-9)
        entry = self._open.get(train)
        if entry is None:
            if len(self._open) >= self.MAX_OPEN_TRAINS:  # forget the oldest, never grow
                self._publish(min(self._open))
            entry = self._open[train] = (time.monotonic(), [])
        entry[1].append(packet)
        if index == count - 1 or len(entry[1]) >= count:
            self._publish(train)

    def _flush_old(self) -> None:
        now = time.monotonic()
        for train in [t for t, (first, _) in self._open.items() if now - first > self._flush_s]:
            self._publish(train)

    def _publish(self, train: int) -> None:
        _, packets = self._open.pop(train)
        msg = Float64MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=PROBE_RECEIPT_LABEL, size=len(packets),
                                              stride=len(PROBE_RECEIPT_COLUMNS))]
        msg.data = probe_receipt_rows(packets)
        self._publisher.publish(msg)
        self.trains += 1


def main(args: list[str] | None = None) -> int:
    """``ros2 run split_infer probe_echo``."""
    return run_node(ProbeEcho, "probe_echo", args)


if __name__ == "__main__":
    raise SystemExit(main())
