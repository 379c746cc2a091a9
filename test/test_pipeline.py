"""n-stage pipelines: the middle-stage engine, the stage node in a real 3-node ROS chain, and
``split-infer plan --devices`` (Hu & K eq. (2) on a bundle, the plan YAML and its launch file).

The chains are checked on *what* comes out: with float32 links a chain must give the unsplit
model's result for every frame, with quantized links exactly what the ROS-free engines give.
"""

import ast
import itertools
import threading

import numpy as np
import pytest
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_fixtures import (  # noqa: F401  (fixture: ros_context)
    build_tiny_bundle,
    random_images,
    ros_context_fixture,
    spin,
    wait_for,
    with_measurements,
)
from sensor_msgs.msg import Image

from split_infer.bundle import Bundle, check_chain
from split_infer.data import Preprocessing
from split_infer.errors import FrameError
from split_infer.pipeline.engine import CloudEngine, EdgeEngine, softmax
from split_infer.pipeline.images import rgb_to_image
from split_infer.pipeline.parts import load_backbone
from split_infer.pipeline.stages import StageEngine
from split_infer.planning.partition import brute_force_partition
from split_infer.ros.cloud_node import CloudNode
from split_infer.ros.common import NodeConfigError
from split_infer.ros.edge_node import EdgeNode
from split_infer.ros.messages import CAMERA_QOS
from split_infer.ros.stage_node import StageNode
from split_infer.tools.cli import main as cli_main
from split_infer.tools.plan.chain import (
    PLAN_FORMAT,
    Device,
    load_plan,
    parse_devices,
    plan_pipeline,
    write_launch_file,
)
from split_infer.wire import pack

CHAIN_CODECS = (("float32+raw", 1.0), ("quant:bits=8+raw", 4.0))
CHAIN_SPLITS = (1, 2, 3)


@pytest.fixture(scope="module")
def chain_bundle(tmp_path_factory):
    """A tiny ResNet-8 bundle with float32 and 8-bit links at split points 1, 2 and 3 (so
    chains of up to four stages), plus a rateless configuration at 3."""
    return build_tiny_bundle(tmp_path_factory.mktemp("chain") / "bundle", codecs=CHAIN_CODECS,
                             splits=CHAIN_SPLITS)


@pytest.fixture(scope="module")
def measured_chain_bundle(chain_bundle, tmp_path_factory):
    """The chain bundle with measured-looking numbers (what plan_pipeline reads)."""
    return with_measurements(
        chain_bundle, tmp_path_factory.mktemp("measured_chain") / "bundle",
        lambda c: {"accuracy": 0.9 if c.ratio == 1.0 else 0.895,
                   "bytes_per_frame": 4.0 * float(np.prod(c.feature_shape)) / c.ratio},
        client_only={"accuracy": 0.9})


def config(bundle, split, ratio):
    return bundle.configuration(split, ratio)


def preprocessed(bundle, count, seed=0):
    pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
    images = random_images(count, seed=seed)
    return images, [pre(image) for image in images]


def unsplit_logits(bundle, xs):
    model = load_backbone(bundle)
    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy()[0] for x in xs]


def run_chain(bundle, links, xs):
    """Edge → middle stages → cloud with the ROS-free engines; logits per frame."""
    edge = EdgeEngine.from_bundle(bundle, [links[0]])
    middles = [StageEngine.from_bundle(bundle, a, b) for a, b in itertools.pairwise(links)]
    cloud = CloudEngine.from_bundle(bundle, [links[-1]])
    out = []
    for seq, x in enumerate(xs):
        data = edge.encode(x, seq, 1000 + seq)
        for stage in middles:
            data = stage.forward(data, 2000 + seq)
        frame, logits = cloud.decode(data)
        assert frame.seq == seq and frame.split_point == links[-1].split_point
        out.append(logits[0])
    return out


# -- engines --------------------------------------------------------------------------------------


@pytest.mark.parametrize("splits", [(2, 3), (1, 3), (1, 2, 3)], ids=str)
def test_float32_chains_equal_the_unsplit_model(chain_bundle, splits):
    links = [config(chain_bundle, s, 1.0) for s in splits]
    _, xs = preprocessed(chain_bundle, 12)
    chained = run_chain(chain_bundle, links, xs)
    reference = unsplit_logits(chain_bundle, xs)
    for got, want in zip(chained, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert int(np.argmax(got)) == int(np.argmax(want))
    # The test can fail: the frames do not all predict one class.
    assert len({int(np.argmax(r)) for r in reference}) > 1


def test_quantized_chain_is_each_link_codec_around_its_segment(chain_bundle):
    """An 8-bit chain equals head → codec round trip → segment → codec round trip → tail."""
    links = [config(chain_bundle, 2, 4.0), config(chain_bundle, 3, 4.0)]
    _, xs = preprocessed(chain_bundle, 8)
    chained = np.array(run_chain(chain_bundle, links, xs))
    model = load_backbone(chain_bundle)
    codecs = [chain_bundle.codec(c) for c in links]

    def round_trip(codec, features):
        encoded = codec.compress(features)
        return codec.decompress(encoded.payload, encoded.params, encoded.shape)

    expected = []
    with torch.no_grad():
        for x in xs:
            out = model.segment(0, 2)(torch.from_numpy(x)).numpy()[0]
            out = round_trip(codecs[0], out)
            out = model.segment(2, 3)(torch.from_numpy(out[None])).numpy()[0]
            out = round_trip(codecs[1], out)
            expected.append(model.segment(3, None)(torch.from_numpy(out[None])).numpy()[0])
    # ONNX Runtime and torch differ in the last bits, which can move a value across a
    # quantization step: the chain is compared with a tolerance far below the codecs' error.
    to_expected = np.abs(chained - np.array(expected)).max()
    to_unsplit = np.abs(chained - np.array(unsplit_logits(chain_bundle, xs))).max()
    assert to_expected < 0.1 and to_expected < to_unsplit / 10


def test_segments_compose_to_the_model(chain_bundle):
    model = load_backbone(chain_bundle)
    x = torch.from_numpy(preprocessed(chain_bundle, 2)[1][0])
    with torch.no_grad():
        out = x
        for start, end in [(0, 1), (1, 3), (3, None)]:
            out = model.segment(start, end)(out)
        torch.testing.assert_close(out, model(x))
    for bad in [(2, 2), (3, 1), (-1, 2), (0, 9)]:
        with pytest.raises(ValueError, match="no segment"):
            model.segment(*bad)


def test_stage_engine_rejects_frames_of_another_link(chain_bundle):
    stage = StageEngine.from_bundle(chain_bundle, config(chain_bundle, 1, 1.0),
                                    config(chain_bundle, 2, 1.0))
    features = np.zeros(chain_bundle.configuration(2, 1.0).feature_shape, np.float32)
    other = pack(chain_bundle.codec(config(chain_bundle, 2, 1.0)), features, split_point=2,
                 ratio=1.0, seq=0, stamp_ns=1)
    with pytest.raises(FrameError) as info:
        stage.forward(other, 5)
    assert info.value.reason == "unknown_config"


def test_chains_only_link_through_baseline_codecs_in_order(chain_bundle):
    rateless = next(c for c in chain_bundle.configurations if c.keep_channels is not None)
    with pytest.raises(ValueError, match="cannot link two stages"):
        StageEngine.from_bundle(chain_bundle, config(chain_bundle, 2, 1.0), rateless)
    with pytest.raises(ValueError, match="cannot link two stages"):
        check_chain([rateless, config(chain_bundle, 3, 1.0)])
    with pytest.raises(ValueError, match="increase"):
        StageEngine.from_bundle(chain_bundle, config(chain_bundle, 3, 1.0),
                                config(chain_bundle, 2, 1.0))
    check_chain([config(chain_bundle, 2, 1.0), rateless])  # a learned last link is fine


# -- ROS: edge_node → stage_node → cloud_node -----------------------------------------------------


def image_msg(rgb, seq):
    raw = rgb_to_image(rgb)
    msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding,
                is_bigendian=raw.is_bigendian, step=raw.step)
    msg.data = raw.data
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + seq, 0
    msg.header.frame_id = "camera"
    return msg


def chain_nodes(context, bundle, ratio):
    edge = EdgeNode(context=context, namespace="/chain/robot", parameter_overrides=[
        Parameter("bundle", value=str(bundle.path)), Parameter("split_point", value=2),
        Parameter("ratio", value=ratio), Parameter("preload", value=[f"2:{ratio}"]),
        Parameter("backpressure", value=False)])
    stage = StageNode(context=context, namespace="/chain", parameter_overrides=[
        Parameter("bundle", value=str(bundle.path)), Parameter("upstream", value="robot"),
        Parameter("output_namespace", value="pi"),
        Parameter("input_configuration", value=config(bundle, 2, ratio).id),
        Parameter("output_configuration", value=config(bundle, 3, ratio).id)])
    cloud = CloudNode(context=context, namespace="/chain", parameter_overrides=[
        Parameter("bundle", value=str(bundle.path)), Parameter("edge_namespaces", value=["pi"]),
        Parameter("top_k", value=10)])
    return edge, stage, cloud


@pytest.mark.parametrize("ratio", [1.0, 4.0], ids=["float32", "8bit"])
def test_three_stage_ros_chain(ros_context, chain_bundle, ratio):
    """Frames cross two DDS links; each result names the camera frame and equals the engines'
    chain (float32: the unsplit model)."""
    images, xs = preprocessed(chain_bundle, 10, seed=3)
    links = [config(chain_bundle, 2, ratio), config(chain_bundle, 3, ratio)]
    expected = run_chain(chain_bundle, links, xs)
    if ratio == 1.0:
        for got, want in zip(expected, unsplit_logits(chain_bundle, xs), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    probe = Node("probe", context=ros_context, namespace="/chain")
    results, lock = [], threading.Lock()

    def on_result(msg):
        with lock:
            results.append(msg)

    probe.create_subscription(DiagnosticArray, "pi/results", on_result, 50)
    camera = probe.create_publisher(Image, "robot/image", CAMERA_QOS)
    edge, stage, cloud = chain_nodes(ros_context, chain_bundle, ratio)
    with spin(ros_context, edge, stage, cloud, probe):
        assert wait_for(lambda: camera.get_subscription_count() >= 1)
        assert wait_for(lambda: stage._features_pub.get_subscription_count() >= 1)
        for i, image in enumerate(images):
            camera.publish(image_msg(image, i))
            assert wait_for(lambda i=i: len(results) >= i + 1), f"frame {i} did not arrive"
        stats = stage.stats()
    assert len(results) == len(images)
    for i, msg in enumerate(results):
        assert msg.header.stamp.sec == 100 + i
        entries = [{kv.key: kv.value for kv in s.values} for s in msg.status]
        assert {int(e["seq"]) for e in entries} == {i}
        assert {int(e["split_point"]) for e in entries} == {3}
        probabilities = softmax(expected[i])
        assert [int(e["class_id"]) for e in entries] == \
            list(np.argsort(-probabilities, kind="stable"))
        for e in entries:
            assert float(e["score"]) == pytest.approx(probabilities[int(e["class_id"])],
                                                      rel=1e-5, abs=1e-7)
    (stream,) = stats.values()
    assert stream["frames"] == len(images) and not stream["rejects"]


def test_stage_node_configuration_errors(ros_context, chain_bundle):
    rateless = next(c for c in chain_bundle.configurations if c.keep_channels is not None)
    base = [Parameter("bundle", value=str(chain_bundle.path))]
    cases = [
        ([Parameter("input_configuration", value=config(chain_bundle, 2, 1.0).id)], "both"),
        ([Parameter("input_configuration", value="nope"),
          Parameter("output_configuration", value=config(chain_bundle, 3, 1.0).id)], "nope"),
        ([Parameter("input_configuration", value=config(chain_bundle, 2, 1.0).id),
          Parameter("output_configuration", value=rateless.id)], "cannot link"),
        ([Parameter("input_configuration", value=config(chain_bundle, 3, 1.0).id),
          Parameter("output_configuration", value=config(chain_bundle, 2, 1.0).id)],
         "increase"),
        ([Parameter("upstream", value="x"), Parameter("output_namespace", value="x")],
         "read its own output"),
        ([Parameter("output_namespace", value="bad name!")], "output_namespace"),
    ]
    for params, text in cases:
        with pytest.raises(NodeConfigError, match=text):
            StageNode(context=ros_context, parameter_overrides=base + params)
    node = StageNode(context=ros_context, parameter_overrides=base)  # defaults: splits 1 → 2
    try:
        assert node.engine.input_key[0] == 1 and node.engine.output_key[0] == 2
    finally:
        node.destroy_node()


# -- planning -------------------------------------------------------------------------------------


def test_parse_devices():
    devices = parse_devices("robot=2, pi=2.5,server=40")
    assert devices == [Device("robot", 2e9), Device("pi", 2.5e9), Device("server", 40e9)]
    assert parse_devices(["a=1", "b=2"]) == [Device("a", 1e9), Device("b", 2e9)]
    for bad, text in [("robot", "NAME=GMACS"), ("robot=x,b=1", "not a number"),
                      ("robot=0,b=1", "positive"), ("a=1,a=2", "unique"), ("a=1", "two"),
                      ("1a=1,b=1", "letters"), ("a b=1,c=1", "letters")]:
        with pytest.raises(ValueError, match=text):
            parse_devices(bad)


@pytest.mark.parametrize("speeds", [(1, 1, 1), (1, 5, 50), (5, 1, 1), (1, 1, 1, 1)], ids=str)
def test_plan_is_the_brute_force_optimum(measured_chain_bundle, speeds):
    devices = [Device(f"d{i}", s * 1e6) for i, s in enumerate(speeds)]
    plan = plan_pipeline(measured_chain_bundle, devices, 1e6)
    units = [0, *CHAIN_SPLITS]
    ops = [s.macs for s in plan.stages]
    assert sum(ops) == pytest.approx(sum(s.macs for s in plan.stages))
    # Rebuild the unit table the planner used and compare with exhaustive search.
    from split_infer.tools.plan.chain import _block_macs, _link_bytes

    unit_ops = _block_macs(measured_chain_bundle, [*units, None])
    sizes = [0.0] + [_link_bytes(config(measured_chain_bundle, s, 4.0))[0]
                     for s in CHAIN_SPLITS] + [0.0]
    best = brute_force_partition(unit_ops, [d.macs_per_s for d in devices],
                                 activation_bytes=sizes,
                                 link_bandwidths_bps=[1e6] * (len(devices) - 1))
    assert plan.throughput_hz == pytest.approx(best.throughput_hz)
    assert [s.end for s in plan.stages[:-1]] == [CHAIN_SPLITS[u - 1] for u in best.split_points]
    assert plan.stages[0].node == "edge_node" and plan.stages[-1].node == "cloud_node"
    assert all(s.node == "stage_node" for s in plan.stages[1:-1])
    assert plan.throughput_hz <= plan.upper_bound_hz + 1e-9
    for i, link in enumerate(plan.links):
        assert plan.stages[i].end == link.split_point == plan.stages[i + 1].start
        assert plan.stages[i].output_configuration == link.configuration
        assert plan.stages[i + 1].input_configuration == link.configuration


def test_plan_picks_the_smallest_link_within_the_loss_budget(measured_chain_bundle):
    devices = parse_devices("a=1,b=1")
    tight = plan_pipeline(measured_chain_bundle, devices, 1e6, max_link_loss_points=0.1)
    loose = plan_pipeline(measured_chain_bundle, devices, 1e6, max_link_loss_points=1.0)
    assert tight.links[0].ratio == 1.0  # 8-bit costs 0.5 points: over a 0.1 budget
    assert loose.links[0].ratio == 4.0
    with pytest.raises(ValueError, match="one per link"):
        plan_pipeline(measured_chain_bundle, devices, [1e6, 1e6])
    with pytest.raises(ValueError, match="links"):
        plan_pipeline(measured_chain_bundle, parse_devices("a=1,b=1,c=1,d=1,e=1"), 1e6)


def test_plan_yaml_and_launch_file(measured_chain_bundle, tmp_path):
    from test_launch_files import KNOWN_API, NODE_KWARGS, LaunchFile, console_scripts

    plan = plan_pipeline(measured_chain_bundle, parse_devices("robot=0.01,pi=0.01,srv=1"), 1e7)
    path = plan.save(tmp_path / "plan.yaml")
    loaded = load_plan(path)
    assert loaded["format"] == PLAN_FORMAT
    assert [s["device"] for s in loaded["stages"]] == ["robot", "pi", "srv"]
    launch = write_launch_file(loaded, tmp_path / "plan.launch.py", path)
    source = launch.read_text()
    compile(source, str(launch), "exec")
    parsed = LaunchFile(launch)
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("launch",
                                                                               "launch_ros"):
            assert {a.name for a in node.names} <= KNOWN_API[node.module]
    calls = parsed.nodes()
    assert [parsed.executable(c) for c in calls] == ["edge_node", "stage_node", "cloud_node"]
    scripts = console_scripts()
    for call in calls:
        assert {k.arg for k in call.keywords} <= NODE_KWARGS
        assert parsed.executable(call) in scripts
    assert set(parsed.declared_arguments()) == parsed.used_configurations()
    text = yaml.safe_dump(loaded)
    for link in plan.links:
        assert link.configuration in source and link.configuration in text
    with pytest.raises(ValueError, match="not a split_infer plan"):
        (tmp_path / "bad.yaml").write_text("format: nope\n")
        load_plan(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="cannot read"):
        load_plan(tmp_path / "missing.yaml")


def test_generated_launch_parameters_are_declared(ros_context, measured_chain_bundle, tmp_path):
    """Every parameter the generated launch file gives a node is one the node declares, and
    the nodes come up with them (the way launch_ros would pass them)."""
    plan = plan_pipeline(measured_chain_bundle, parse_devices("robot=0.01,pi=0.01,srv=1"), 1e7)
    launch = write_launch_file(plan, tmp_path / "plan.launch.py")
    source = launch.read_text()
    tree = ast.parse(source)
    bundle_path = str(measured_chain_bundle.path)
    # a user's bundle is the launch argument's default, by its absolute path
    assert repr(str(measured_chain_bundle.path.resolve())) in source
    classes = {"edge_node": EdgeNode, "stage_node": StageNode, "cloud_node": CloudNode}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "Node"):
        kw = {k.arg: k.value for k in call.keywords}
        executable = ast.literal_eval(kw["executable"])
        params = {ast.literal_eval(k): (bundle_path if getattr(v, "id", None) == "BUNDLE"
                                        else ast.literal_eval(v))
                  for k, v in zip(kw["parameters"].elts[0].keys, kw["parameters"].elts[0].values)}
        node = classes[executable](context=ros_context, namespace="/chain",
                                   parameter_overrides=[Parameter(k, value=v)
                                                        for k, v in params.items()])
        try:
            for key, value in params.items():
                assert node.get_parameter(key).value == value
        finally:
            node.destroy_node()


def test_a_plan_of_the_shipped_bundle_finds_it_in_the_package_share(tmp_path):
    """No path of the machine that planned goes into the plan or its launch file."""
    from split_infer.defaults import DEFAULT_BUNDLE
    from split_infer.tools.plan.chain import SHIPPED_BUNDLE

    plan = plan_pipeline(Bundle.load(DEFAULT_BUNDLE), parse_devices("robot=1,pi=1,srv=20"), 1e7)
    assert plan.bundle == SHIPPED_BUNDLE
    source = write_launch_file(plan, tmp_path / "plan.launch.py").read_text()
    saved = plan.save(tmp_path / "plan.yaml").read_text()
    assert str(DEFAULT_BUNDLE) not in source and str(DEFAULT_BUNDLE) not in saved
    assert 'FindPackageShare("split_infer"), "bundles", "default"' in source


def test_cli_plan_devices_writes_plan_launch_and_plot(measured_chain_bundle, tmp_path, capsys):
    out = tmp_path / "chain" / "plan.yaml"
    assert cli_main(["plan", str(measured_chain_bundle.path), "--devices", "robot=0.01,pi=0.01,"
                     "srv=1", "--link-mbps", "10", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3-stage pipeline" in text and "robot" in text and "frames/s" in text
    assert load_plan(out)["stages"][1]["node"] == "stage_node"
    assert (tmp_path / "chain" / "plan.launch.py").is_file()
    assert (tmp_path / "chain" / "plan.png").stat().st_size > 0
    assert cli_main(["plan", str(measured_chain_bundle.path), "--devices", "robot"]) == 2
    assert "NAME=GMACS" in capsys.readouterr().err
