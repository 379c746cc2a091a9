"""Packet delay and jitter without ``sch_netem``: hold each packet in an NFQUEUE and release
it later. The testbed's stand-in for ``netem delay`` on kernels built without ``sch_netem``
but with netfilter queues.

::

    edge namespace
    ┌──────────────────────────────────────────────────────────────────────────────┐
    │ DDS ─▶ OUTPUT: SI_LOSS (drop) ─▶ NFQUEUE q ──▶ tbf (rate) ─▶ veth ─▶ cloud      │
    │                                     │  ▲                                      │
    │                         packet id   ▼  │ ACCEPT verdict, delay (± jitter) later│
    │                                     (DROP verdicts while the link is out)     │
    │                              PacketDelayer (this module, a process)           │
    └──────────────────────────────────────────────────────────────────────────────┘

The delayer talks netfilter's queue protocol over a ``NETLINK_NETFILTER`` socket directly (no C
library): it binds queue ``q`` in copy mode META (the kernel sends each packet's id and
metadata, never its payload) and answers every packet with an ACCEPT verdict ``delay`` plus a
uniform ``±jitter`` after it arrived (during an outage, with a DROP verdict at once). Release
times never go backwards, so packets leave in order — a link whose latency varies, not one that
reorders (``netem`` reorders when the jitter exceeds the packet spacing). The iptables rule
uses ``--queue-bypass`` and the queue is bound fail-open, so if the delayer is gone or
overwhelmed packets pass undelayed instead of being dropped.

Run in the namespace (``ip netns exec NS python -m split_infer.tools.testbed.nfqueue --queue Q``);
it prints ``READY`` once bound, reads ``DELAY <ms> <jitter ms>`` lines on stdin to change the
delay and ``DROP`` lines for an outage (every packet it holds or is handed is dropped, until the
next ``DELAY``), answers each with ``OK`` once done (``ERROR ...`` for a line it cannot
read), and exits when stdin closes.
:class:`split_infer.tools.testbed.netns.NetnsLink` manages it.
Root (CAP_NET_ADMIN) only.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import socket
import struct
import sys
import time
from collections import deque

__all__ = ["PacketDelayer", "main"]

NETLINK_NETFILTER = 12
_SUBSYS_QUEUE = 3
_MSG_PACKET, _MSG_VERDICT, _MSG_CONFIG = 0, 1, 2
_CFG_CMD, _CFG_PARAMS, _CFG_QUEUE_MAXLEN, _CFG_MASK, _CFG_FLAGS = 1, 2, 3, 4, 5
_CMD_BIND = 1
_COPY_META = 1
_CFG_F_FAIL_OPEN = 1
_PACKET_HDR = 1
_VERDICT_HDR = 2
_NF_DROP, _NF_ACCEPT = 0, 1
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg_type: int, queue: int, attributes: list[bytes], flags: int, seq: int) -> bytes:
    # nfgenmsg: family, version (NFNETLINK_V0), resource id = the queue (big endian)
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue)
    body += b"".join(attributes)
    return _HEADER.pack(_HEADER.size + len(body), (_SUBSYS_QUEUE << 8) | msg_type, flags, seq,
                        0) + body


def packet_ids(data: bytes) -> list[int]:
    """The packet ids of the NFQUEUE packet messages in one netlink datagram (pure)."""
    ids = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, msg_type, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        if msg_type == (_SUBSYS_QUEUE << 8) | _MSG_PACKET:
            position, end = offset + _HEADER.size + 4, offset + length
            while position + 4 <= end:
                attr_length, kind = struct.unpack_from("=HH", data, position)
                if attr_length < 4:
                    break
                if kind & 0x7FFF == _PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, position + 4)[0])
                    break
                position += (attr_length + 3) & ~3
        offset += (length + 3) & ~3
    return ids


class PacketDelayer:
    """Binds NFQUEUE ``queue`` and releases each packet ``delay_ms`` (± ``jitter_ms``) after it
    arrived, in order. :meth:`serve` runs until ``control`` (stdin) closes. ``netlink``: a
    socket bound to the queue already (tests pass one end of a socket pair); None binds one."""

    def __init__(self, queue: int, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 max_held: int = 8192, seed: int | None = None,
                 netlink: socket.socket | None = None) -> None:
        self.queue = queue
        self.delay_s, self.jitter_s = delay_ms / 1e3, jitter_ms / 1e3
        self._random = random.Random(seed)
        self._held: deque[tuple[float, int]] = deque()  # (release time, packet id)
        self._last_release = 0.0
        self._seq = 0
        self.released = 0
        self.dropped = 0
        self.out = False  # an outage: every packet is dropped (drop_all)
        if netlink is not None:
            self._socket = netlink
            return
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._socket.bind((0, 0))
        self._request(_MSG_CONFIG, [_attribute(_CFG_CMD, struct.pack("!BxH", _CMD_BIND, 0))])
        self._request(_MSG_CONFIG, [
            _attribute(_CFG_PARAMS, struct.pack("!IB", 0, _COPY_META)),
            _attribute(_CFG_QUEUE_MAXLEN, struct.pack("!I", max_held)),
            _attribute(_CFG_MASK, struct.pack("!I", _CFG_F_FAIL_OPEN)),
            _attribute(_CFG_FLAGS, struct.pack("!I", _CFG_F_FAIL_OPEN))])

    def _request(self, msg_type: int, attributes: list[bytes]) -> None:
        """Send a configuration message and wait for its acknowledgement (OSError if refused)."""
        self._seq += 1
        self._socket.send(_message(msg_type, self.queue, attributes,
                                   _NLM_F_REQUEST | _NLM_F_ACK, self._seq))
        self._socket.settimeout(5.0)
        try:
            while True:
                data = self._socket.recv(65536)
                _, kind, _, seq, _ = _HEADER.unpack_from(data)
                if kind == _NLMSG_ERROR and seq == self._seq:
                    error = struct.unpack_from("=i", data, _HEADER.size)[0]
                    if error:
                        raise OSError(-error, f"NFQUEUE {self.queue}: {os.strerror(-error)}")
                    return
        except TimeoutError:
            raise TimeoutError(f"NFQUEUE {self.queue}: no acknowledgement from the kernel"
                               ) from None
        finally:
            self._socket.settimeout(None)

    def set_delay(self, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Release packets ``delay_ms`` (± ``jitter_ms``) after they arrive; ends an outage."""
        self.delay_s, self.jitter_s = max(delay_ms, 0.0) / 1e3, max(jitter_ms, 0.0) / 1e3
        self.out = False

    def drop_all(self) -> None:
        """An outage: drop every packet held and every one the kernel has queued for us, and
        the next ones until :meth:`set_delay`. With the link's drop rule already in place
        nothing new arrives, so nothing sent before the outage crosses it afterwards."""
        self.out = True
        while self._held:  # oldest first
            self._verdict(_NF_DROP, self._held.popleft()[1])
        self._socket.setblocking(False)
        try:
            while True:
                for packet_id in packet_ids(self._socket.recv(1 << 20)):
                    self._verdict(_NF_DROP, packet_id)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # ENOBUFS: messages lost (fail-open passed those packets); any still
            pass  # queued come later and are dropped by _hold, since ``out`` is set
        finally:
            self._socket.setblocking(True)

    def _verdict(self, verdict: int, packet_id: int) -> None:
        self._socket.send(_message(_MSG_VERDICT, self.queue, [_attribute(
            _VERDICT_HDR, struct.pack("!II", verdict, packet_id))], _NLM_F_REQUEST, 0))
        if verdict == _NF_ACCEPT:
            self.released += 1
        else:
            self.dropped += 1

    def _hold(self, packet_id: int, now: float) -> None:
        if self.out:
            self._verdict(_NF_DROP, packet_id)
            return
        wait = self.delay_s
        if self.jitter_s > 0:
            wait = max(0.0, wait + self._random.uniform(-self.jitter_s, self.jitter_s))
        self._last_release = max(now + wait, self._last_release)
        self._held.append((self._last_release, packet_id))

    def _release_due(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            self._verdict(_NF_ACCEPT, self._held.popleft()[1])

    def command(self, line: str) -> str:
        """One control line applied: ``DELAY <ms> <jitter ms>`` (:meth:`set_delay`) or ``DROP``
        (:meth:`drop_all`); returns ``OK``, or ``ERROR ...`` for a line it cannot read."""
        words = line.split()
        try:
            if len(words) == 3 and words[0] == "DELAY":
                self.set_delay(float(words[1]), float(words[2]))
            elif words == ["DROP"]:
                self.drop_all()
            else:
                return f"ERROR unknown command {line!r}"
        except ValueError:
            return f"ERROR not a delay in ms: {line!r}"
        return "OK"

    def receive(self, now: float) -> None:
        """Read one datagram of packets from the kernel and hold (or, out, drop) them."""
        try:
            data = self._socket.recv(1 << 20)
        except OSError:  # ENOBUFS: the kernel dropped messages; fail-open passes them
            return
        for packet_id in packet_ids(data):
            self._hold(packet_id, now)

    def serve(self, control: int) -> None:
        """Hold and release packets; each line on ``control`` is a :meth:`command`, answered
        on stdout. Returns when ``control`` reaches end of file (everything held is
        released)."""
        buffer = b""
        while True:
            now = time.monotonic()
            self._release_due(now)
            timeout = max(0.0, self._held[0][0] - now) if self._held else None
            readable, _, _ = select.select([self._socket, control], [], [], timeout)
            if self._socket in readable:
                self.receive(time.monotonic())
            if control in readable:
                chunk = os.read(control, 4096)
                if not chunk:
                    self._release_due(float("inf"))
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    print(self.command(line.decode(errors="replace")), flush=True)

    def close(self) -> None:
        self._socket.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        delayer = PacketDelayer(args.queue, args.delay_ms, args.jitter_ms)
    except OSError as exc:
        print(f"ERROR cannot bind NFQUEUE {args.queue}: {exc}", flush=True)
        return 2
    print("READY", flush=True)
    try:
        delayer.serve(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        delayer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
