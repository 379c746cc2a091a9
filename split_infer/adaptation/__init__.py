"""Runtime adaptation, without ROS: how much the link carries now, and what to run next.

::

    receipts (seq, bytes, send/receive stamps) ─▶ estimator.BandwidthEstimator ─▶ estimate
                                                                                    │
    bundle configurations (accuracy, bytes, edge/cloud ms) ──▶ scheduling.SchedulingLoop
                                                                 │ policy.choose_configuration
                                                                 │ + policy.Hysteresis
                                                                 ▼
                                                      (split point, ratio) for the edge

* :mod:`.estimator` — capacity and RTT from the traffic itself (dispersion of queued frames).
* :mod:`.policy` — one decision: the planning library's objectives (Hu & K's ν_eff, the
  thesis's latency) and the hysteresis that damps them.
* :mod:`.configurations` — the bundle's configurations as planning ones, the edge-only and
  reference strategies, measured robot times, and the start-up configuration.
* :mod:`.scheduling` — the decision loop: lower bounds, probing, overrides, rejections,
  measured robot time.

The ROS nodes (``bandwidth_monitor``, ``scheduler``) only translate messages to and from
these objects.
"""
