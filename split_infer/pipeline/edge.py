"""The robot's per-frame decision chain, without ROS: :class:`EdgePipeline`.

::

    camera frame (uint8 RGB, or a callable that converts one lazily)
          │
    RateLimiter (max_rate) ──▶ dropped("rate_limit")
          │
    edge-only configuration (-1:1) ─────────────────────────────▶ classified (whole model)
          │
    Backpressure.should_process_frame (thesis §4.3) ──▶ dropped("backpressure_<why>")
          │                                  └── fallback edge_only ──▶ classified (whole model)
          ▼
    convert ─▶ Preprocessing ─▶ EdgeEngine (head + encoder of the active configuration)
          │     (split point 0: the crop's pixels go straight to the encoder, no float tensor)
          │                                   (snapshot once per frame)
          ▼
    wire.pack (seq, send stamp) ──▶ sent(data, config, seq)
          │
    Backpressure.frame_sent / frame_processed ◀── receipts, bandwidth estimates

The edge node (``split_infer.ros.edge_node``) owns parameters, message conversion and
publishing, and hands every frame, receipt and estimate to this object, the way tf2_ros's
``TransformListener`` fills a ``Buffer``: everything that decides what happens to a frame lives
here and is testable without rclpy.

Switching is race-free: :meth:`EdgePipeline.reconfigure` validates every requested change
first and applies them together under one lock; :meth:`EdgePipeline.process` reads the active
configuration exactly once, so every frame is encoded entirely with the old or the new
configuration and names it.

**The fallback** (``fallback`` ``edge_only``; beyond the thesis, which drops the frame)
classifies a held-back frame with the whole model, but only when the wait it fills is long
enough: while the robot runs a whole-model frame (``e_F``, its measured wall time) it cannot
start the next split frame, so a link or server that frees sooner waits for it. Holding the
split back by ``e_F − wait`` costs ``(e_F − wait) / f`` split frames (``f``: the binding
resource's time per frame, :meth:`Backpressure.frame_interval_s`) for one whole-model frame;
the fallback runs when ``wait ≥ e_F − f``. On a slow link (``f`` ≥ ``e_F``) that is every
held-back frame; on a robot whose CPU, not its link, is the limit, a held-back frame waits
briefly, and a whole-model frame there would cost the robot two or three split frames. Under
the in-flight cap (no estimate: an outage, start-up) the wait is unknown and it always runs.
The CPU time per frame the edge reports keeps the two apart, and charges what a whole-model
frame costs the split frame after it (caches the whole model filled) to the whole model.

**The companion** (``companion`` ``"split:ratio"`` and ``companion_share`` ``x``; beyond the
papers, which run one configuration at a time): a second preloaded configuration runs on the
share ``x`` of the frames the robot works on, by a credit counter (each frame adds ``x``; the
frame that brings the credit to 1 runs the companion), so the two alternate evenly. A late
split that keeps a weak robot busy and an early one that fills its link then keep both busy
(:mod:`split_infer.planning.mixing` plans the share). Each frame names its configuration on
the wire, so the cloud needs nothing new; the CPU time per frame the edge reports keeps the
companion's frames apart, like the fallback's.

**Edge-only as a configuration** (beyond the papers' schedulers, which only choose among cuts;
the thesis's client-only strategy, eq. 4.4): ``(split_point, ratio) = (-1, 1)``
(:data:`~split_infer.config_key.EDGE_ONLY_KEY`) runs the bundle's whole model on every frame
and sends nothing. The split engine keeps its last configuration, so switching back costs no
load.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from split_infer.bundle import Bundle, BundleConfiguration, BundleError
from split_infer.config_key import (
    EDGE_ONLY_KEY,
    EDGE_ONLY_SPLIT,
    ConfigKey,
    config_key,
    format_config_key,
    parse_config_key,
)
from split_infer.data import CameraFrame
from split_infer.errors import EncodeError, UserError
from split_infer.frame_auth import FrameKey, sign
from split_infer.pipeline.backends import Backend, OrtBackend, backend_problem
from split_infer.pipeline.backpressure import Backpressure, RateLimiter
from split_infer.pipeline.counters import CameraShare, ReasonCounts
from split_infer.pipeline.engine import EdgeConfig, EdgeEngine
from split_infer.pipeline.images import ImageError
from split_infer.pipeline.timing import StageTimes
from split_infer.wire import AUTH_VERSION, VERSION

__all__ = [
    "EDGE_ONLY_KEY",
    "EDGE_ONLY_SPLIT",
    "FALLBACKS",
    "EdgeConfigError",
    "EdgePipeline",
    "EdgeSettings",
    "FrameOutcome",
    "PeriodReport",
    "parse_preload",
]

#: What happens to a frame backpressure holds back.
FALLBACKS = ("drop", "edge_only")
#: Drop reasons that are the pipeline doing its job; any other drop means broken input.
_EXPECTED_DROPS = ("rate_limit", "backpressure_")


class EdgeConfigError(UserError, ValueError):
    """The edge cannot start or change to the settings it was given; the message says why."""


def parse_preload(bundle: Bundle, entries: Sequence[str]) -> list[BundleConfiguration]:
    """``preload`` entries (``"split:ratio"``, or the single entry ``"all"``) → configurations.

    Raises :class:`EdgeConfigError` naming the bad entry and the bundle's configurations.
    """
    if list(entries) == ["all"]:
        return list(bundle.configurations)
    chosen: list[BundleConfiguration] = []
    for entry in entries:
        try:
            config = bundle.configuration(*parse_config_key(entry))
        except (ValueError, BundleError) as exc:
            valid = ", ".join(format_config_key(*c.key) for c in bundle.configurations)
            raise EdgeConfigError(f"preload entry {entry!r}: {exc}; valid entries: {valid} "
                                  "(or the single entry 'all')") from None
        if config not in chosen:
            chosen.append(config)
    if not chosen:
        raise EdgeConfigError("preload is empty; list 'split:ratio' entries or use ['all']")
    return chosen


@dataclass
class EdgeSettings:
    """The live-changeable settings of an edge (names as the edge node's parameters)."""

    backend: str = "onnxruntime"
    max_rate: float = 0.0  # frames per second; 0 = unlimited
    backpressure: bool = True
    fallback: str = "drop"
    max_in_flight: int = 2
    ack_timeout: float = 1.0  # seconds
    server_rate_limit_ms: float = 0.0  # 0 = learn it from receipts
    companion: str = ""  # "split:ratio" of a preloaded configuration; "" = none
    companion_share: float = 0.0  # share of the frames worked on that run the companion


@dataclass(frozen=True)
class FrameOutcome:
    """What :meth:`EdgePipeline.process` did with one camera frame.

    ``sent``: ``data`` is the wire frame, ``config`` the configuration it was encoded with,
    ``seq`` its sequence number. ``dropped``: ``reason`` says why (``error`` holds the
    exception for ``image_*``, ``encode_*`` and ``internal_error``). ``classified``: the
    edge-only fallback ran the whole model; ``logits`` and ``seq`` (its count of such frames).
    """

    kind: Literal["sent", "dropped", "classified"]
    reason: str | None = None
    data: bytes | None = None
    config: EdgeConfig | None = None
    seq: int | None = None
    logits: np.ndarray | None = None
    edge_s: float = 0.0
    error: Exception | None = None


@dataclass(frozen=True)
class PeriodReport:
    """Rates over the period since the previous report, and every counter for diagnostics."""

    fps: float
    drop_rate: float
    bad_frames: int  # drops in the period that are not rate limiting or backpressure
    config: EdgeConfig
    values: dict[str, object] = field(default_factory=dict)
    #: Frames per second that reached the pipeline (before its own drops).
    received_fps: float = 0.0
    #: The share of the camera's frames that reached it (:class:`CameraShare`; None: too few
    #: stamped frames): under 1 when a busy robot loses frames to its keep-last subscription.
    camera_share: float | None = None
    #: The process's CPU time (s) per frame worked on (sent, or classified here) in the period,
    #: everything the process did included (None: no frame worked on, or fewer than half the
    #: frames received: then the upkeep and the dropped frames' receiving would dominate).
    #: Unlike the wall time of a frame, it does not shrink when a paced robot runs each frame
    #: unthrottled: it is what a CPU budget pays per frame (``split-infer plan
    #: --edge-cpu``'s ``measured_cpu_ms``). Frames the fallback classified here are not the
    #: active configuration's, and a model's first run is a switch's cost: both are left out
    #: (see :meth:`EdgePipeline.period_report`).
    cpu_s_per_frame: float | None = None
    #: Frames per second the fallback (``edge_only``) classified here instead of dropping them.
    fallback_fps: float = 0.0
    #: The process CPU time (s) per fallback frame, counted like :attr:`cpu_s_per_frame`
    #: (None: no fallback frame in the period): what the whole model costs this robot.
    fallback_cpu_s_per_frame: float | None = None
    #: Frames per second sent with the companion configuration (``companion``).
    companion_fps: float = 0.0
    #: The process CPU time (s) per companion frame, counted like :attr:`cpu_s_per_frame`.
    companion_cpu_s_per_frame: float | None = None

    def cpu_ms(self) -> dict[str, float | None]:
        """``edge_cpu_ms``, ``fallback_cpu_ms`` and ``companion_cpu_ms`` (the edge node's
        metrics), None: unknown."""
        return {name: None if seconds is None else seconds * 1e3 for name, seconds in (
            ("fallback_cpu_ms", self.fallback_cpu_s_per_frame),
            ("companion_cpu_ms", self.companion_cpu_s_per_frame),
            ("edge_cpu_ms", self.cpu_s_per_frame))}

    def message(self, split_point: int, ratio: float) -> str:
        """One line for ``/diagnostics``: what runs, the rate, and bad frames if any."""
        active = ("edge-only" if split_point == EDGE_ONLY_SPLIT
                  else f"split {split_point} ratio {ratio:g}")
        bad = f", {self.bad_frames} bad frames in the last period" if self.bad_frames else ""
        return f"{active}, {self.fps:.1f} fps{bad}"


FrameSource = np.ndarray | CameraFrame | Callable[[], np.ndarray | CameraFrame]


class EdgePipeline:
    """Rate limiter, backpressure, engine, fallback model and counters of one robot.

    ``configs`` are preloaded (every configuration the edge may be switched to); ``initial``
    is the active one at start. ``clock_ns`` stamps each wire frame just before packing (the
    node passes its ROS clock). ``signer`` authenticates every frame
    (:mod:`split_infer.frame_auth`; None: frames as without authentication). Raises
    :class:`EdgeConfigError` for settings it cannot use.
    """

    def __init__(self, bundle: Bundle, configs: Sequence[BundleConfiguration],
                 initial: ConfigKey, settings: EdgeSettings | None = None, *,
                 threads: int | None = None,
                 clock_ns: Callable[[], int] = time.time_ns,
                 signer: FrameKey | None = None) -> None:
        self.settings = settings or EdgeSettings()
        problem = backend_problem(self.settings.backend)
        if problem:
            raise EdgeConfigError(problem)
        self.bundle = bundle
        self.preprocessing = bundle.preprocessing
        self._configs = list(configs)
        self._by_key = {c.key: c for c in self._configs}
        self._threads = threads
        self._clock_ns = clock_ns
        self.signer = signer
        self._lock = threading.Lock()  # validate + apply a reconfiguration as one
        self._engine = EdgeEngine.from_bundle(bundle, self._configs, threads=threads,
                                              backend=self.settings.backend)
        self._engine.activate(*initial)
        # ONNX Runtime allocates on a session's first run: pay it here, not on the first frame
        # after a switch (a latency spike) or in the CPU time per frame the scheduler reads.
        height, width = self.preprocessing.size
        self._engine.warm_up(self.preprocessing(np.zeros((height, width, 3), np.uint8)))
        self._full_model: Backend | None = None
        self._edge_only_mode = False  # the edge-only configuration is active
        problem = self._fallback_problem(self.settings.fallback)
        if problem:
            raise EdgeConfigError(problem)
        self._companion, problem = self._companion_of(self.settings.companion,
                                                      self.settings.companion_share)
        if problem:
            raise EdgeConfigError(problem)
        self._companion_credit = 0.0
        self.companion_frames = 0
        self._companion_mark = 0
        self._rate = RateLimiter(self.settings.max_rate)
        self._pressure = Backpressure(
            max_in_flight=self.settings.max_in_flight, ack_timeout_s=self.settings.ack_timeout,
            server_rate_limit_s=_limit_s(self.settings.server_rate_limit_ms))
        self.times = StageTimes()  # CPU per stage: convert, preprocess, model, codec, auth
        self.drops = ReasonCounts()
        self.ignored = ReasonCounts()  # malformed receipts / estimates
        self._camera_share = CameraShare()
        self.received = self.sent = self.edge_only = 0
        self._seq = 0
        # (t, received, sent, dropped, bad frames) at the previous period report
        self._window = (time.monotonic(), 0, 0, 0, 0)
        # Process CPU time at the previous report. After a period without frames the next
        # period opens at its first frame (time and CPU): one that starts idle, before the
        # camera plays, would read as a slow camera and count the node's idle spinning.
        self._cpu_mark = time.process_time()
        self._idle = True
        # Frames the fallback classified here. The process CPU time spent inside frames, by
        # kind: "active" (the active configuration's), "fallback" (the fallback's),
        # "companion" (the companion configuration's) and "warmup" (the first frame through
        # each model, its ONNX Runtime session's first run: memory and kernels, a switch's
        # cost, not a frame's); cumulative [frames, seconds], and (each) at the last report.
        self.fallback_frames = 0
        self._inside = {"active": [0, 0.0], "fallback": [0, 0.0], "companion": [0, 0.0],
                        "warmup": [0, 0.0]}
        self._inside_marks = {kind: (0, 0.0) for kind in self._inside}
        self._warm_models: set[int] = set()
        self._fallback_mark = 0
        self._whole_model_s: float | None = None  # EWMA of a fallback frame's wall time
        # The kind of the last frame counted, and the CPU time of an active frame after an
        # active one (EWMA, by model): see _count_cpu.
        self._last_kind: str | None = None
        self._clean_frame_s: dict[int, float] = {}
        self._cpu_lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------------
    @property
    def active(self) -> EdgeConfig:
        """The engine's active configuration (what the next frame will be encoded with)."""
        return self._engine.active

    @property
    def active_key(self) -> ConfigKey:
        """``(split_point, ratio)`` the next frame will use; :data:`EDGE_ONLY_KEY` while the
        edge-only configuration is active."""
        if self._edge_only_mode:
            return EDGE_ONLY_KEY
        active = self._engine.active
        return config_key(active.split_point, active.ratio)

    @property
    def edge_only_active(self) -> bool:
        """Whether the edge-only configuration is active (every frame classified here)."""
        return self._edge_only_mode

    @property
    def active_configuration(self) -> BundleConfiguration:
        """The bundle's description of the split engine's active configuration (the last one
        while edge-only runs)."""
        active = self._engine.active
        return self._by_key[config_key(active.split_point, active.ratio)]

    @property
    def wire_version(self) -> int:
        """The wire version of the frames sent (2 when they are authenticated)."""
        return AUTH_VERSION if self.signer is not None else VERSION

    @property
    def available(self) -> list[ConfigKey]:
        return self._engine.available

    def reconfigure(self, **changes: object) -> list[str]:
        """Validate every change (:class:`EdgeSettings` fields, ``split_point``, ``ratio``),
        then apply them all; EdgeConfigError (nothing applied) naming the first problem.
        Returns log lines describing what changed that is worth saying."""
        with self._lock:
            pair = self._requested_pair(changes)
            problems = [backend_problem(str(changes["backend"])) if "backend" in changes else None,
                        self._fallback_problem(str(changes["fallback"]))
                        if "fallback" in changes else None]
            companion = self._companion
            companion_changed = "companion" in changes or "companion_share" in changes
            if companion_changed:
                companion, problem = self._companion_of(
                    str(changes.get("companion", self.settings.companion)),
                    float(changes.get("companion_share",  # type: ignore[arg-type]
                                      self.settings.companion_share)))
                problems.append(problem)
            for problem in problems:
                if problem:
                    raise EdgeConfigError(problem)
            if pair == EDGE_ONLY_KEY:
                problem = self._whole_model_problem("the edge-only configuration (-1, 1)")
                if problem:
                    raise EdgeConfigError(problem)
            engine = self._engine
            if "backend" in changes and changes["backend"] != self.settings.backend:
                # Load every preloaded configuration on the new backend first, then swap the
                # engine with the same active configuration; a failure keeps the old one.
                try:
                    engine = EdgeEngine.from_bundle(self.bundle, self._configs,
                                                    threads=self._threads,
                                                    backend=str(changes["backend"]))
                    engine.activate(self.active.split_point, self.active.ratio)
                except Exception as exc:
                    raise EdgeConfigError(f"backend {changes['backend']!r}: "
                                          f"{type(exc).__name__}: {exc}") from None
            # Everything is valid: apply.
            said = []
            self._engine = engine
            if companion is not None:  # the (new) engine's own copy
                companion = engine.config(companion.split_point, companion.ratio)
            if companion_changed:
                self._companion_credit = 0.0  # a new share counts from the next frame
            if "companion" in changes and companion is not self._companion:
                said.append("companion: none" if companion is None else
                            f"companion: split {companion.split_point}, ratio "
                            f"{companion.ratio:g} ({companion.codec.spec})")
            self._companion = companion
            if pair is not None and pair != self.active_key:
                if pair == EDGE_ONLY_KEY:
                    self._edge_only_mode = True
                    said.append("active configuration: edge-only (the whole model here, "
                                "nothing sent)")
                else:
                    self._edge_only_mode = False
                    config = self._engine.activate(*pair)
                    said.append(f"active configuration: split {config.split_point}, "
                                f"ratio {config.ratio:g} ({config.codec.spec})")
            for name, value in changes.items():
                if hasattr(self.settings, name):
                    setattr(self.settings, name, type(getattr(self.settings, name))(value))
            self._rate.set_rate(self.settings.max_rate)
            self._pressure.max_in_flight = self.settings.max_in_flight
            self._pressure.ack_timeout_s = self.settings.ack_timeout
            self._pressure.set_server_rate_limit(_limit_s(self.settings.server_rate_limit_ms))
            return said

    def _requested_pair(self, changes: Mapping[str, object]) -> ConfigKey | None:
        if "split_point" not in changes and "ratio" not in changes:
            return None
        current = self._engine.active
        split = int(changes.get("split_point", current.split_point))  # type: ignore[arg-type]
        ratio = float(changes.get("ratio", current.ratio))  # type: ignore[arg-type]
        pair = config_key(split, ratio)
        if pair == EDGE_ONLY_KEY:
            return pair
        if split == -1 or ratio == 0.0:
            raise EdgeConfigError("split_point -1 and ratio 0 only select a default at "
                                  "start-up; name a preloaded configuration, or (-1, 1) "
                                  "for edge-only")
        if pair not in self._by_key:
            hint = ""
            if len({"split_point", "ratio"} & changes.keys()) == 1:
                hint = (" (to change split_point and ratio together, set both in one "
                        "set_parameters_atomically call)")
            raise EdgeConfigError(f"no preloaded configuration split_point={split}, "
                                  f"ratio={ratio:g}; valid (split_point, ratio) pairs: "
                                  f"{self.valid_pairs()}{hint}")
        return pair

    def valid_pairs(self) -> str:
        return ", ".join(f"({s}, {r:g})" for s, r in self._engine.available)

    def _fallback_problem(self, fallback: str) -> str | None:
        """Why ``fallback`` cannot be used with this bundle (loading its whole model), or None."""
        if fallback not in FALLBACKS:
            return f"fallback {fallback!r}: choose one of {list(FALLBACKS)}"
        if fallback == "edge_only":
            return self._whole_model_problem("fallback 'edge_only'")
        return None

    def _companion_of(self, companion: str, share: float) -> tuple[EdgeConfig | None,
                                                                    str | None]:
        """The companion configuration ``companion`` names ("" = none) and why it cannot run
        on ``share`` of the frames, or None."""
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            return None, f"companion_share {share!r}: a share of the frames, in [0, 1]"
        if not companion:
            return None, None
        try:
            pair = parse_config_key(companion)
            if pair == EDGE_ONLY_KEY:
                raise ValueError("the whole model is the fallback's (fallback edge_only), "
                                 "not a companion")
            return self._engine.config(*pair), None
        except KeyError:
            problem = "not a preloaded configuration"
        except ValueError as exc:
            problem = str(exc)
        entries = ", ".join(format_config_key(*key) for key in self._engine.available)
        return None, (f"companion {companion!r}: {problem}; valid 'split:ratio' entries: "
                      f"{entries}, or '' for none")

    def _whole_model_problem(self, what: str) -> str | None:
        """Load the bundle's whole model (once); why it cannot be had, or None."""
        if self._full_model is None:
            onnx = (self.bundle.manifest.get("client_only") or {}).get("onnx")
            if not onnx:
                return (f"{what} needs the bundle's whole model (manifest client_only.onnx), "
                        "and this bundle has none")
            self._full_model = OrtBackend(self.bundle.read(onnx), self._threads)
        return None

    # -- frames -------------------------------------------------------------------------------
    def process(self, frame: FrameSource, now: float | None = None,
                stamp_s: float | None = None) -> FrameOutcome:
        """One camera frame: uint8 RGB ``(H, W, 3)`` or a :class:`~split_infer.data.CameraFrame`,
        or a callable returning one (called only if the frame is not dropped first), with its
        camera stamp if known (for :attr:`PeriodReport.camera_share`). Never raises: failures
        are drops by reason."""
        start = time.perf_counter()
        cpu_start = time.process_time()
        now = time.monotonic() if now is None else now
        if self._idle:
            self._idle = False
            self._cpu_mark = time.process_time()
            self._window = (now, *self._window[1:])
        self.received += 1
        if stamp_s is not None:
            self._camera_share.observe(stamp_s)
        try:
            if not self._rate.allow(now):
                return self._drop("rate_limit")
            if self._edge_only_mode:
                outcome = self._classify_here(frame, start)
                self._count_cpu("active", self._full_model, cpu_start)
                return outcome
            if self.settings.backpressure:
                decision = self._pressure.should_process_frame(now)
                if not decision.process:
                    if self.settings.fallback == "edge_only" and self._fallback_pays(
                            decision, now):
                        outcome = self._classify_here(frame, start)
                        self.fallback_frames += 1
                        if self._count_cpu("fallback", self._full_model, cpu_start):
                            # (a first run is a warm-up: no measure of the whole model's time)
                            self._whole_model_s = outcome.edge_s if self._whole_model_s is None \
                                else 0.8 * self._whole_model_s + 0.2 * outcome.edge_s
                        return outcome
                    return self._drop(f"backpressure_{decision.reason}")
            times = self.times
            with times.stage("convert"):
                rgb = _pixels(frame)
            # Read once: this frame uses exactly this configuration.
            config, kind = self._engine.active, "active"
            companion, share = self._companion, self.settings.companion_share
            if companion is not None and share > 0.0:
                self._companion_credit += share
                if self._companion_credit >= 1.0:
                    self._companion_credit -= 1.0
                    config, kind = companion, "companion"
            with times.stage("preprocess"):
                crop = self.preprocessing.input_crop(rgb) if config.sends_input else None
                if crop is None:
                    x = self.preprocessing(rgb)
            if crop is None:
                with times.stage("model"):
                    features = self._engine.features(x, config)
            seq = self._seq
            self._seq += 1
            # The send stamp is taken after the head, just before packing, so the receipts'
            # receive - send difference measures the link (plus the codec), not the head.
            with times.stage("codec"):
                if crop is None:
                    data = self._engine.pack_features(config, features, seq, self._clock_ns())
                else:  # split point 0: the crop's pixels straight into the codec, same bytes
                    data = self._engine.pack_image(config, *crop,
                                                   self.preprocessing.channel_values, seq,
                                                   self._clock_ns())
            if self.signer is not None:
                with times.stage("auth"):
                    data = sign(data, self.signer)
            edge_s = time.perf_counter() - start
            self.sent += 1
            # Sent at arrival + processing time, on the caller's clock (``now``).
            self._pressure.frame_sent(seq, len(data), now + edge_s)
            self._pressure.frame_processed(edge_s)
            if kind == "companion":
                self.companion_frames += 1
            self._count_cpu(kind, config.part, cpu_start)
            return FrameOutcome("sent", data=data, config=config, seq=seq, edge_s=edge_s)
        except ImageError as exc:
            return self._drop(f"image_{exc.reason}", exc)
        except EncodeError as exc:
            return self._drop(f"encode_{exc.reason}", exc)
        except Exception as exc:  # a frame must never take the caller down
            return self._drop("internal_error", exc)

    def _fallback_pays(self, decision, now: float) -> bool:
        """Whether the whole model should fill the wait ``decision`` holds a frame back for
        (see the module docstring)."""
        if self._whole_model_s is None or math.isnan(decision.bandwidth_remain):
            return True
        wait = max(decision.server_remain, decision.bandwidth_remain) - decision.client_remain
        return wait >= self._whole_model_s - self._pressure.frame_interval_s(now)

    def _count_cpu(self, kind: str, model: object, cpu_start: float) -> bool:
        """Add a frame's process CPU time to ``kind``'s, or to the warm-up's when it was
        ``model``'s first run. An active frame right after a fallback (or companion) frame
        runs on caches the other model filled: what it costs beyond the active frames that
        follow active ones (an EWMA) is that frame's doing and is charged to it, so the active
        configuration's figure is the one it has alone, as the scheduler plans it. False for
        a warm-up."""
        spent = time.process_time() - cpu_start
        previous, self._last_kind = self._last_kind, kind
        warm = id(model) in self._warm_models
        extra = 0.0
        if not warm:
            self._warm_models.add(id(model))
            kind = "warmup"
        elif kind == "active":
            clean = self._clean_frame_s.get(id(model))
            if previous in ("fallback", "companion") and clean is not None:
                extra = max(0.0, spent - clean)
                spent -= extra
            elif previous == "active":
                self._clean_frame_s[id(model)] = spent if clean is None else (
                    0.9 * clean + 0.1 * spent)
        with self._cpu_lock:  # period_report reads these from another thread
            if extra:
                self._inside[previous][1] += extra  # type: ignore[index]
            entry = self._inside[kind]
            entry[0] += 1
            entry[1] += spent
        return warm

    def _drop(self, reason: str, error: Exception | None = None) -> FrameOutcome:
        self.drops.add(reason)
        return FrameOutcome("dropped", reason=reason, error=error)

    def _classify_here(self, frame: FrameSource, start: float) -> FrameOutcome:
        """The edge-only configuration or fallback: the whole model on this frame."""
        times = self.times
        with times.stage("convert"):
            rgb = _pixels(frame)
        with times.stage("preprocess"):
            x = self.preprocessing(rgb)
        with times.stage("model"):
            logits = self._full_model(x)[0]  # type: ignore[misc]
        index = self.edge_only
        self.edge_only += 1
        return FrameOutcome("classified", logits=logits, seq=index,
                            edge_s=time.perf_counter() - start)

    # -- feedback -----------------------------------------------------------------------------
    def receipts(self, rows: Iterable[Mapping[str, float]], now: float | None = None) -> None:
        """The cloud's receipts (``seq``, ``cloud_ms`` per row), arrived at ``now`` (monotonic
        seconds, default the clock); ValueError on a malformed one (the caller counts it in
        :attr:`ignored`)."""
        now = time.monotonic() if now is None else now
        for row in rows:
            seq, cloud_ms = row["seq"], row["cloud_ms"]
            if not (math.isfinite(seq) and seq >= 0 and seq == int(seq)):
                raise ValueError(f"seq {seq} is not a frame number")
            self._pressure.receipt(int(seq), cloud_ms / 1e3 if cloud_ms >= 0 else None, now)

    def set_bandwidth(self, bits_per_second: float, lower_bound: bool,
                      now: float | None = None) -> bool:
        """A bandwidth estimate and whether it is only a lower bound (never used for
        pacing); False (and counted) when it is not a usable number."""
        now = time.monotonic() if now is None else now
        if self._pressure.set_bandwidth(float(bits_per_second), now, lower_bound=lower_bound):
            return True
        self.ignored.add("bad_bandwidth")
        return False

    # -- reporting ----------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """Counters so far: ``received``, ``sent``, ``edge_only`` (classified here by the
        fallback), ``drops`` (by reason), ``ignored`` (malformed receipts/estimates by
        reason), ``acknowledged`` and ``expired`` frames."""
        return {"received": self.received, "sent": self.sent, "edge_only": self.edge_only,
                "drops": self.drops.snapshot(), "ignored": self.ignored.snapshot(),
                "acknowledged": self._pressure.acknowledged,
                "expired": self._pressure.expired}

    def period_report(self, now: float | None = None) -> PeriodReport:
        """Rates since the previous call and every counter (the diagnostics' values)."""
        now = time.monotonic() if now is None else now
        drops = self.drops.snapshot()
        dropped = sum(drops.values())
        bad = sum(n for reason, n in drops.items() if not reason.startswith(_EXPECTED_DROPS))
        t0, received0, done0, dropped0, bad0 = self._window
        done = self.sent + self.edge_only  # frames sent on, or classified here
        self._window = (now, self.received, done, dropped, bad)
        fps = (done - done0) / max(now - t0, 1e-9)
        cpu_now = time.process_time()
        arrived = self.received - received0
        worked = done - done0
        with self._cpu_lock:
            totals = {kind: (n, s) for kind, (n, s) in self._inside.items()}
        inside = {kind: (n - self._inside_marks[kind][0], s - self._inside_marks[kind][1])
                  for kind, (n, s) in totals.items()}
        self._inside_marks = totals
        fallen_back = self.fallback_frames - self._fallback_mark
        self._fallback_mark = self.fallback_frames
        accompanied = self.companion_frames - self._companion_mark
        self._companion_mark = self.companion_frames
        # Only over a period where the frames worked on are most of those received: when
        # backpressure held most back (an outage, a link far too slow), the process's upkeep
        # and the receiving of the frames it dropped would read as each frame's cost. The
        # fallback's frames (the whole model) are not the active configuration's: each kind
        # of frame costs what was spent inside it, plus an equal share of what the process
        # spent outside every frame (messaging, its threads); without fallback frames and
        # warm-ups that is the process's CPU time over its frames.
        per_frame: dict[str, float | None] = dict.fromkeys(("active", "fallback", "companion"))
        if worked > 0 and 2 * worked >= arrived:
            outside = max(0.0, cpu_now - self._cpu_mark - sum(s for _, s in inside.values()))
            for kind in per_frame:
                frames, seconds = inside[kind]
                if frames > 0:
                    per_frame[kind] = seconds / frames + outside / worked
        cpu_per_frame, fallback_cpu_per_frame = per_frame["active"], per_frame["fallback"]
        self._cpu_mark = cpu_now
        received_fps = arrived / max(now - t0, 1e-9)
        self._idle = arrived == 0
        share = self._camera_share.take()
        drop_rate = (dropped - dropped0) / arrived if arrived else 0.0
        config = self._engine.active
        frames, nbytes = self._pressure.in_flight(now)
        bandwidth = self._pressure.bandwidth_bps(now)
        client = self._pressure.client_latency_s
        server = self._pressure.server_rate_limit_s
        values: dict[str, object] = {
            "fps": f"{fps:.2f}",
            "received_fps": f"{received_fps:.2f}",
            "camera_share": "unknown" if share is None else f"{share:.3f}",
            "drop_rate": f"{drop_rate:.3f}",
            "cpu_ms_per_frame": "unknown" if cpu_per_frame is None
            else f"{cpu_per_frame * 1e3:.2f}",
            **{f"{kind}_cpu_ms_per_frame": "unknown" if per_frame[kind] is None
               else f"{per_frame[kind] * 1e3:.2f}" for kind in ("fallback", "companion")},
            "frames_received": self.received,
            "frames_sent": self.sent,
            "frames_dropped": dropped,
            **{f"drops.{reason}": n for reason, n in drops.items()},
            **{f"ignored.{reason}": n for reason, n in self.ignored.snapshot().items()},
            "active_split": self.active_key[0],
            "active_ratio": f"{self.active_key[1]:g}",
            "active_configuration": "edge_only" if self._edge_only_mode
            else self.active_configuration.id,
            "codec": config.codec.spec,
            "backend": self.settings.backend,
            "backpressure": self.settings.backpressure,
            "fallback": self.settings.fallback,
            "frames_edge_only": self.edge_only,
            "frames_fallback": self.fallback_frames,
            "companion": self.settings.companion or "none",
            "companion_share": f"{self.settings.companion_share:g}",
            "frames_companion": self.companion_frames,
            "max_rate": f"{self._rate.max_rate_hz:g}",
            "in_flight_frames": frames,
            "in_flight_bytes": nbytes,
            "acknowledged": self._pressure.acknowledged,
            "expired": self._pressure.expired,
            "bandwidth_bps": "unknown" if bandwidth is None else f"{bandwidth:.0f}",
            "edge_latency_ms": "unknown" if client is None else f"{client * 1e3:.2f}",
            "server_rate_limit_ms": "unknown" if server is None else f"{server * 1e3:.2f}",
            "bundle": str(self.bundle.path),
            "model": self.bundle.model_name,
        }
        seconds = max(now - t0, 1e-9)
        return PeriodReport(fps, drop_rate, bad - bad0, config, values, received_fps, share,
                            cpu_per_frame, fallen_back / seconds, fallback_cpu_per_frame,
                            accompanied / seconds, per_frame["companion"])


def _pixels(frame: FrameSource) -> np.ndarray | CameraFrame:
    return frame() if callable(frame) else frame


def _limit_s(milliseconds: float) -> float | None:
    return milliseconds / 1e3 if milliseconds > 0 else None
