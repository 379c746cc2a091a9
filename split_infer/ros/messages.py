"""Every message split_infer builds or parses, and the QoS profiles of its topics.

* Feature frames: ``sensor_msgs/CompressedImage`` (the wire frame is built in
  :mod:`split_infer.wire`; the nodes only copy bytes in and out).
* Results: ``diagnostic_msgs/DiagnosticArray``, one status per top-k class
  (:func:`results_message`).
* Receipts: ``std_msgs/Float64MultiArray`` rows (:func:`make_receipt`, :func:`parse_receipts`).
* Estimates: one ``std_msgs/Float64MultiArray`` on ``bandwidth_estimate`` that keeps the
  bandwidth and its lower-bound and silence flags together (:func:`make_estimate`), plus
  ``std_msgs/Float64`` ``bandwidth_bps`` / ``rtt_ms`` and ``std_msgs/Bool``
  ``bandwidth_lower_bound`` for rqt_plot.
* Health: ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from split_infer.adaptation.estimator import RECEIPT_COLUMNS, RECEIPT_LABEL
from split_infer.pipeline.engine import softmax, top_k

__all__ = [
    "CAMERA_QOS",
    "DIAGNOSTICS_QOS",
    "DIAGNOSTICS_TOPIC",
    "ESTIMATE_LABEL",
    "ESTIMATE_QOS",
    "ESTIMATE_READER_QOS",
    "FEATURE_QOS",
    "PROBE_QOS",
    "RECEIPTS_QOS",
    "RECEIPT_FIELDS",
    "RECEIPT_LABEL",
    "RESULT_QOS",
    "LinkEstimate",
    "edge_configuration_change",
    "edge_configuration_event",
    "link_bytes",
    "make_estimate",
    "make_receipt",
    "parse_estimate",
    "parse_receipts",
    "results_message",
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
#: staleness, while best effort loses large samples (several IP fragments each) whenever one
#: fragment is lost.
FEATURE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4)

#: Results (and the cloud's receipts publisher): reliable, a few frames deep. A lost result is
#: a lost frame.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)

#: Receipt *readers* (the edge's backpressure, the bandwidth monitor): best effort, which
#: matches the reliable publisher. A reliable reader answers the publisher's heartbeats with an
#: ACKNACK on the uplink, about one per receipt: measured on the testbed at 100 kbit/s, best
#: effort delivered 5-8 % more frames. A lost receipt only widens one dispersion gap (the
#: estimate errs low, never high) and leaves its frame in flight until ``ack_timeout``.
RECEIPTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.BEST_EFFORT)

#: Probe packets (the link prober's trains): best effort (a retransmission would be another
#: packet in the train), deep enough for a whole train.
PROBE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=64,
                       reliability=ReliabilityPolicy.BEST_EFFORT)

#: Estimates (bandwidth, RTT, lower-bound flag): latched, so a late subscriber gets the newest
#: value at once.
ESTIMATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Estimate readers: volatile reliable, compatible with the latched publisher (and any other).
ESTIMATE_READER_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)

#: ``/diagnostics`` is absolute: diagnostic aggregators listen there whatever the namespace.
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)


#: Columns of a receipt row, in order. The cloud publishes one row per received frame on
#: ``<ns>/receipts`` (``std_msgs/Float64MultiArray``, ``layout.dim[0].label`` = RECEIPT_LABEL);
#: the edge's backpressure and the bandwidth monitor consume them. Stamps are seconds of the
#: ROS clock: ``send_stamp_s`` is the wire frame's stamp (edge clock, just before packing),
#: ``receive_stamp_s`` the cloud's clock at callback entry; ``cloud_ms`` is decode + tail.
#: One definition of the columns, in the ROS-free estimator that consumes them.
RECEIPT_FIELDS: tuple[str, ...] = RECEIPT_COLUMNS


def make_receipt(values: Iterable[float]) -> Float64MultiArray:
    """One receipt row (the values of :data:`RECEIPT_FIELDS`, in order) as a message."""
    row = [float(v) for v in values]
    if len(row) != len(RECEIPT_FIELDS):
        raise ValueError(f"a receipt has {len(RECEIPT_FIELDS)} values, got {len(row)}")
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=RECEIPT_LABEL, size=len(row), stride=len(row))]
    msg.data = row
    return msg


def parse_receipts(msg: Float64MultiArray) -> list[dict[str, float]]:
    """The rows of a receipt message as dicts; ValueError if it is not a receipt.

    Accepts several rows in one message (``len(data)`` a multiple of the row length) so a
    batching publisher stays compatible.
    """
    dims = msg.layout.dim
    if not dims or dims[0].label != RECEIPT_LABEL:
        raise ValueError(f"layout.dim[0].label must be {RECEIPT_LABEL!r}")
    data = list(msg.data)
    width = len(RECEIPT_FIELDS)
    if not data or len(data) % width:
        raise ValueError(f"{len(data)} values is not a whole number of {width}-value rows")
    return [dict(zip(RECEIPT_FIELDS, data[i:i + width])) for i in range(0, len(data), width)]


def results_message(header, logits: np.ndarray, k: int, classes: list[str], source: str,
                    seq: int, split_point: int, ratio: float) -> DiagnosticArray:
    """The documented results message: the camera ``header``, then one status per top-``k``
    class (best first) with ``class_id``, ``score`` (softmax), ``seq``, ``split_point`` and
    ``ratio``; ``source`` goes to ``hardware_id``."""
    probabilities = softmax(logits)
    out = DiagnosticArray()
    out.header = header
    common = [KeyValue(key="seq", value=str(seq)),
              KeyValue(key="split_point", value=str(split_point)),
              KeyValue(key="ratio", value=format(ratio, ".9g"))]
    for rank, class_id in enumerate(top_k(probabilities, k), start=1):
        label = classes[class_id] if class_id < len(classes) else str(class_id)
        out.status.append(DiagnosticStatus(
            level=DiagnosticStatus.OK, name=label, message=f"rank {rank}", hardware_id=source,
            values=[KeyValue(key="class_id", value=str(class_id)),
                    KeyValue(key="score", value=repr(float(probabilities[class_id]))),
                    *common]))
    return out


#: ``layout.dim[0].label`` of an estimate message: its values, in order.
ESTIMATE_LABEL = "bandwidth_bps,lower_bound,rtt_ms,stale"
#: The label before ``stale`` was added (bags recorded then still parse, never stale).
_ESTIMATE_LABEL_V1 = "bandwidth_bps,lower_bound,rtt_ms"


class LinkEstimate(NamedTuple):
    """A parsed estimate. ``stale``: nothing (no frame, no probe train) came over the link for
    a while, and ``bandwidth_bps`` is only the silence cap (one typical frame in the silence),
    neither a measurement nor a lower bound of the capacity."""

    bandwidth_bps: float
    lower_bound: bool
    rtt_ms: float | None
    stale: bool


def make_estimate(bandwidth_bps: float, lower_bound: bool, rtt_ms: float | None = None,
                  stale: bool = False) -> Float64MultiArray:
    """The monitor's estimate as one message: the bandwidth (bit/s), whether it is only a
    lower bound (1.0/0.0), the RTT in ms (NaN when unknown) and whether it is a silence cap
    (1.0/0.0). One message, so a reader can never pair a bandwidth with another estimate's
    flags."""
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=ESTIMATE_LABEL, size=4, stride=4)]
    msg.data = [float(bandwidth_bps), 1.0 if lower_bound else 0.0,
                float("nan") if rtt_ms is None else float(rtt_ms), 1.0 if stale else 0.0]
    return msg


def parse_estimate(msg: Float64MultiArray) -> LinkEstimate:
    """The estimate in ``msg``; ValueError if it is not an estimate or the bandwidth is not a
    positive finite number."""
    import math

    dims = msg.layout.dim
    label = dims[0].label if dims else None
    values = [float(v) for v in msg.data]
    if label == _ESTIMATE_LABEL_V1 and len(values) == 3:
        values.append(0.0)
    elif label != ESTIMATE_LABEL or len(values) != 4:
        raise ValueError(f"not an estimate (layout label {ESTIMATE_LABEL!r}, 4 values)")
    bandwidth, lower, rtt, stale = values
    if not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth {bandwidth} is not a positive number")
    return LinkEstimate(bandwidth, lower != 0.0,
                        rtt if math.isfinite(rtt) and rtt >= 0 else None, stale == 1.0)


def edge_configuration_event(event, node: str, state: dict[str, float | str]) -> bool:
    """Fold a ``/parameter_events`` message into ``state`` (``split_point``, ``ratio``,
    ``fallback``, ``companion``, ``companion_share``) when it comes from ``node`` (fully
    qualified); True when it changed any of them. The scheduler follows the edge with it, and
    the recorders time configuration switches with it."""
    from rcl_interfaces.msg import ParameterType

    if event.node != node:
        return False
    changed = False
    for p in list(event.new_parameters) + list(event.changed_parameters):
        if p.name == "split_point" and p.value.type == ParameterType.PARAMETER_INTEGER:
            state["split_point"], changed = p.value.integer_value, True
        elif p.name == "ratio" and p.value.type == ParameterType.PARAMETER_DOUBLE:
            state["ratio"], changed = p.value.double_value, True
        elif p.name in ("fallback", "companion") and \
                p.value.type == ParameterType.PARAMETER_STRING:
            state[p.name], changed = p.value.string_value, True
        elif p.name == "companion_share" and p.value.type == ParameterType.PARAMETER_DOUBLE:
            state["companion_share"], changed = p.value.double_value, True
    return changed


def edge_configuration_change(event, node: str, state: dict[str, float | str]
                              ) -> tuple[float, float] | None:
    """:func:`edge_configuration_event`, then ``(split_point, ratio)`` when the event changed
    them and both are known (None: another node, the fallback or companion alone, or not yet
    both): what
    the recorders time configuration switches with."""
    before = (state.get("split_point"), state.get("ratio"))
    if not edge_configuration_event(event, node, state):
        return None
    now = (state.get("split_point"), state.get("ratio"))
    return None if None in now or now == before else now  # type: ignore[return-value]


def link_bytes(msg) -> int:
    """Bytes a ``sensor_msgs/CompressedImage`` (a feature frame or a probe packet) occupies on
    the link: its data, its frame id and format strings, and every header around them
    (:func:`split_infer.adaptation.probing.wire_bytes`). A shaper counts them all; for a
    200-byte frame the headers are as large as the data."""
    from split_infer.adaptation.probing import wire_bytes

    return wire_bytes(len(msg.data), len(msg.format) + len(msg.header.frame_id))
