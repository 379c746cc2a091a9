"""The real-link testbed: namespaces + veth + tc, one process per node talking DDS over UDP,
each side on its own CPUs (cgroups).

The namespace and cgroup tests need root (CI runs as root) and skip with the reason otherwise;
the report arithmetic (:func:`split_infer.tools.testbed.runner.summarize`, the bounds, the
placement and the CPU report) is tested everywhere.
"""

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ros_fixtures import build_tiny_bundle, random_images, with_measurements

from split_infer.data import ArrayDataset
from split_infer.tools.bag.storage import write_dataset_bag
from split_infer.tools.link import load_trace, step_trace, write_trace
from split_infer.tools.testbed import cgroups
from split_infer.tools.testbed.netns import (
    NetnsLink,
    Shaping,
    list_testbed_namespaces,
    netns_problem,
)
from split_infer.tools.testbed.runner import (
    TestbedSettings,
    cpu_report,
    physical_bounds,
    plan_placement,
    run_testbed,
    summarize,
)

NETNS_PROBLEM = netns_problem()
_netns_skip = pytest.mark.skipif(NETNS_PROBLEM is not None,
                                 reason=f"real-link testbed: {NETNS_PROBLEM}")
CGROUPS_PROBLEM = cgroups.cgroups_problem()
_cgroups_skip = pytest.mark.skipif(CGROUPS_PROBLEM is not None,
                                   reason=f"testbed CPU placement: {CGROUPS_PROBLEM}")


def needs_netns(test):
    """Real-link tests: root tier, skipped with the reason where namespaces are unavailable."""
    return pytest.mark.root(_netns_skip(test))


def needs_cgroups(test):
    """CPU placement tests: root tier, skipped with the reason where cgroups are unusable."""
    return pytest.mark.root(_cgroups_skip(test))


# -- report arithmetic (no namespaces) ------------------------------------------------------------


def test_summarize_counts_dropped_frames_as_wrong(tmp_path):
    trace = step_trace([(0.0, 1e6), (5.0, 2e5)])
    t0 = 1000.0
    stamps = [int((t0 + 0.1 * i) * 1e9) for i in range(100)]  # 10 s of 10 fps
    labels = [[t0 + 0.1 * i, stamp, i % 3] for i, stamp in enumerate(stamps)]
    # The edge sends ratio 4 until 5.3 s, then 8 (its 1-Hz report says so only at 6 s).
    ratio = [4.0 if i < 53 else 8.0 for i in range(100)]
    # Every other frame delivered 50 ms later; of those, every fourth predicted wrong.
    results = [[t0 + 0.1 * i + 0.05, stamp, (i % 3) if i % 4 else (i + 1) % 3, 3.0, ratio[i]]
               for i, stamp in enumerate(stamps) if i % 2 == 0]
    results[10][3:] = [2.0, 4.0]  # frame 20 answered with another configuration than sent
    results[11][0] += 1.5  # frame 22 answered 1.55 s after capture: stale
    results.append(list(results[12]))  # frame 24 answered twice
    records = {"edge": {"labels": labels, "results": results,
                        "sent": [[t0 + 0.1 * i, s, 1000, 3, ratio[i]]
                                 for i, s in enumerate(stamps)],
                        "active_ratio": [[t0, 4.0], [t0 + 6.0, 8.0]],
                        "active_split": [[t0, 3.0]],
                        "estimates": [[t0 + 5.5 + 0.1 * i, 2.1e5] for i in range(20)]},
               "cloud": {}}
    records["edge"]["compute"] = {"frames": 100, "cpu_s": 0.4, "ms_per_frame": 4.0}
    settings = TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"), warmup_s=0.0,
                               edge_cpu=0.5)
    placement = {"pinned": True, "edge_cpus": [0], "cloud_cpus": [1], "harness_cpus": [1],
                 "edge_cpu_budget": 0.5}
    report = summarize(records, trace, settings, t0, 10.0, rx_bytes=100_000,
                       event_ends=[("scheduler killed", 4.0)], placement=placement,
                       camera_fps=10.0)
    summary = report["summary"]
    # 4 ms of edge work per frame on half a core allow 125 fps: the camera (10 fps) bounds the
    # run, and a trace that steps down is judged by the reactions, not by the gate.
    assert summary["bounds_fps"]["edge"] == pytest.approx(125.0)
    assert (summary["bound_fps"], summary["bound_by"]) == (10.0, "camera")
    assert summary["gate"] == "not steady" and summary["valid"] is True
    assert summary["edge_cpu_budget"] == 0.5 and summary["pinned"] is True
    assert report["placement"] is placement
    counted = [i for i in range(100) if 0.1 * i <= 9.0]
    delivered = [i for i in counted if i % 2 == 0]
    correct = [i for i in delivered if i % 4]
    assert summary["frames_generated"] == len(counted)
    assert summary["frames_delivered"] == len(delivered)
    assert summary["effective_accuracy"] == round(len(correct) / len(counted), 4)
    assert summary["top1_on_delivered_percent"] == round(100 * len(correct) / len(delivered), 2)
    assert summary["latency_ms_p50"] == pytest.approx(50.0, abs=0.01)
    assert (summary["misdecoded_results"], summary["stale_results"],
            summary["duplicate_results"]) == (1, 1, 1)
    capacity = 1e6 * 5 + 2e5 * 5
    assert summary["link_utilization"] == pytest.approx(8 * 100_000 / capacity, rel=1e-3)
    # 100 frames sent, 100 kB through the veth: 1000 B each on the wire (D = 1000 too)
    assert summary["wire_bytes_per_frame"] == pytest.approx(1000.0)
    assert summary["link_bound_fps_wire"] == pytest.approx(capacity / 10.0 / 8000, rel=1e-3)
    (reaction,) = report["reactions"]
    assert reaction["t_s"] == 5.0 and reaction["rate_after_bps"] == 2e5
    assert reaction["estimate_within_15pct_after_s"] == pytest.approx(0.5)
    # The first frame sent in the new configuration, not the report a second later.
    assert reaction["configuration_changed_after_s"] == pytest.approx(0.3)
    assert reaction["ratio_before"] == 4.0 and reaction["ratio_after"] == 8.0
    (recovery,) = report["recoveries"]  # first frame captured at/after 4 s: frame 40, +50 ms
    assert recovery["fault"].startswith("scheduler killed")
    assert recovery["recovered_after_s"] == pytest.approx(0.05, abs=1e-6)


def test_a_switch_to_edge_only_is_timed_by_its_first_frame_not_the_1hz_report():
    trace = step_trace([(0.0, 5e6), (5.0, 0.0)])  # an outage at 5 s
    t0 = 1000.0
    stamps = [int((t0 + 0.1 * i) * 1e9) for i in range(100)]
    ratio32 = float(np.float32(35.3))  # as the frames carry it; the report has float64
    # Frames 0-56 sent at split 0; from 5.7 s the edge classifies them itself (split -1).
    results = [[t0 + 0.1 * i + 0.05, s, 1, *((0.0, ratio32) if i < 57 else (-1.0, 1.0))]
               for i, s in enumerate(stamps)]
    records = {"edge": {"labels": [[t0 + 0.1 * i, s, 1] for i, s in enumerate(stamps)],
                        "results": results,
                        "sent": [[t0 + 0.1 * i, s, 1000, 0.0, ratio32]
                                 for i, s in enumerate(stamps[:57])],
                        # reported at 1 Hz (the same configuration at 5.5 s), in float64
                        "active_split": [[t0 + t + 0.5, 0.0 if t < 6 else -1.0]
                                         for t in range(10)],
                        "active_ratio": [[t0 + t + 0.5, 35.3 if t < 6 else 1.0]
                                         for t in range(10)]},
               "cloud": {}}
    settings = TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"), warmup_s=0.0)
    report = summarize(records, trace, settings, t0, 10.0, rx_bytes=57_000, camera_fps=10.0)
    (reaction,) = report["reactions"]
    assert reaction["configuration_changed_after_s"] == pytest.approx(0.7)
    assert reaction["ratio_before"] == pytest.approx(35.3) and reaction["ratio_after"] == 1.0


def test_physical_bound_is_the_smallest_limit_and_the_gate_judges_steady_links():
    compute = {"edge": {"ms_per_frame": 10.0}, "cloud": {"ms_per_frame": 2.0}}
    cores = {"edge": 0.25, "cloud": 1.0}  # 10 ms of edge work on a quarter core: 25 fps
    args = {"camera_fps": 30.0, "compute": compute, "cores": cores, "steady": True}
    fast_link = physical_bounds(link_fps=1000.0, delivered_fps=24.0, **args)
    assert (fast_link["bound_fps"], fast_link["bound_by"]) == (25.0, "edge")
    assert fast_link["bounds_fps"] == {"camera": 30.0, "edge": 25.0, "cloud": 500.0,
                                       "link": 1000.0}
    assert fast_link["gate"] == "applied" and fast_link["valid"]  # 24 ≥ 0.95 × 25
    assert not physical_bounds(link_fps=1000.0, delivered_fps=23.0, **args)["valid"]
    slow_link = physical_bounds(link_fps=12.0, delivered_fps=3.0, **args)
    assert (slow_link["bound_by"], slow_link["gate"], slow_link["valid"]) == (
        "link", "link-limited", True)
    assert slow_link["compute_bound_fps"] == 25.0
    varying = physical_bounds(link_fps=None, delivered_fps=3.0,
                              **{**args, "steady": False, "compute": {}})
    assert (varying["bound_fps"], varying["gate"], varying["valid"]) == (30.0, "not steady",
                                                                          True)
    nothing = physical_bounds(link_fps=None, delivered_fps=0.0, **{**args, "compute": {}})
    assert nothing["bound_by"] == "camera" and not nothing["valid"]  # delivered nothing
    # A weak robot that spent its quarter core: its overhead outside the frame callbacks is
    # what the run measures, not a starved harness.
    spent = physical_bounds(link_fps=1000.0, delivered_fps=21.0, edge_cpu_percent=24.9,
                            edge_cpu_budget=0.25, **args)
    assert (spent["gate"], spent["valid"]) == ("robot-limited", True)
    idle = physical_bounds(link_fps=1000.0, delivered_fps=21.0, edge_cpu_percent=15.0,
                           edge_cpu_budget=0.25, **args)
    assert (idle["gate"], idle["valid"]) == ("applied", False)  # the robot was not the limit
    assert physical_bounds(link_fps=12.0, delivered_fps=3.0, edge_cpu_percent=25.0,
                           edge_cpu_budget=0.25, **args)["gate"] == "link-limited"


def test_the_link_carries_no_more_frames_than_their_own_bytes_allow():
    from split_infer.tools.testbed.report import link_bound_fps

    # Headers make the wire cost of a frame larger than its data: the wire cost binds.
    assert link_bound_fps(1e6, 3500.0, 3000.0) == pytest.approx(1e6 / (8 * 3500))
    # Nothing came back (cloud-only at 1 Mbit/s): the veth's bytes over every frame sent read
    # 4 kB a frame; a 73.9-kB JPEG still needs its 73.9 kB, 1.7 frames a second.
    assert link_bound_fps(1e6, 4000.0, 73_928.0) == pytest.approx(1e6 / (8 * 73_928))
    assert link_bound_fps(1e6, None, 73_928.0) == pytest.approx(1e6 / (8 * 73_928))
    assert link_bound_fps(1e6, None, None) is None
    stale = physical_bounds(camera_fps=30.0, compute={}, cores={"edge": 0.25, "cloud": 1.0},
                            link_fps=link_bound_fps(1e6, 4000.0, 73_928.0), steady=True,
                            delivered_fps=0.0)
    assert (stale["bound_by"], stale["gate"], stale["valid"]) == ("link", "link-limited", True)


def test_steady_traces_are_one_rate_without_loss():
    from split_infer.tools.testbed.runner import steady_trace

    assert steady_trace(load_trace_rows([(0, 5e6, 10, 0)]))
    assert not steady_trace(load_trace_rows([(0, 5e6, 10, 0), (5, 1e6, 10, 0)]))
    assert not steady_trace(load_trace_rows([(0, 5e6, 10, 0.01)]))
    assert not steady_trace(load_trace_rows([(0, 5e6, 10, 0), (5, 5e6, 50, 0)]))


def test_cpu_report_per_process_and_side_after_the_warmup():
    sides = {"edge": "edge", "monitor": "edge", "cloud": "cloud", "camera": "harness"}
    samples = [(0.0, {"edge": 0.0, "monitor": 0.0, "cloud": 0.0, "camera": 0.0}),
               (1.0, {"edge": 0.9, "monitor": 0.1, "cloud": 0.1, "camera": 0.1}),  # warm-up
               (2.0, {"edge": 1.2, "monitor": 0.15, "cloud": 0.3, "camera": 0.2}),
               (3.0, {"edge": 1.6, "monitor": 0.2, "cloud": 0.4}),  # the camera is gone
               (4.0, {"edge": 1.8, "monitor": 0.25, "cloud": 0.5})]
    report = cpu_report(samples, sides, warmup_s=1.0, end_s=4.0)
    edge = report["processes"]["edge"]
    assert edge["side"] == "edge" and edge["cpu_s"] == pytest.approx(1.8)
    assert edge["mean_percent"] == pytest.approx(30.0) and edge["max_percent"] == 40.0
    assert report["processes"]["camera"]["mean_percent"] == pytest.approx(10.0)  # one interval
    assert report["sides"]["edge"] == {"mean_percent": 35.0, "max_percent": 45.0}
    assert report["sides"]["harness"]["max_percent"] == pytest.approx(10.0)
    assert report["interval_s"] == 1.0 and report["after_s"] == 1.0
    assert cpu_report(samples, sides, warmup_s=1.0, end_s=2.5)["sides"]["cloud"][
        "mean_percent"] == pytest.approx(20.0)


def test_cpu_lists_budgets_and_the_default_placement():
    assert cgroups.parse_cpus("0-2,5") == [0, 1, 2, 5]
    assert cgroups.format_cpus([5, 0, 1, 2]) == "0-2,5"
    for bad in ("x", "3-1", "-1"):
        with pytest.raises(cgroups.CgroupError, match="not a CPU list"):
            cgroups.parse_cpus(bad)
    assert cgroups.quota_period_us(0.25) == (2500, 10_000)
    assert cgroups.quota_period_us(0.05) == (1000, 20_000)  # never under the kernel's 1 ms
    assert cgroups.quota_period_us(2.0) == (20_000, 10_000)
    with pytest.raises(ValueError):
        cgroups.quota_period_us(0.0)
    assert cgroups.default_cpus([0, 1]) == {"edge": [0], "cloud": [1], "harness": [1]}
    assert cgroups.default_cpus([0, 1, 2, 3])["harness"] == [2, 3]
    with pytest.raises(cgroups.CgroupError, match="at least 2 CPUs"):
        cgroups.default_cpus([0])


def test_placement_defaults_overlaps_and_budgets_without_cgroups():
    settings = TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"))
    pinned = plan_placement(settings, problem="", cpus=[0, 1])
    assert pinned == {"pinned": True, "edge_cpus": [0], "cloud_cpus": [1],
                      "harness_cpus": [1], "edge_cpu_budget": None}
    unpinned = plan_placement(settings, problem="no cgroups here", cpus=[0, 1])
    assert unpinned == {"pinned": False, "reason": "no cgroups here", "edge_cpu_budget": None}
    with pytest.raises(cgroups.CgroupError, match="--edge-cpu needs cgroups: no cgroups here"):
        plan_placement(TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"),
                                       edge_cpu=0.25), problem="no cgroups here", cpus=[0, 1])
    moved = TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"), edge_cpus="1",
                            cloud_cpus="0")
    assert plan_placement(moved, problem="", cpus=[0, 1])["harness_cpus"] == [0]
    for fields, match in (({"edge_cpus": "0", "cloud_cpus": "0"}, "overlap"),
                          ({"harness_cpus": "0"}, "overlap the edge"),
                          ({"edge_cpus": "7"}, "not available"),
                          ({"edge_cpu": 1.5}, "more than the 1 edge CPU"),
                          ({"edge_cpu": -1.0}, "positive")):
        with pytest.raises(cgroups.CgroupError, match=match):
            plan_placement(TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"),
                                           **fields), problem="", cpus=[0, 1])


def test_cgroup_hierarchy_is_found_from_mountinfo(tmp_path):
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    v1 = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
          "32 31 0:29 / /x/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
          "33 31 0:30 / /x/cpuset rw - cgroup cgroup rw,cpuset\n")
    found = cgroups.find_hierarchy(v1)
    assert found.version == 1
    assert found.roots == {"cpu": Path("/x/cpu,cpuacct"), "cpuset": Path("/x/cpuset")}
    both = v1 + f"34 31 0:31 / {unified} rw - cgroup2 cgroup2 rw\n"
    assert cgroups.find_hierarchy(both) == cgroups.Hierarchy(2, {"cpu": unified,
                                                                 "cpuset": unified})
    (unified / "cgroup.controllers").write_text("memory\n")  # v2 without the controllers
    assert cgroups.find_hierarchy(both).version == 1
    assert cgroups.find_hierarchy(v1.splitlines()[0]) is None


@needs_cgroups
def test_cgroups_pin_and_cap_a_process_and_are_removed():
    with cgroups.CpuGroups() as groups:
        cpu = cgroups.allowed_cpus()[0]
        groups.add("edge", [cpu], budget=0.25)
        groups.add("harness", cgroups.allowed_cpus())
        child = subprocess.Popen(groups.wrap("edge", ["sleep", "30"]))
        other = subprocess.Popen(["sleep", "30"])
        try:
            for _ in range(250):  # the shell moves itself into the group, then execs
                if os.sched_getaffinity(child.pid) == {cpu}:
                    break
                time.sleep(0.02)
            assert os.sched_getaffinity(child.pid) == {cpu}
            memberships = Path(f"/proc/{child.pid}/cgroup").read_text()
            assert f"si_testbed_{os.getpid()}/edge" in memberships
            groups.place("harness", other.pid)
            assert f"si_testbed_{os.getpid()}/harness" in Path(
                f"/proc/{other.pid}/cgroup").read_text()
            assert set(groups.throttling("edge")) == {"periods", "throttled_periods",
                                                      "throttled_s"}
            assert groups.describe()["groups"]["edge"] == {"cpus": str(cpu),
                                                           "budget_cores": 0.25}
            directories = [root / f"si_testbed_{os.getpid()}"
                           for root in groups.hierarchy.directories()]
            assert all(d.is_dir() for d in directories)
        finally:
            for process in (child, other):
                process.kill()
                process.wait()
    assert not any(d.exists() for d in directories)
    # A run killed before its clean-up leaves groups named after a pid that is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = cgroups.CpuGroups(tag=str(dead.pid)).open()
    leftover.add("edge", [cpu], budget=0.5)
    stale = [root / f"si_testbed_{dead.pid}" for root in leftover.hierarchy.directories()]
    assert all(d.is_dir() for d in stale)
    removed = cgroups.remove_stale()
    assert {str(d) for d in stale} <= set(removed)
    assert not any(d.exists() for d in stale)


def test_nfqueue_packet_ids_are_read_from_every_message_of_a_datagram():
    import struct

    from split_infer.tools.testbed.nfqueue import _attribute, _message, packet_ids

    def packet(packet_id, extra=b""):
        mark = _attribute(0x8000 | 3, struct.pack("!I", 5))  # another attribute first, nested bit
        header = _attribute(1, struct.pack("!IHB", packet_id, 0x0800, 3))
        return _message(0, 7, [mark, header, extra], flags=0, seq=0)

    other = _message(2, 7, [_attribute(1, b"\x01\x00\x00\x00")], flags=0, seq=0)  # a config
    data = packet(41) + other + packet(0xDEADBEEF, _attribute(10, b"payload")) + b"\x00" * 3
    assert packet_ids(data) == [41, 0xDEADBEEF]
    assert packet_ids(b"") == [] and packet_ids(b"\x00" * 16) == []


def test_the_delayer_drops_everything_while_out_and_answers_each_command():
    import socket
    import struct

    from split_infer.tools.testbed.nfqueue import PacketDelayer, _attribute, _message

    def packets(*ids):
        return b"".join(_message(0, 7, [_attribute(1, struct.pack("!IHB", i, 0x0800, 3))],
                                 flags=0, seq=0) for i in ids)

    def verdicts():  # (verdict, packet id) of every verdict the delayer sent since
        out = []
        kernel.setblocking(False)
        try:
            while True:
                data = kernel.recv(4096)
                out.append(struct.unpack_from("!II", data, 16 + 4 + 4))
        except BlockingIOError:
            return out

    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        delayer = PacketDelayer(7, delay_ms=100.0, netlink=ours)
        kernel.send(packets(1, 2))
        delayer.receive(now=0.0)
        delayer._release_due(0.05)
        assert verdicts() == []  # held for 100 ms
        kernel.send(packets(3))  # queued for the delayer, not read yet
        assert delayer.command("DROP") == "OK"
        assert verdicts() == [(0, 1), (0, 2), (0, 3)]  # NF_DROP, held and queued alike
        kernel.send(packets(4))
        delayer.receive(now=1.0)
        delayer._release_due(10.0)
        assert verdicts() == [(0, 4)]  # out: dropped on arrival
        assert delayer.command("DELAY 0 0") == "OK"  # back up
        kernel.send(packets(5))
        delayer.receive(now=2.0)
        delayer._release_due(2.0)
        assert verdicts() == [(1, 5)]  # NF_ACCEPT
        assert (delayer.released, delayer.dropped) == (1, 4)
        assert delayer.command("DELAY x 0").startswith("ERROR not a delay")
        assert delayer.command("UP").startswith("ERROR unknown command")
        assert not delayer.out


# -- namespaces -----------------------------------------------------------------------------------


def _udp_rate_bps(link, seconds=1.5, size=1200):
    """Blast UDP from the edge namespace and measure what reaches the cloud's veth."""
    code = ("import socket,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "t=time.time()\n"
            f"while time.time()-t<{seconds}:\n"
            "    try:\n"
            f"        s.sendto(b'x'*{size},('{link.cloud_ip}',9))\n"
            "    except PermissionError:\n"  # the drop rule refuses the datagram
            "        pass\n")
    before = link.interface_bytes("cloud")
    subprocess.run([*link.exec_prefix("edge"), "python3", "-c", code], check=True, timeout=30)
    return 8 * (link.interface_bytes("cloud") - before) / seconds


@needs_netns
def test_link_is_shaped_and_removed():
    with NetnsLink() as link:
        names = {link.edge_ns, link.cloud_ns}
        assert names <= set(list_testbed_namespaces())
        if Path("/proc/sys/net/ipv6").exists():  # a kernel with IPv6: off on the link
            off = subprocess.run([*link.exec_prefix("cloud"), "cat",
                                  f"/proc/sys/net/ipv6/conf/{link.cloud_if}/disable_ipv6"],
                                 capture_output=True, text=True, check=True).stdout
            assert off.strip() == "1"
        link.apply(Shaping(2e6))
        slow = _udp_rate_bps(link)
        link.apply(Shaping(8e6))
        fast = _udp_rate_bps(link)
        # The link delivers what tbf lets through (a bucket's worth on top), and the second
        # rate is about four times the first: compared within one run, not against a clock.
        assert 1.5e6 < slow < 3.0e6
        assert 2.5 < fast / slow < 5.5
        if link.capabilities["iptables_loss"]:
            link.apply(Shaping(0))  # outage: everything dropped
            assert _udp_rate_bps(link, seconds=0.5) == 0
    assert not names & set(list_testbed_namespaces())


@needs_netns
def test_an_outage_carries_nothing_sent_before_it():
    """What the delay holds and the shaper queues when the link goes out is dropped, as on a
    link that is gone: none of it trickles across at the outage's floor rate."""
    with NetnsLink() as link:
        if not link.capabilities["iptables_loss"]:
            pytest.skip(f"no drop rule, so no outage: {link.capabilities}")
        link.apply(Shaping(2e6, delay_ms=300.0))
        assert _udp_rate_bps(link, seconds=1.0) > 0
        link.apply(Shaping(0))  # at once: 300 ms of packets held, a queue in the shaper
        assert _udp_rate_bps(link, seconds=1.0) == 0
        link.apply(Shaping(2e6))
        assert _udp_rate_bps(link, seconds=1.0) > 1e6  # and back


def _udp_rtts_ms(link, count=30):
    """Round trips of small UDP datagrams edge → cloud echo → edge (only the way out is
    shaped), in ms."""
    echo = subprocess.Popen([*link.exec_prefix("cloud"), "python3", "-c", (
        "import socket\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0',9999))\n"
        "while True:\n"
        "    m,a=s.recvfrom(2048)\n"
        "    s.sendto(m,a)\n")])
    client = ("import socket,time\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              "s.settimeout(3)\n"
              "time.sleep(0.3)\n"
              f"for i in range({count}):\n"
              "    t=time.perf_counter()\n"
              f"    s.sendto(b'x'*100,('{link.cloud_ip}',9999))\n"
              "    s.recv(2048)\n"
              "    print((time.perf_counter()-t)*1e3)\n"
              "    time.sleep(0.02)\n")
    try:
        out = subprocess.run([*link.exec_prefix("edge"), "python3", "-c", client],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        echo.kill()
        echo.wait()
    return np.array([float(line) for line in out.split()])


@needs_netns
def test_link_delays_the_uplink_with_netem_or_an_nfqueue():
    with NetnsLink() as link:
        if not (link.capabilities["netem_delay"] or link.capabilities["nfqueue_delay"]):
            pytest.skip(f"this kernel can delay neither way: {link.capabilities}")
        link.apply(Shaping(1e9))
        base = np.median(_udp_rtts_ms(link))
        link.apply(Shaping(1e9, delay_ms=60.0))
        delayed = _udp_rtts_ms(link)
        link.apply(Shaping(1e9, delay_ms=40.0, jitter_ms=20.0))
        jittered = _udp_rtts_ms(link, count=60)
        # Compared within the run against the undelayed round trip, not against a clock.
        assert 57.0 <= np.median(delayed) - base < 75.0
        assert np.min(jittered) >= 20.0 and np.max(jittered) < 85.0
        assert np.percentile(jittered, 90) - np.percentile(jittered, 10) > 15.0
        assert 30.0 < np.median(jittered) - base < 55.0
        link.apply(Shaping(1e9))
        assert np.median(_udp_rtts_ms(link)) - base < 10.0


@needs_netns
def test_link_is_removed_when_the_body_fails():
    with pytest.raises(RuntimeError, match="boom"), NetnsLink() as link:
        names = {link.edge_ns, link.cloud_ns}
        raise RuntimeError("boom")
    assert not names & set(list_testbed_namespaces())


@pytest.fixture(scope="module")
def graded_bundle(tmp_path_factory):
    """A tiny bundle whose measured accuracy falls with the frame size, so a scheduler has a
    reason to prefer large frames on a fast link and small ones on a slow link."""
    tiny = build_tiny_bundle(tmp_path_factory.mktemp("graded") / "tiny")
    from split_infer.data import Preprocessing
    from split_infer.pipeline.engine import EdgeEngine

    pre = Preprocessing.from_dict(tiny.manifest["preprocessing"])
    engine = EdgeEngine.from_bundle(tiny)
    x = pre(random_images(1)[0])
    sizes = {}
    for config in tiny.configurations:
        engine.activate(*config.key)
        sizes[config.id] = len(engine.encode(x, 0, 0))
    ordered = sorted(sizes, key=sizes.get)
    accuracy = {cid: 0.6 + 0.3 * rank / (len(ordered) - 1) for rank, cid in enumerate(ordered)}
    bundle = with_measurements(
        tiny, tmp_path_factory.mktemp("graded_measured") / "bundle",
        lambda c: {"accuracy": accuracy[c.id], "bytes_per_frame": float(sizes[c.id]),
                   "edge_ms": 1.0, "cloud_ms": 1.0})
    return bundle, sizes


def _bag_and_trace(tmp_path, bundle, frames: int, seed: int, steps):
    """A 30-fps camera bag of ``frames`` random labelled images and a trace of ``steps``."""
    bag = tmp_path / "bag"
    dataset = ArrayDataset("random", random_images(frames, seed=seed), np.arange(frames) % 10,
                           list(bundle.classes))
    write_dataset_bag(bag, dataset, rate_hz=30.0, progress=False)
    trace = tmp_path / "trace.csv"
    write_trace(step_trace(steps), trace)
    return bag, trace


@pytest.mark.realtime
@needs_netns
def test_testbed_adapts_to_a_rate_drop(graded_bundle, tmp_path):
    """About 30 s: 30 fps of camera frames over a veth that drops from 8 to 0.3 Mbit/s."""
    bundle, sizes = graded_bundle
    bag, trace = _bag_and_trace(tmp_path, bundle, 60, 4, [(0.0, 8e6), (12.0, 3e5)])
    largest = max(bundle.configurations, key=lambda c: sizes[c.id])
    settings = TestbedSettings(bundle=bundle.path, bag=bag, trace=trace, duration_s=26.0,
                               out_dir=tmp_path / "out", initial=f"{largest.split_point}:"
                               f"{largest.ratio:g}", status=False)
    report = run_testbed(settings)
    summary = report["summary"]
    assert summary["frames_delivered"] > 100, summary  # frames flow across the link
    (drop,) = report["reactions"]
    assert drop["ratio_before"] == pytest.approx(largest.ratio)
    assert drop["ratio_after"] > drop["ratio_before"], report["reactions"]
    late = [f for f in report["frames"] if f["t_s"] > 20 and f["ratio"] is not None]
    assert late and all(f["ratio"] > largest.ratio for f in late)
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 0
    # One process per node, the scheduler included, each with its CPU use.
    assert set(report["cpu"]["processes"]) >= {"camera", "edge", "monitor", "scheduler",
                                               "recorder", "cloud"}
    # Everything this process created is removed (other runs on the host may have their own).
    assert not [n for n in list_testbed_namespaces() if n[2:-1] == str(os.getpid())]
    assert load_trace(trace).rate_at(13.0) == 3e5


@pytest.mark.realtime
@needs_cgroups
@needs_netns
def test_testbed_reports_placement_budget_and_cpu_per_process(graded_bundle, tmp_path):
    """About 10 s: a fixed configuration with the edge side under half a core."""
    bundle, sizes = graded_bundle
    bag, trace = _bag_and_trace(tmp_path, bundle, 30, 5, [(0.0, 8e6)])
    smallest = min(bundle.configurations, key=lambda c: sizes[c.id])
    settings = TestbedSettings(bundle=bundle.path, bag=bag, trace=trace, duration_s=6.0,
                               out_dir=tmp_path / "out", warmup_s=1.0, status=False,
                               strategy=f"{smallest.split_point}:{smallest.ratio:g}",
                               edge_cpu=0.5)
    report = run_testbed(settings)
    placement = report["placement"]
    assert placement["pinned"] and placement["edge_cpu_budget"] == 0.5
    edge_cpus, cloud_cpus = placement["edge_cpus"], placement["cloud_cpus"]
    assert edge_cpus and cloud_cpus and not set(edge_cpus) & set(cloud_cpus)
    assert not set(placement["harness_cpus"]) & set(edge_cpus)
    assert placement["cgroups"]["groups"]["edge"]["budget_cores"] == 0.5
    assert placement["edge_throttling"]["periods"] >= 0
    cpu = report["cpu"]
    assert set(cpu["sides"]) == {"edge", "cloud", "harness"}
    processes = cpu["processes"]
    assert set(processes) >= {"camera", "edge", "monitor", "recorder", "cloud"}
    assert "scheduler" not in processes  # a fixed configuration has none
    for name, side in (("edge", "edge"), ("monitor", "edge"), ("cloud", "cloud"),
                       ("camera", "harness"), ("recorder", "harness")):
        assert processes[name]["side"] == side
        assert processes[name]["mean_percent"] is not None, name
    assert all(p["exit_status"] == 0 for p in report["processes"].values()), report[
        "processes"]
    pids = [p["pid"] for p in report["processes"].values()]
    assert len(pids) == len(set(pids)) == 5  # every node in a process of its own
    summary = report["summary"]
    assert summary["frames_delivered"] > 0
    assert summary["edge_compute_ms"] > 0 and summary["cloud_compute_ms"] > 0
    assert summary["bound_fps"] > 0 and isinstance(summary["valid"], bool)
    assert summary["gate"] in ("applied", "link-limited")
    assert set(summary["cpu_percent_mean"]) == {"edge", "cloud", "harness"}
    assert not [n for n in list_testbed_namespaces() if n[2:-1] == str(os.getpid())]
    leftovers = [root / f"si_testbed_{os.getpid()}"
                 for root in cgroups.find_hierarchy().directories()]
    assert not any(d.exists() for d in leftovers)


@pytest.mark.realtime
@needs_netns
def test_probe_trains_show_a_step_up_the_frames_cannot(graded_bundle, tmp_path):
    """About 25 s: the smallest frames (under 10 % of the link) over 8 → 16 Mbit/s, with the
    link prober and the probe echo; the estimate follows the shaped rate, not the frames."""
    bundle, sizes = graded_bundle
    bag, trace = _bag_and_trace(tmp_path, bundle, 30, 6, [(0.0, 8e6), (8.0, 16e6)])
    smallest = min(bundle.configurations, key=lambda c: sizes[c.id])
    assert 8 * 30 * sizes[smallest.id] < 0.1 * 8e6
    settings = TestbedSettings(bundle=bundle.path, bag=bag, trace=trace, duration_s=16.0,
                               out_dir=tmp_path / "out", warmup_s=1.0, status=False,
                               strategy=f"{smallest.split_point}:{smallest.ratio:g}",
                               probing=True)
    report = run_testbed(settings)
    summary = report["summary"]
    assert summary["probe_trains_sent"] > 5
    assert summary["probe_trains_echoed"] >= summary["probe_trains_sent"] - 2
    assert isinstance(summary["faster_frames"], int)  # the monitor's count reached the report
    assert {"prober", "probe_echo"} <= set(report["processes"])
    assert report["cpu"]["processes"]["prober"]["side"] == "edge"
    assert report["cpu"]["processes"]["probe_echo"]["side"] == "cloud"
    # Wide bounds for a shared test machine; bench/README has the measured step response.
    before = [r["estimate_bps"] for r in report["timeline"]
              if 4.0 <= r["t_s"] < 8.0 and r["estimate_bps"]]
    after = [r["estimate_bps"] for r in report["timeline"]
             if 11.0 <= r["t_s"] < 15.0 and r["estimate_bps"]]
    assert before and 0.7 * 8e6 <= float(np.median(before)) <= 1.3 * 8e6, before
    assert after and 0.7 * 16e6 <= float(np.median(after)) <= 1.3 * 16e6, after
    assert summary["probe_fraction_of_estimate"] < 0.1
    # The trains measure the link the frames leave unfilled: the estimate is a capacity, not
    # a lower bound, for most of the run (the flag is in the timeline for the plot).
    assert 0.0 <= summary["estimate_lower_bound_share"] < 0.5
    flags = [r["estimate_is_lower_bound"] for r in report["timeline"] if r["estimate_bps"]]
    assert flags and all(isinstance(f, bool) for f in flags)


@needs_netns
def test_cli_testbed_budget_without_cgroups_says_why(monkeypatch, capsys, tmp_path):
    from split_infer.tools import cli

    monkeypatch.setattr(cgroups, "cgroups_problem", lambda: "no cgroups in this test")
    assert cli.main(["testbed", "--edge-cpu", "0.25", "--duration", "1",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--edge-cpu needs cgroups: no cgroups in this test" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_testbed_without_root_says_why(monkeypatch, capsys):
    from split_infer.tools import cli
    from split_infer.tools.testbed import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert cli.main(["testbed", "--duration", "1"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_delay_segments_above_the_base_delay_are_faults_with_a_recovery():
    from split_infer.tools.testbed.report import _fault_ends

    trace = load_trace_rows([(0, 5e6, 10, 0), (5, 5e6, 50, 0), (15, 5e6, 10, 0),
                             (18, 5e6, 10, 0.05), (19, 5e6, 10, 0)])
    assert _fault_ends(trace, 30.0, [("scheduler killed", 8.0)]) == [
        ("delay 50 ms 5-15 s", 15.0), ("loss 5% 18-19 s", 19.0),
        ("scheduler killed at 8.00 s", 8.0)]
    assert _fault_ends(trace, 16.0, []) == [("delay 50 ms 5-15 s", 15.0)]


def load_trace_rows(rows):
    from split_infer.tools.link import Trace

    return Trace.from_rows(rows, "test")


def test_link_counts_as_quiet_after_a_window_with_almost_no_bytes(monkeypatch):
    from split_infer.tools.testbed import runner

    class Link:
        """Interface counters that grow by a discovery burst, then by a trickle."""

        def __init__(self, steps):
            self.steps, self.total = list(steps), 0

        def interface_bytes(self, side):
            if side == "cloud":  # one read per window per side: advance on the first
                self.total += self.steps.pop(0) if self.steps else 0
            return self.total

    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    settling = Link([0, 5000, 4000, 100, 9000])
    assert runner._wait_for_quiet_link(settling, window_s=0.5) is not None
    assert settling.steps == [9000]  # returned at the first quiet window, not before
    busy = Link([5000] * 10_000)
    clock = iter(range(10_000))
    monkeypatch.setattr(runner.time, "monotonic", lambda: next(clock) * 0.5)
    assert runner._wait_for_quiet_link(busy, window_s=0.5, timeout_s=3.0) is None


def test_switch_cost_counts_frames_until_the_first_in_the_new_configuration():
    from split_infer.tools.testbed.report import switch_costs

    def frame(t, split, ratio, latency):
        return {"t_s": t, "split_point": split, "ratio": ratio, "latency_ms": latency}

    t0 = 1000.0
    frames = [frame(k / 10, 10, 86.4, 20.0) for k in range(30)]  # 0.0–2.9 s on 10:86.4
    frames += [frame(3.0, 10, 86.4, 25.0), frame(3.1, None, None, None),  # in flight, lost
               frame(3.2, 4, 4.73, 90.0), frame(3.3, 4, 4.73, 40.0), frame(3.4, 4, 4.73, 30.0)]
    frames += [frame(5.0 + k / 10, -1, 1.0, 5.0) for k in range(3)]  # edge-only from 5 s
    events = [[t0 - 5.0, 10, 86.4], [t0 + 3.0, 4, 4.73], [t0 + 4.95, -1, 1.0],
              [t0 + 9.0, 10, 86.4]]
    costs = switch_costs(events, frames, t0)
    assert [c["t_s"] for c in costs] == [3.0, 4.95, 9.0]  # the start-up choice is not a switch
    first = costs[0]
    assert first["frames_until_first"] == 2 and first["first_latency_ms"] == 90.0
    assert first["max_latency_ms_first5"] == 90.0 and first["median_latency_ms_before"] == 20.0
    assert costs[1]["frames_until_first"] == 0 and costs[1]["first_latency_ms"] == 5.0
    assert costs[2]["frames_until_first"] is None  # nothing confirmed it before the end
