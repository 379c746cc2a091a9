"""The edge node's live-changeable parameters (:class:`~split_infer.pipeline.edge.EdgeSettings`),
declared with descriptions and ranges; the node hands every change to
:meth:`~split_infer.pipeline.edge.EdgePipeline.reconfigure`, which validates it."""

from __future__ import annotations

from rclpy.node import Node

from split_infer.pipeline.backends import BACKENDS
from split_infer.pipeline.edge import FALLBACKS, EdgeSettings
from split_infer.ros.common import declare_bool, declare_float, declare_int, declare_str

__all__ = ["declare_edge_settings"]


def declare_edge_settings(node: Node) -> EdgeSettings:
    """Declare the settings on ``node`` and return their values (overrides applied)."""
    return EdgeSettings(
        backend=declare_str(node, "backend", "onnxruntime", "inference backend",
                            choices=BACKENDS),
        max_rate=declare_float(node, "max_rate", 0.0, 0.0, 1000.0,
                               "most frames processed per second; 0 = unlimited"),
        backpressure=declare_bool(node, "backpressure", True,
                                  "drop frames the link or server cannot take in time "
                                  "(thesis §4.3 should_process_frame)"),
        fallback=declare_str(node, "fallback", "drop",
                             "what happens to a frame backpressure holds back (the link or "
                             "server cannot take it, e.g. in an outage): drop it (counted), "
                             "or edge_only: classify it here with the bundle's whole model "
                             "and publish the result on 'results'", choices=FALLBACKS),
        max_in_flight=declare_int(node, "max_in_flight", 2, 1, 64,
                                  "without a bandwidth estimate: most unacknowledged frames"),
        ack_timeout=declare_float(node, "ack_timeout", 1.0, 0.01, 60.0, "seconds after "
                                  "which an unacknowledged frame counts as lost"),
        server_rate_limit_ms=declare_float(node, "server_rate_limit_ms", 0.0, 0.0, 60000.0,
                                           "server time per frame; 0 = learn it from "
                                           "receipts"),
        companion=declare_str(node, "companion", "",
                              "a second preloaded configuration ('split:ratio') that runs "
                              "companion_share of the frames, e.g. an early split that fills "
                              "the link while a late one keeps a weak robot busy; '' = none"),
        companion_share=declare_float(node, "companion_share", 0.0, 0.0, 1.0,
                                      "share of the frames the companion runs (set it with "
                                      "companion, atomically, as the scheduler does)"))
