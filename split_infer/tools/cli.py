"""The ``split-infer`` command.

Sub-commands (``split-infer COMMAND --help`` for each):

* ``models``            list the registered backbones and their split points
* ``codecs``            list the feature codecs and example specs
* ``profile MODEL``     per-split-point shapes, bytes, MACs and head/tail latency (torch vs ORT)
* ``bench codecs``      bytes per frame and encode/decode time of every codec on real features
* ``demo``              the main job: edge → codec → cloud over test images

Errors a user can cause (unknown model, missing data, bad spec ...) print one line and exit
with status 2; they never end in a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from split_infer import __version__
from split_infer.defaults import DEFAULT_BUNDLE, DEMO_BAG, DEMO_TRACE

__all__ = ["main"]


def _ensure_ament_prefix() -> None:
    """rclpy from the ros-* wheels finds its packages through AMENT_PREFIX_PATH = the venv."""
    if "AMENT_PREFIX_PATH" not in os.environ:
        index = Path(sys.prefix) / "share" / "ament_index"
        if index.is_dir():
            os.environ["AMENT_PREFIX_PATH"] = sys.prefix


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def cmd_models(args: argparse.Namespace) -> int:
    from split_infer.models import get_model, get_model_spec, list_models

    for name in list_models(args.family):
        spec = get_model_spec(name)
        line = f"{name:26s} {spec.family:9s} input {'x'.join(map(str, spec.input_shape)):11s}"
        print(f"{line} {spec.description}")
        if args.verbose:
            points = get_model(name).split_points()
            print("    split points: " + ", ".join(f"{p.index}:{p.name}" for p in points))
    return 0


def cmd_codecs(args: argparse.Namespace) -> int:
    from split_infer.codecs import list_codecs

    listing = list_codecs()
    if isinstance(listing, dict):
        for key, values in listing.items():
            print(f"{key}:")
            for value in values:
                print(f"  {value}")
    else:
        for value in listing:
            print(value)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from split_infer.pipeline.profiling import run_profile

    _set_threads(args.threads)
    input_shape = tuple(args.input_shape) if args.input_shape else None
    profile = run_profile(
        args.model,
        args.out,
        backends=tuple(args.backends),
        repeats=args.repeats,
        input_shape=input_shape,
        threads=args.threads,
    )
    print(profile.format_table())
    print(f"\nwrote {args.out}/")
    return 0


def cmd_bench_codecs(args: argparse.Namespace) -> int:
    from split_infer.tools.bench.codecs import bench_codecs

    _set_threads(args.threads)
    rows, _ = bench_codecs(
        model_name=args.model,
        weights=args.weights,
        split_point=args.split,
        specs=args.codec or None,
        calibration_images=args.calibration_images,
        frames=args.frames,
        out_dir=args.out,
    )
    return 0 if rows else 1


def cmd_train_backbone(args: argparse.Namespace) -> int:
    from split_infer.models import get_model, save_weights
    from split_infer.training.backbone import TrainConfig, train_backbone
    from split_infer.training.datasets import load_dataset

    _set_threads(args.threads)
    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    train = load_dataset(args.dataset, "train", args.data)
    test = load_dataset(args.dataset, "test", args.data)
    if args.train_images:
        train = train.subset(args.train_images, seed=args.seed)
    if args.test_images:
        test = test.subset(args.test_images, seed=args.seed)
    model = get_model(args.model, num_classes=len(train.classes))
    checkpoint = args.out.with_suffix(".checkpoint.safetensors")
    history = train_backbone(model.net, train, test,
                             TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                         lr=args.lr, seed=args.seed), checkpoint)
    model.eval()
    save_weights(model, args.out)
    print(f"wrote {args.out}: test top-1 {history[-1]['top1']:.2f}% after {len(history)} epochs "
          f"(resume state in {checkpoint})")
    return 0


def _parse_ratios(values: list[str] | None, methods: list[str]
                  ) -> list[float] | dict[str, list[float]] | None:
    """``--ratio 4`` applies to every method, ``--ratio bbnet=16`` to one; mixing them gives
    the plain values to the methods that have none of their own."""
    if not values:
        return None
    common: list[float] = []
    per_method: dict[str, list[float]] = {}
    for value in values:
        method, sep, number = value.rpartition("=")
        if sep and method not in methods:
            raise ValueError(f"--ratio {value}: {method!r} is not one of the --method values "
                            f"{methods}")
        try:
            ratio = float(number)
        except ValueError:
            raise ValueError(f"--ratio {value}: {number!r} is not a number") from None
        if not ratio > 0:
            raise ValueError(f"--ratio {value}: a ratio must be positive")
        (per_method.setdefault(method, []) if sep else common).append(ratio)
    if not per_method:
        return common
    return {m: per_method.get(m, common) for m in methods if m in per_method or common}


def _parse_method_options(values: list[str] | None, methods: list[str]
                          ) -> dict[str, dict[str, Any]] | None:
    """``METHOD.KEY=VALUE`` → ``{METHOD: {KEY: VALUE}}``; numbers and true/false are typed."""
    if not values:
        return None
    options: dict[str, dict[str, Any]] = {}
    for value in values:
        target, sep, raw = value.partition("=")
        method, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--option {value}: expected METHOD.KEY=VALUE")
        if method not in methods:
            raise ValueError(f"--option {value}: {method!r} is not one of the --method values "
                            f"{methods}")
        options.setdefault(method, {})[key] = _typed(raw)
    return options


def _typed(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def cmd_train(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    methods = args.method or ["baseline"]
    if methods == ["baseline"]:
        from split_infer.training.baseline import build_baseline_bundle

        bundle = build_baseline_bundle(
            args.model,
            args.out,
            weights=args.weights,
            dataset=args.dataset,
            data_path=args.data,
            split_points=args.split or None,
            codecs=args.codec or None,
            calibration_images=args.calibration_images,
            eval_images=args.eval_images or None,
            force=args.force,
        )
    else:
        from split_infer.training.learned import train_bundle

        bundle = train_bundle(
            args.model,
            args.out,
            methods=methods,
            weights=args.weights,
            dataset=args.dataset,
            data_path=args.data,
            split_points=args.split or None,
            ratios=_parse_ratios(args.ratio, methods),
            method_options=_parse_method_options(args.option, methods),
            epochs=args.epochs,
            threshold_points=args.threshold,
            freeze_backbone=not args.no_freeze,
            work_dir=args.work_dir,
            train_images=args.train_images or None,
            eval_images=args.eval_images or None,
            keep=args.keep,
            baseline_codecs=args.codec or None,
            slim=args.slim,
            force=args.force,
        )
    print(format_configurations(bundle))
    print(f"\nwrote bundle {bundle.path}")
    return 0


def format_configurations(bundle, rows: list[dict] | None = None) -> str:
    """Aligned table of a bundle's configurations (or of fresh evaluation ``rows``)."""
    entries = rows or [c.to_dict() for c in bundle.configurations]
    header = f"{'id':14s} {'split':>14s} {'ratio':>7s} {'top-1 %':>8s} {'bytes/frame':>11s}  codec"
    lines = [header, "-" * (len(header) + 30)]
    for e in entries:
        split_label = f"{e['split_point']}:{e['split_name']}"
        accuracy = "-" if e.get("accuracy") is None else f"{100 * e['accuracy']:.2f}"
        size = "-" if e.get("bytes_per_frame") is None else f"{e['bytes_per_frame']:.1f}"
        lines.append(f"{e['id']:14s} {split_label:>14s} {e['ratio']:7.3g} {accuracy:>8s} "
                     f"{size:>11s}  {e['codec']}")
    references = {
        "client_only": "whole model on the edge",
        "server_only": "input image as JPEG q{jpeg_quality} into the whole model",
    }
    for key, description in references.items():
        ref = bundle.manifest.get(key)
        if ref and rows is None:  # references were measured on the manifest's image set
            size = f"{ref.get('bytes_per_frame', 0.0):.1f}"
            lines.append(f"{key:14s} {'':>14s} {'':>7s} {100 * ref['accuracy']:8.2f} "
                         f"{size:>11s}  {description.format(**ref)}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from split_infer.bundle import Bundle
    from split_infer.pipeline.evaluate import evaluate_bundle, evaluate_client_only
    from split_infer.training.datasets import load_dataset

    _set_threads(args.threads)
    bundle = Bundle.load(args.bundle)
    dataset_name = bundle.manifest.get("dataset", {}).get("name", "cifar10")
    test = load_dataset(dataset_name, "test", args.data)
    if args.images:
        test = test.subset(args.images, seed=1)
    configs = ([bundle.configuration_by_id(i) for i in args.config] if args.config
               else bundle.configurations)
    rows = evaluate_bundle(bundle, test, configs)
    full_onnx = bundle.manifest.get("client_only", {}).get("onnx")
    client = evaluate_client_only(bundle.file(full_onnx), test) if full_onnx else None
    print(f"{bundle.path}: {len(test)} {dataset_name} test images, real wire frames")
    print(format_configurations(bundle, rows))
    if client:
        print(f"unsplit model top-1 on the same images: {100 * client['accuracy']:.2f} %")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"bundle": str(bundle.path), "images": len(test),
                                        "rows": rows, "unsplit": client}, indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    if args.devices:
        return _plan_pipeline(args)
    from split_infer.tools.plan.report import plan_bundle

    if any(b <= 0 for b in args.bandwidth):
        raise ValueError("--bandwidth values must be positive (Mbit/s)")
    report = plan_bundle(
        args.bundle,
        bandwidths_bps=tuple(b * 1e6 for b in args.bandwidth),
        rtt_s=args.rtt_ms / 1e3,
        frame_rate_hz=args.frame_rate,
        deadline_s=args.deadline_ms / 1e3 if args.deadline_ms else None,
        edge_time_scale=args.edge_time_scale,
        cloud_time_scale=args.cloud_time_scale,
        out_dir=args.out,
    )
    print(report.format_text())
    return 0


def _plan_pipeline(args: argparse.Namespace) -> int:
    """``plan --devices``: Hu & K's partition over a chain, saved as a plan + launch file."""
    from split_infer.tools.plan.chain import parse_devices, plan_pipeline, write_launch_file

    devices = parse_devices(args.devices)
    links = args.link_mbps or [10.0]
    if any(b <= 0 for b in links):
        raise ValueError("--link-mbps values must be positive (Mbit/s)")
    plan = plan_pipeline(args.bundle, devices,
                         links[0] * 1e6 if len(links) == 1 else [b * 1e6 for b in links],
                         max_link_loss_points=args.max_link_loss)
    out = args.out if args.out.suffix in (".yaml", ".yml") else args.out / "plan.yaml"
    plan.save(out)
    launch = write_launch_file(plan, out.with_name(out.stem + ".launch.py"), out)
    figure = plan.plot(out.with_suffix(".png"))
    print(plan.format_text())
    print(f"\nwrote {out}, {launch} (ros2 launch {launch.name} [stage:=DEVICE]) and {figure}")
    return 0


def cmd_bag_make(args: argparse.Namespace) -> int:
    from split_infer.tools.bag.storage import write_dataset_bag
    from split_infer.training.datasets import load_dataset

    dataset = load_dataset(args.dataset, args.split, args.data).subset(args.count, seed=args.seed)
    path = write_dataset_bag(args.out, dataset, rate_hz=args.rate)
    print(f"wrote {len(dataset)} frames of {args.dataset}/{args.split} at {args.rate} Hz "
          f"to {path}")
    return 0


def cmd_bag_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from split_infer.tools.bag.storage import read_bag_raw

    counts: Counter = Counter()
    types, first, last = {}, None, None
    for topic, msgtype, stamp, _ in read_bag_raw(args.bag):
        counts[topic] += 1
        types[topic] = msgtype
        first = stamp if first is None else first
        last = stamp
    print(f"{args.bag}: {sum(counts.values())} messages over "
          f"{((last or 0) - (first or 0)) / 1e9:.2f} s")
    for topic, count in sorted(counts.items()):
        print(f"  {topic:32s} {types[topic]:40s} {count}")
    return 0


def _spin_until(node, done, timeout_s: float | None) -> None:
    """Spin ``node`` until ``done()`` is true, ``timeout_s`` passes, or Ctrl-C."""
    import time

    import rclpy

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while rclpy.ok() and not done():
        if deadline is not None and time.monotonic() >= deadline:
            break
        rclpy.spin_once(node, timeout_sec=0.1)


def cmd_bag_play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.parameter import Parameter

    from split_infer.tools.bag.player import BagPlayer

    rclpy.init()
    node = None
    try:
        node = BagPlayer(parameter_overrides=[
            Parameter("bag", value=str(args.bag)), Parameter("rate", value=args.rate),
            Parameter("loop", value=args.loop), Parameter("start_delay", value=args.delay)])
        _spin_until(node, node.finished.is_set, None)
        print(f"published {node.published} messages")
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def cmd_bag_record(args: argparse.Namespace) -> int:
    import rclpy

    from split_infer.tools.bag.recorder import BagRecorder

    rclpy.init()
    node = None
    try:
        node = BagRecorder(args.out, args.topic)
        _spin_until(node, lambda: False, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            path = node.close()
            print(f"wrote {path}: " + ", ".join(f"{t} {n}" for t, n in node.counts.items()))
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    if args.offline:
        from split_infer.tools.demo.offline import run_offline_demo

        report = run_offline_demo(
            model_name=args.model,
            weights=args.weights,
            split_point=args.split,
            codec_spec=args.codec,
            images=args.images,
            backend=args.backend,
            out_dir=args.out,
        )
        print(json.dumps(report["summary"], indent=2))
        return 0
    from split_infer.defaults import find_trace
    from split_infer.tools.demo.graph import DemoSettings, run_demo

    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    settings = DemoSettings(bundle=args.bundle, bag=args.bag, trace=find_trace(args.trace),
                            duration_s=args.duration, out_dir=args.out,
                            objective=args.objective, frame_rate=args.frame_rate)
    print(f"split-infer demo: {settings.bundle.name} bundle, bag {settings.bag.name}, "
          f"trace {settings.trace.name}, {settings.duration_s:g} s")
    report = run_demo(settings)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {settings.out_dir / 'report.json'} and {settings.out_dir / 'timeline.png'}")
    return 0


def cmd_testbed(args: argparse.Namespace) -> int:
    from split_infer.tools.testbed.netns import netns_problem, remove_stale

    problem = netns_problem()
    if problem:
        raise PermissionError(f"split-infer testbed: {problem}")
    if args.cleanup:
        removed = remove_stale()
        print(f"removed {len(removed)} stale testbed namespaces" +
              (f": {' '.join(removed)}" if removed else ""))
        return 0
    from split_infer.defaults import find_trace
    from split_infer.tools.testbed.runner import TestbedSettings, run_testbed

    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    if args.jitter_ms < 0:
        raise ValueError("--jitter-ms must be >= 0")
    settings = TestbedSettings(bundle=args.bundle, bag=args.bag, trace=find_trace(args.trace),
                               duration_s=args.duration, out_dir=args.out,
                               strategy=args.strategy, initial=args.initial,
                               objective=args.objective, frame_rate=args.frame_rate,
                               jitter_ms=args.jitter_ms)
    report = run_testbed(settings)
    print(json.dumps(report["summary"], indent=2))
    if report["link"]["not_applied"]:
        print(f"note: this kernel could not apply {report['link']['not_applied']} from the "
              f"trace (capabilities {report['link']['capabilities']})")
    print(f"wrote {settings.out_dir / 'report.json'} and {settings.out_dir / 'timeline.png'}")
    return 0


def _graph_arguments(p: argparse.ArgumentParser, duration_s: float, out: str) -> None:
    """The arguments ``demo`` and ``testbed`` share: what runs, over which trace, for how long."""
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--bag", type=Path, default=DEMO_BAG, help="camera bag with labels")
    p.add_argument("--trace", default=DEMO_TRACE,
                   help="bandwidth trace: a file, or a name in config/traces/ "
                        "(time_s,rate_bps,delay_ms,loss)")
    p.add_argument("--duration", type=float, default=duration_s, help="seconds")
    p.add_argument("--objective", default="effective_accuracy",
                   choices=["effective_accuracy", "latency", "accuracy"])
    p.add_argument("--frame-rate", type=float, default=30.0,
                   help="camera rate T_gen the scheduler plans for, Hz")
    p.add_argument("--out", type=Path, default=Path(out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="split-infer",
        description="Split CNN inference between a robot and a server over ROS 2.",
    )
    parser.add_argument("--version", action="version", version=f"split_infer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered backbones")
    p.add_argument("--family", choices=["cifar", "imagenet"])
    p.add_argument("-v", "--verbose", action="store_true", help="also list split points")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("codecs", help="list feature codecs and example specs")
    p.set_defaults(func=cmd_codecs)

    p = sub.add_parser("profile", help="profile every split point of a model")
    p.add_argument("model")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: profiles/MODEL)"
    )
    p.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"]
    )
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch and ONNX Runtime intra-op threads (default 1: steadier timings)")
    p.set_defaults(func=cmd_profile)

    bench = sub.add_parser("bench", help="benchmarks (write JSON and plots)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = bench_sub.add_parser("codecs", help="every codec on real features from a real split")
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="safetensors weights (default: the shipped CIFAR-10 weights)",
    )
    p.add_argument("--split", default="layer2.2", help="split point index or block name")
    p.add_argument("--codec", action="append", help="codec spec (repeatable; default: all)")
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_bench_codecs)

    p = sub.add_parser("train-backbone", help="train a backbone classifier (resumable)")
    p.add_argument("model")
    p.add_argument("--out", type=Path, required=True, help="weights file (.safetensors)")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "fashion_mnist", "folder"])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak one-cycle learning rate")
    p.add_argument("--train-images", type=int, default=0, help="random subset (0 = all)")
    p.add_argument("--test-images", type=int, default=0, help="random subset (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_train_backbone)

    p = sub.add_parser("train", help="calibrate codecs at split points and write a bundle")
    p.add_argument("model")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--weights", type=Path, default=None,
                   help="backbone safetensors (default: the shipped CIFAR-10 weights)")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "fashion_mnist", "folder"])
    p.add_argument("--data", type=Path, default=None, help="data path (zip, IDX dir, folder)")
    p.add_argument("--split", action="append", help="split point index or name (repeatable)")
    p.add_argument("--codec", action="append", help="baseline codec spec (repeatable)")
    p.add_argument("--method", action="append",
                   choices=["baseline", "bottlenet", "hu_ae", "aecnn", "bbnet", "rateless"],
                   help="codec method to train (repeatable; default: baseline only)")
    p.add_argument("--ratio", action="append",
                   help="compression ratio to try, R for every method or METHOD=R for one "
                        "(repeatable; default: each method's ladder)")
    p.add_argument("--option", action="append", metavar="METHOD.KEY=VALUE",
                   help="builder option of a learned method, e.g. "
                        "rateless.wire_codec=quant:bits=4,per=channel+rans (repeatable)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per learned configuration")
    p.add_argument("--threshold", type=float, default=2.0,
                   help="accuracy loss allowed by the search, top-1 points (Algorithm 1)")
    p.add_argument("--keep", default="within", choices=["within", "best", "all"],
                   help="export every ratio within the threshold, only the best, or all")
    p.add_argument("--no-freeze", action="store_true",
                   help="fine-tune the backbone too (Hu & K); default: frozen backbone")
    p.add_argument("--slim", type=float, default=None,
                   help="BBNet network slimming of the backbone first (fraction, e.g. 0.4)")
    p.add_argument("--train-images", type=int, default=0, help="training subset (0 = all)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints for resuming (default: OUT.work)")
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--eval-images", type=int, default=1000, help="0 = the whole test split")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="re-measure a bundle from real wire frames")
    p.add_argument("bundle", type=Path)
    p.add_argument("--images", type=int, default=0, help="test images (0 = all)")
    p.add_argument("--config", action="append", help="configuration id (repeatable)")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plan", help="latency and effective-accuracy analysis of a bundle")
    p.add_argument("bundle", type=Path, nargs="?", default=DEFAULT_BUNDLE)
    p.add_argument("--bandwidth", type=float, nargs="+", default=[0.1, 1.0, 10.0],
                   help="bandwidths to plan for, Mbit/s")
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--frame-rate", type=float, default=30.0, help="camera rate T_gen, Hz")
    p.add_argument("--deadline-ms", type=float, default=0.0, help="latency deadline (0: none)")
    p.add_argument("--edge-time-scale", type=float, default=1.0,
                   help="multiply the profiled edge times (a robot slower than this machine)")
    p.add_argument("--cloud-time-scale", type=float, default=1.0,
                   help="multiply the profiled cloud times")
    p.add_argument("--devices", action="append", metavar="NAME=GMACS,...",
                   help="plan an n-stage chain instead: devices in chain order with their "
                        "speed in GMAC/s, e.g. robot=2,pi=2.5,server=40 (Hu & K eq. (2))")
    p.add_argument("--link-mbps", type=float, nargs="+", default=None,
                   help="with --devices: bandwidth of every link, or one per link (default 10)")
    p.add_argument("--max-link-loss", type=float, default=1.0,
                   help="with --devices: top-1 points a link's codec may cost (default 1)")
    p.add_argument("--out", type=Path, default=Path("out/plan"),
                   help="output directory; with --devices a plan .yaml (its launch file and "
                        "plot are written next to it)")
    p.set_defaults(func=cmd_plan)

    bag = sub.add_parser("bag", help="rosbag2 (MCAP) camera bags without ros2bag")
    bag_sub = bag.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND")
    p = bag_sub.add_parser("make", help="write dataset images + labels as a camera bag")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "fashion_mnist", "folder"])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--rate", type=float, default=30.0, help="frames per second")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bag_make)
    p = bag_sub.add_parser("info", help="topics, types and counts of a bag")
    p.add_argument("bag", type=Path)
    p.set_defaults(func=cmd_bag_info)
    p = bag_sub.add_parser("play", help="publish a bag's topics at the recorded pace")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0, help="playback speed")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--delay", type=float, default=1.0,
                   help="seconds before the first message (lets subscribers connect)")
    p.set_defaults(func=cmd_bag_play)
    p = bag_sub.add_parser("record", help="record live topics into a bag")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--topic", action="append", required=True, help="topic (repeatable)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    p.set_defaults(func=cmd_bag_record)

    p = sub.add_parser("demo", help="run the main job: the whole ROS graph in one process")
    _graph_arguments(p, duration_s=45.0, out="out/demo")
    p.add_argument("--threads", type=int, default=None)
    offline = p.add_argument_group("--offline: edge → codec → cloud without ROS, on test images")
    offline.add_argument("--offline", action="store_true")
    offline.add_argument("--model", default="resnet20_cifar")
    offline.add_argument("--weights", type=Path, default=None)
    offline.add_argument("--split", default="layer2.2")
    offline.add_argument("--codec", default="quant:bits=4,per=channel+rans")
    offline.add_argument("--images", type=int, default=500, help="CIFAR-10 test images")
    offline.add_argument("--backend", choices=["torch", "onnxruntime"], default="onnxruntime")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("testbed", help="the graph over a real tc-shaped link between two "
                                       "network namespaces (root)")
    _graph_arguments(p, duration_s=30.0, out="out/testbed")
    p.add_argument("--strategy", default="adaptive",
                   help="'adaptive' (monitor + scheduler), a fixed 'split:ratio', "
                        "'cloud_only' (JPEG frames) or 'edge_only' (whole model on the robot)")
    p.add_argument("--initial", default="",
                   help="adaptive: the edge's first 'split:ratio' (default: the edge node's "
                        "start-up choice, the best effective accuracy on a link carrying "
                        "just the smallest frames)")
    p.add_argument("--jitter-ms", type=float, default=0.0,
                   help="± uniform jitter added to the delay of trace segments that have one")
    p.add_argument("--cleanup", action="store_true",
                   help="only remove namespaces left by killed testbed runs")
    p.set_defaults(func=cmd_testbed)
    return parser


def main(argv: list[str] | None = None) -> int:
    _ensure_ament_prefix()
    args = build_parser().parse_args(argv)
    if getattr(args, "out", "unset") is None and args.command == "profile":
        args.out = Path("profiles") / args.model
    from split_infer.data import DatasetError
    from split_infer.errors import EncodeError, FrameError

    try:
        return args.func(args)
    except (KeyError, ValueError, OSError, DatasetError, FrameError, EncodeError) as exc:
        # BundleError and BagError are ValueErrors: one line, no traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"split-infer {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"split-infer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
