"""The real-link testbed: namespaces + veth + tc, two processes talking DDS over UDP.

The namespace tests need root (CI runs as root) and skip with the reason otherwise; the report
arithmetic (:func:`split_infer.tools.testbed.runner.summarize`) is tested everywhere.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ros_fixtures import build_tiny_bundle, random_images, with_measurements

from split_infer.data import ArrayDataset
from split_infer.tools.bag.storage import write_dataset_bag
from split_infer.tools.link import load_trace, step_trace, write_trace
from split_infer.tools.testbed.netns import (
    NetnsLink,
    Shaping,
    list_testbed_namespaces,
    netns_problem,
)
from split_infer.tools.testbed.runner import TestbedSettings, run_testbed, summarize

NETNS_PROBLEM = netns_problem()
_netns_skip = pytest.mark.skipif(NETNS_PROBLEM is not None,
                                 reason=f"real-link testbed: {NETNS_PROBLEM}")


def needs_netns(test):
    """Real-link tests: root tier, skipped with the reason where namespaces are unavailable."""
    return pytest.mark.root(_netns_skip(test))


# -- report arithmetic (no namespaces) ------------------------------------------------------------


def test_summarize_counts_dropped_frames_as_wrong(tmp_path):
    trace = step_trace([(0.0, 1e6), (5.0, 2e5)])
    t0 = 1000.0
    stamps = [int((t0 + 0.1 * i) * 1e9) for i in range(100)]  # 10 s of 10 fps
    labels = [[t0 + 0.1 * i, stamp, i % 3] for i, stamp in enumerate(stamps)]
    # Every other frame delivered 50 ms later; of those, every fourth predicted wrong.
    results = [[t0 + 0.1 * i + 0.05, stamp, (i % 3) if i % 4 else (i + 1) % 3, 3.0, 8.0]
               for i, stamp in enumerate(stamps) if i % 2 == 0]
    results[10][3:] = [2.0, 4.0]  # frame 20 answered with another configuration than sent
    results[11][0] += 1.5  # frame 22 answered 1.55 s after capture: stale
    results.append(list(results[12]))  # frame 24 answered twice
    records = {"edge": {"labels": labels, "results": results,
                        "sent": [[t0 + 0.1 * i, s, 1000, 3, 8.0] for i, s in enumerate(stamps)],
                        "active_ratio": [[t0, 4.0], [t0 + 6.0, 8.0]],
                        "active_split": [[t0, 3.0]],
                        "estimates": [[t0 + 5.5 + 0.1 * i, 2.1e5] for i in range(20)]},
               "cloud": {}}
    settings = TestbedSettings(bundle=Path("b"), bag=Path("g"), trace=Path("t"), warmup_s=0.0)
    report = summarize(records, trace, settings, t0, 10.0, rx_bytes=100_000,
                       event_ends=[("scheduler killed", 4.0)])
    summary = report["summary"]
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
    assert reaction["configuration_changed_after_s"] == pytest.approx(1.0)
    assert reaction["ratio_before"] == 4.0 and reaction["ratio_after"] == 8.0
    (recovery,) = report["recoveries"]  # first frame captured at/after 4 s: frame 40, +50 ms
    assert recovery["fault"].startswith("scheduler killed")
    assert recovery["recovered_after_s"] == pytest.approx(0.05, abs=1e-6)


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


@pytest.mark.realtime
@needs_netns
def test_testbed_adapts_to_a_rate_drop(graded_bundle, tmp_path):
    """About 30 s: 30 fps of camera frames over a veth that drops from 8 to 0.3 Mbit/s."""
    bundle, sizes = graded_bundle
    bag = tmp_path / "bag"
    dataset = ArrayDataset("random", random_images(60, seed=4), np.arange(60) % 10,
                           list(bundle.classes))
    write_dataset_bag(bag, dataset, rate_hz=30.0, progress=False)
    trace = tmp_path / "drop.csv"
    write_trace(step_trace([(0.0, 8e6), (12.0, 3e5)]), trace)
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
    # Everything this process created is removed (other runs on the host may have their own).
    assert not [n for n in list_testbed_namespaces() if n[2:-1] == str(os.getpid())]
    assert load_trace(trace).rate_at(13.0) == 3e5


def test_cli_testbed_without_root_says_why(monkeypatch, capsys):
    from split_infer.tools import cli
    from split_infer.tools.testbed import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert cli.main(["testbed", "--duration", "1"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_delay_segments_above_the_base_delay_are_faults_with_a_recovery():
    from split_infer.tools.testbed.runner import _fault_ends

    trace = load_trace_rows([(0, 5e6, 10, 0), (5, 5e6, 50, 0), (15, 5e6, 10, 0),
                             (18, 5e6, 10, 0.05), (19, 5e6, 10, 0)])
    assert _fault_ends(trace, 30.0, [("scheduler killed", 8.0)]) == [
        ("delay 50 ms 5-15 s", 15.0), ("loss 5% 18-19 s", 19.0),
        ("scheduler killed at 8.00 s", 8.0)]
    assert _fault_ends(trace, 16.0, []) == [("delay 50 ms 5-15 s", 15.0)]


def load_trace_rows(rows):
    from split_infer.tools.link import Trace

    return Trace.from_rows(rows, "test")
