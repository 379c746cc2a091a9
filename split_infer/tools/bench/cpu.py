"""CPU per frame of the edge and cloud nodes, each in its own process, by component.

    split-infer bench cpu [--sizes 32x32 640x480 1280x720] [--encodings rgb8 bgr8]
                          [--seconds 20] [--executor single|multi] [--out DIR]

Per camera size and encoding, three processes run as on a robot and a server: a camera
(publishes ``sensor_msgs/Image`` at ``--fps``, its CPU is not counted), the edge node and the
cloud node. Each node's process reports, once a second, its CPU time (user + system of all
threads) and the CPU of each stage of its per-frame work
(:class:`~split_infer.pipeline.timing.StageTimes`): on the edge *convert* (message → RGB),
*preprocess*, *model* (head + encoder), *codec* (quantize, entropy-code, pack), *publish*;
on the cloud *checks* (format, header, freshness), *codec* (decode), *model* (tail),
*publish* (results and receipt). Over ``--seconds`` after a warm-up, per node and size:

* ``fps``, ``cpu_ms_per_frame``, ``model_ms_per_frame``, ``codec_ms_per_frame`` and
  ``overhead_ms_per_frame`` = CPU − model − codec (everything that is not the network or its
  codec: the executor, rclpy, DDS, conversion, preprocessing, Python);
* the stages above, and ``other_ms_per_frame`` (CPU no stage accounts for: deserialisation
  in rclpy, the executor, timers, diagnostics, DDS threads);
* ``deserialize_ms`` (rclpy's deserialisation of one such message, timed on its own);
* ``idle_cpu_percent``: the same node with no input, in % of one core.

The no-work graph: a source, two relays and the source again (three hops, as camera → edge →
cloud → result), each its own process doing nothing but relaying, spun the way split_infer's
nodes are; ``null_hop_ms_p50`` is the median one-hop latency and ``null_hop_cpu_ms`` a relay's
CPU per message. ``null_hop_floor_*`` are the same with relays on a bare ``rclpy.spin``
(the floor rclpy itself sets here).

``--executor multi`` spins the nodes on rclpy's MultiThreadedExecutor, the way ``ros2 run``
ran them before this benchmark (the "before" column); ``--py-spy`` records a profile of the
edge at the middle size. Writes ``cpu.json`` (merged: one entry per ``--label``) and
``cpu.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from split_infer.tools.bench import common

__all__ = ["main"]



# -- the processes ------------------------------------------------------------------------------


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _spin_and_report(node, stats, spec: dict) -> int:
    """Spin ``node`` until SIGTERM; write ``stats()`` (plus CPU and time) to spec["stats"]
    once a second."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from split_infer.ros.common import make_executor

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    kind = spec.get("executor")
    executor = (MultiThreadedExecutor() if kind == "multi" else
                SingleThreadedExecutor() if kind == "single" else make_executor())
    executor.add_node(node)
    path = Path(spec["stats"])
    next_report = time.monotonic()
    try:
        while not stop["now"] and rclpy.ok():
            executor.spin_once(timeout_sec=0.5)
            if time.monotonic() >= next_report:
                next_report += 1.0
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"t": time.monotonic(), "cpu_s": _cpu_s(),
                                           **stats()}))
                tmp.replace(path)
    finally:
        executor.shutdown()
        node.destroy_node()
    return 0


def _deserialize_ms(width: int, height: int, encoding: str) -> float:
    import numpy as np
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    msg = _image(width, height, encoding, np)
    raw = serialize_message(msg)
    start = time.process_time()
    for _ in range(20):
        deserialize_message(raw, Image)
    return (time.process_time() - start) / 20 * 1e3


def _image(width: int, height: int, encoding: str, np):
    from sensor_msgs.msg import Image

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, step=width * 3)
    msg.data = pixels.tobytes()
    return msg


def _role_edge(spec: dict) -> int:
    from rclpy.parameter import Parameter

    from split_infer.ros.edge_node import EdgeNode

    node = EdgeNode(namespace="/robot", parameter_overrides=[
        Parameter("bundle", value=spec["bundle"]), Parameter("backpressure", value=False),
        Parameter("threads", value=int(spec.get("threads", 0)))])
    pipeline = node.pipeline
    extra = {}
    if spec.get("width"):
        extra["deserialize_ms"] = _deserialize_ms(spec["width"], spec["height"],
                                                  spec["encoding"])
    return _spin_and_report(node, lambda: {"frames": pipeline.sent,
                                           "times": pipeline.times.snapshot(), **extra}, spec)


def _role_cloud(spec: dict) -> int:
    from rclpy.parameter import Parameter

    from split_infer.ros.cloud_node import CloudNode

    node = CloudNode(namespace="/robot", parameter_overrides=[
        Parameter("bundle", value=spec["bundle"]),
        Parameter("threads", value=int(spec.get("threads", 0)))])

    def stats() -> dict:
        stream = node._streams[0]
        times = {**node._engine.times.snapshot(), **stream.receiver.times.snapshot()}
        return {"frames": stream.frames, "times": times}

    return _spin_and_report(node, stats, spec)


def _role_camera(spec: dict) -> int:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from split_infer.ros.messages import CAMERA_QOS

    node = rclpy.create_node("camera", namespace="/robot")
    publisher = node.create_publisher(Image, "image", CAMERA_QOS)
    msg = _image(spec["width"], spec["height"], spec["encoding"], np)
    period = 1.0 / spec["fps"]
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    due = time.monotonic()
    while not stop["now"]:
        due += period
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        time.sleep(max(0.0, due - time.monotonic()))
    node.destroy_node()
    return 0


def _role_null(spec: dict) -> int:
    """null_source: publish stamped messages on hop0 at fps, collect the one-hop latencies of
    what comes back on hop<hops>; null_relay i: hop<i> → hop<i+1>, nothing else. A relay
    spins like a split_infer node (``plain`` false) or with a bare ``rclpy.spin``."""
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import Header

    role = spec["role"]
    node = rclpy.create_node(f"{role}{spec.get('index', '')}")
    if role == "null_relay":
        publisher = node.create_publisher(Header, f"hop{spec['index'] + 1}", 10)
        count = {"n": 0}

        def relay(msg: Header) -> None:
            count["n"] += 1
            publisher.publish(msg)

        node.create_subscription(Header, f"hop{spec['index']}", relay, 10)
        if not spec.get("plain"):
            return _spin_and_report(node, lambda: {"frames": count["n"], "times": {}}, spec)
        path = Path(spec["stats"])

        def report() -> None:
            while True:
                path.write_text(json.dumps({"t": time.monotonic(), "cpu_s": _cpu_s(),
                                            "frames": count["n"], "times": {}}))
                time.sleep(1.0)

        threading.Thread(target=report, daemon=True).start()
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            rclpy.spin(node)  # rclpy's own SIGTERM handling ends it
        return 0
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    hops, latencies = spec["hops"], []
    publisher = node.create_publisher(Header, "hop0", 10)

    def receive(msg: Header) -> None:
        sent = msg.stamp.sec * 10**9 + msg.stamp.nanosec
        latencies.append((time.time_ns() - sent) / 1e6 / hops)

    node.create_subscription(Header, f"hop{hops - 1}", receive, 10)
    period, due = 1.0 / spec["fps"], time.monotonic()
    deadline = time.monotonic() + spec["seconds"]
    while not stop["now"] and time.monotonic() < deadline:
        if time.monotonic() >= due:
            due += period
            msg = Header()
            msg.stamp.sec, msg.stamp.nanosec = divmod(time.time_ns(), 10**9)
            publisher.publish(msg)
        rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, due - time.monotonic())))
    Path(spec["stats"]).write_text(json.dumps({"latencies_ms": latencies}))
    node.destroy_node()
    return 0


def _run_role(spec: dict) -> int:
    import rclpy

    from split_infer.ros.common import tune_allocator

    if spec.get("tune_allocator", True):  # as run_node does
        tune_allocator()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(domain_id=int(spec["domain_id"]))
    try:
        role = spec["role"]
        if role == "edge":
            return _role_edge(spec)
        if role == "cloud":
            return _role_cloud(spec)
        if role == "camera":
            return _role_camera(spec)
        return _role_null(spec)
    finally:
        rclpy.try_shutdown()


# -- the driver ---------------------------------------------------------------------------------


class _Process:
    def __init__(self, spec: dict, work: Path) -> None:
        from split_infer.defaults import with_robot_dds_profile
        from split_infer.tools.cli._common import ensure_ament_prefix

        ensure_ament_prefix()
        self.spec = spec
        name = spec["role"] + str(spec.get("index", ""))
        spec_path = work / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        self.log = (work / f"{name}.log").open("w")
        env = dict(os.environ)
        if spec.get("dds_profile") == "robot":
            env = with_robot_dds_profile(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __spec__.name, "--role-spec", str(spec_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stats(self) -> dict | None:
        path = Path(self.spec["stats"])
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def _wait_stats(proc: _Process, condition, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = proc.stats()
        if stats is not None and condition(stats):
            return stats
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.spec['role']} exited: see its log in the work dir")
        time.sleep(0.2)
    raise TimeoutError(f"{proc.spec['role']}: no stats after {timeout:g} s")


def _per_frame(first: dict, last: dict) -> dict[str, Any]:
    frames = last["frames"] - first["frames"]
    seconds = last["t"] - first["t"]
    cpu_ms = (last["cpu_s"] - first["cpu_s"]) * 1e3
    out: dict[str, Any] = {"fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
                           "frames": frames, "seconds": round(seconds, 1),
                           "cpu_percent": round(cpu_ms / 10 / seconds, 1)}
    if frames <= 0:
        return out
    stages = {}
    for name, value in last["times"].items():
        before = first["times"].get(name, {"ns": 0})
        stages[name] = (value["ns"] - before["ns"]) / 1e6 / frames
    cpu = cpu_ms / frames
    model, codec = stages.get("model", 0.0), stages.get("codec", 0.0)
    out.update({
        "cpu_ms_per_frame": round(cpu, 3), "model_ms_per_frame": round(model, 3),
        "codec_ms_per_frame": round(codec, 3),
        "overhead_ms_per_frame": round(cpu - model - codec, 3),
        "stages_ms_per_frame": {k: round(v, 3) for k, v in sorted(stages.items())},
        "other_ms_per_frame": round(cpu - sum(stages.values()), 3),
    })
    if "deserialize_ms" in last:
        out["deserialize_ms"] = round(last["deserialize_ms"], 3)
    return out


def _measure(procs: dict[str, _Process], warmup: float, seconds: float,
             need_frames: bool) -> dict[str, dict]:
    firsts = {}
    time.sleep(warmup)
    for name, proc in procs.items():
        firsts[name] = _wait_stats(proc, lambda s: (s["frames"] > 0) or not need_frames)
    time.sleep(seconds)
    return {name: _per_frame(firsts[name], proc.stats()) for name, proc in procs.items()}


def measure_nodes(args, work: Path, domain: int) -> dict[str, dict[str, dict]]:
    """Per node and camera size/encoding (plus ``idle``): the per-frame figures."""
    from tqdm import tqdm

    base = {"bundle": str(args.bundle), "domain_id": domain, "executor": args.executor,
            "threads": args.threads, "dds_profile": args.dds_profile,
            "tune_allocator": not args.no_allocator_tuning}
    results: dict[str, dict[str, dict]] = {"edge": {}, "cloud": {}}
    cases = [(size, enc) for size in args.sizes for enc in args.encodings]
    for size, encoding in tqdm(cases, desc="cpu", unit="case"):
        width, height = (int(v) for v in size.split("x"))
        key = f"{size}_{encoding}"
        frame = {"width": width, "height": height, "encoding": encoding}
        procs = {
            "cloud": _Process({**base, "role": "cloud", "stats": str(work / "cloud.stats")},
                              work),
            "edge": _Process({**base, **frame, "role": "edge",
                              "stats": str(work / "edge.stats")}, work)}
        camera = _Process({**base, **frame, "role": "camera", "fps": args.fps}, work)
        profile = None
        try:
            if args.py_spy and size == args.sizes[len(args.sizes) // 2]:
                profile = _py_spy(procs["edge"], work, args, key)
            measured = _measure(procs, args.warmup, args.seconds, need_frames=True)
        finally:
            camera.stop()
            for proc in procs.values():
                proc.stop()
            if profile is not None:
                profile.wait(timeout=args.seconds + 30)
        for name in procs:
            results[name][key] = measured[name]
    # Idle: the same nodes, no camera.
    procs = {name: _Process({**base, "role": name, "stats": str(work / f"{name}.stats")},
                            work) for name in ("cloud", "edge")}
    try:
        idle = _measure(procs, args.warmup, args.seconds, need_frames=False)
    finally:
        for proc in procs.values():
            proc.stop()
    for name in procs:
        for entry in results[name].values():
            entry["idle_cpu_percent"] = idle[name]["cpu_percent"]
        results[name]["idle"] = {"idle_cpu_percent": idle[name]["cpu_percent"]}
    return results


def _py_spy(proc: _Process, work: Path, args, key: str):
    """py-spy's top functions of the edge process over the measurement (a speedscope file)."""
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        return None
    out = args.out / f"py_spy_edge_{key}_{args.label}.txt"
    time.sleep(args.warmup)
    return subprocess.Popen(
        [exe, "record", "--pid", str(proc.process.pid), "--duration", str(int(args.seconds)),
         "--format", "raw", "--threads", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_null_hop(args, work: Path, domain: int) -> dict[str, Any]:
    """Three hops (source → relay → relay → source), relays spinning as split_infer's nodes
    do, then the same with bare ``rclpy.spin`` relays (the floor)."""
    import numpy as np

    base = {"domain_id": domain, "fps": args.fps, "seconds": args.seconds,
            "dds_profile": args.dds_profile, "tune_allocator": not args.no_allocator_tuning,
            "executor": args.executor}
    results = {}
    for plain in (False, True):
        relays = [_Process({**base, "role": "null_relay", "index": i, "plain": plain,
                            "stats": str(work / f"relay{i}.stats")}, work) for i in range(2)]
        try:
            first = [_wait_stats(r, lambda s: True) for r in relays]
            time.sleep(args.warmup)
            first = [r.stats() for r in relays]
            source = _Process({**base, "role": "null_source", "hops": 3,
                               "stats": str(work / f"source{int(plain)}.json")}, work)
            source.process.wait(timeout=args.seconds + 60)
            source.log.close()
            time.sleep(1.5)  # a relay stats file newer than the last message
            last = [r.stats() for r in relays]
        finally:
            for r in relays:
                r.stop()
        latencies = json.loads(Path(source.spec["stats"]).read_text())["latencies_ms"]
        cpu = [(b["cpu_s"] - a["cpu_s"]) * 1e3 / max(b["frames"] - a["frames"], 1)
               for a, b in zip(first, last, strict=True)]
        results[plain] = {"p50": float(np.median(latencies)) if latencies else float("nan"),
                          "messages": len(latencies), "cpu_ms": float(np.mean(cpu))}
    return {"null_hop_ms_p50": round(results[False]["p50"], 3),
            "null_hop_cpu_ms": round(results[False]["cpu_ms"], 3),
            "null_hop_floor_ms_p50": round(results[True]["p50"], 3),
            "null_hop_floor_cpu_ms": round(results[True]["cpu_ms"], 3),
            "null_hop_messages": results[False]["messages"]}


def _plot(report: dict, path: Path) -> None:
    plt = common.pyplot()
    labels = list(report["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, node in zip(axes, ("edge", "cloud"), strict=True):
        cases = [k for k in report["runs"][labels[-1]]["nodes"][node] if k != "idle"]
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            rows = report["runs"][label]["nodes"][node]
            model = [rows.get(c, {}).get("model_ms_per_frame", 0) for c in cases]
            codec = [rows.get(c, {}).get("codec_ms_per_frame", 0) for c in cases]
            over = [rows.get(c, {}).get("overhead_ms_per_frame", 0) for c in cases]
            x = [j + i * width for j in range(len(cases))]
            ax.bar(x, model, width, label=f"{label}: model")
            ax.bar(x, codec, width, bottom=model, label=f"{label}: codec")
            ax.bar(x, over, width, bottom=[m + c for m, c in zip(model, codec, strict=True)],
                   label=f"{label}: overhead", alpha=0.6)
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(cases))])
        ax.set_xticklabels(cases, rotation=20)
        ax.set_ylabel("CPU ms per frame")
        ax.set_title(f"{node} node")
        ax.legend(fontsize=7)
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """``split-infer bench cpu [ARGS]`` (or, internally, one process: ``--role-spec FILE``)."""
    from split_infer.defaults import DEFAULT_BUNDLE

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--role-spec"]:
        return _run_role(json.loads(Path(argv[1]).read_text()))
    parser = common.bench_parser("cpu", __doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="bundle the nodes load (default: the shipped one)")
    parser.add_argument("--sizes", nargs="+", default=["32x32", "640x480", "1280x720"],
                        help="camera sizes WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--encodings", nargs="+", default=["rgb8", "bgr8"],
                        help="camera encodings (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (default: 30)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per case (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds before measuring (default: %(default)s)")
    parser.add_argument("--executor", choices=("product", "single", "multi"),
                        default="product",
                        help="how the node processes spin: product = as split_infer's nodes "
                             "do (ros.common.make_executor), single = rclpy's "
                             "SingleThreadedExecutor, multi = its MultiThreadedExecutor, as "
                             "before (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="the nodes' ONNX Runtime threads (default: 0 = their default)")
    parser.add_argument("--dds-profile", choices=("robot", "default"), default="robot",
                        help="robot: the shipped Fast DDS profile (config/fastdds_robot.xml) "
                             "in every process; default: Fast DDS's defaults "
                             "(default: %(default)s)")
    parser.add_argument("--no-allocator-tuning", action="store_true",
                        help="leave glibc's malloc thresholds alone (as before)")
    parser.add_argument("--label", default="after",
                        help="name of this run in cpu.json (default: %(default)s)")
    parser.add_argument("--py-spy", action="store_true",
                        help="profile the edge at the middle size with py-spy")
    parser.add_argument("--no-null-hop", action="store_true", help="skip the no-work graph")
    common.add_out_argument(parser, "cpu", "cpu.json and cpu.png")
    args = parser.parse_args(argv)
    for size in args.sizes:
        parts = size.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            parser.error(f"--sizes: {size!r} is not WIDTHxHEIGHT")
    args.out.mkdir(parents=True, exist_ok=True)
    import tempfile

    domain = 150 + os.getpid() % 60
    with tempfile.TemporaryDirectory(prefix="si_cpu_") as tmp:
        work = Path(tmp)
        run: dict[str, Any] = {"command": common.command_line("cpu", argv),
                               "started": common.timestamp(),
                               "machine": common.machine_info(), "executor": args.executor,
                               "dds_profile": args.dds_profile,
                               "allocator_tuning": not args.no_allocator_tuning,
                               "fps_in": args.fps, "bundle": str(args.bundle),
                               "nodes": measure_nodes(args, work, domain)}
        if not args.no_null_hop:
            run.update(measure_null_hop(args, work, domain))
    path = args.out / "cpu.json"
    report = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    report["runs"][args.label] = run
    if args.label == "after" or "after" not in report["runs"]:
        # The top level holds the current measurement with the keys.
        report.update({k: v for k, v in run.items() if k != "command"})
    common.write_json(path, report)
    _plot(report, args.out / "cpu.png")
    for node, rows in run["nodes"].items():
        for case, row in rows.items():
            if case != "idle":
                print(f"{args.label} {node:5s} {case:14s} {row.get('fps', 0):6.1f} fps "
                      f"cpu {row.get('cpu_ms_per_frame', 0):6.2f} ms/frame model "
                      f"{row.get('model_ms_per_frame', 0):5.2f} codec "
                      f"{row.get('codec_ms_per_frame', 0):5.2f} overhead "
                      f"{row.get('overhead_ms_per_frame', 0):6.2f}")
        print(f"{args.label} {node:5s} idle {rows['idle']['idle_cpu_percent']} % of a core")
    if "null_hop_ms_p50" in run:
        print(f"null hop p50 {run['null_hop_ms_p50']} ms, {run['null_hop_cpu_ms']} ms CPU per "
              f"message; floor {run['null_hop_floor_ms_p50']} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
