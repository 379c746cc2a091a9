"""Small helpers every split_infer node shares: parameter descriptors, QoS, metrics,
diagnostics. Nothing here knows about models or codecs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data
from std_msgs.msg import Float64

__all__ = [
    "CAMERA_QOS",
    "FEATURE_QOS",
    "MetricPublishers",
    "declare_bool",
    "declare_float",
    "declare_int",
    "declare_str",
    "diagnostic_status",
    "publish_diagnostics",
]

#: Camera input: sensor-data QoS, keep only the newest frame (stale frames are worthless).
CAMERA_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)

#: Feature frames: reliable with a short queue. Frames are small (well under 64 KB) and the
#: edge's backpressure keeps at most a frame or two in flight, so reliability costs no
#: staleness, while best effort lost most large samples in DESIGN.md's measurement.
FEATURE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4)


def _descriptor(name: str, description: str, read_only: bool = False,
                **ranges: object) -> ParameterDescriptor:
    return ParameterDescriptor(name=name, description=description, read_only=read_only,
                               **ranges)


def declare_float(node: Node, name: str, default: float, low: float, high: float,
                  description: str, read_only: bool = False) -> float:
    """Declare a double parameter with a range; returns its (possibly overridden) value."""
    rng = FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
    node.declare_parameter(name, float(default), _descriptor(
        name, description, read_only, floating_point_range=[rng]))
    return float(node.get_parameter(name).value)


def declare_int(node: Node, name: str, default: int, low: int, high: int,
                description: str, read_only: bool = False) -> int:
    rng = IntegerRange(from_value=int(low), to_value=int(high), step=1)
    node.declare_parameter(name, int(default), _descriptor(
        name, description, read_only, integer_range=[rng]))
    return int(node.get_parameter(name).value)


def declare_str(node: Node, name: str, default: str, description: str,
                choices: Iterable[str] | None = None, read_only: bool = False) -> str:
    constraints = f"one of: {', '.join(choices)}" if choices else ""
    descriptor = _descriptor(name, description, read_only)
    descriptor.additional_constraints = constraints
    node.declare_parameter(name, str(default), descriptor)
    return str(node.get_parameter(name).value)


def declare_bool(node: Node, name: str, default: bool, description: str,
                 read_only: bool = False) -> bool:
    node.declare_parameter(name, bool(default), _descriptor(name, description, read_only))
    return bool(node.get_parameter(name).value)


class MetricPublishers:
    """One ``std_msgs/Float64`` topic per metric under ``metrics/`` (rqt_plot-friendly)."""

    def __init__(self, node: Node, names: Iterable[str], prefix: str = "metrics") -> None:
        self._publishers = {name: node.create_publisher(Float64, f"{prefix}/{name}", 10)
                            for name in names}

    def publish(self, **values: float) -> None:
        for name, value in values.items():
            self._publishers[name].publish(Float64(data=float(value)))


def diagnostic_status(node: Node, name: str, level: bytes, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level, name=f"{node.get_fully_qualified_name()}: {name}", message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])


def publish_diagnostics(node: Node, publisher, statuses: list[DiagnosticStatus]) -> None:
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(msg)
