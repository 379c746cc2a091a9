"""Optional frame authentication: an HMAC-SHA-256 over the whole wire frame, per-robot keys.

For deployments without SROS2 (the pip wheels' Fast DDS has no security plugins, and many
robots run without it). Off by default; with it off, frames are byte for byte what they were.

An authenticated frame is a wire frame (:mod:`split_infer.wire`) with version byte ``2`` (so
its CRC covers that), followed by an authentication trailer::

    ┌─────────────────────────── wire frame, version 2 ───────────────────────────┐
    magic "SPIF" │ 2 │ flags │ … header, params, payload … │ crc32 │ key_id u32 │ tag 16 B
    └──────────────────────────── HMAC-SHA-256(key[key_id]) over all of this ──┘ (truncated)

* A receiver with authentication on checks the trailer **before interpreting anything else**
  (only the magic, the version byte and the trailer's position are read): a wrong key, a
  modified byte, an unknown key id or an unsigned (version 1) frame is rejected as
  ``unauthenticated``.
* A receiver with authentication off decodes version 2 frames too (the trailer is skipped);
  a decoder from before version 2 refuses them as ``bad_version`` with the version in the
  message, which is the clear error for a mixed deployment.
* Keys live in a key file named by a node parameter, never in the bundle or the repository:
  one key per line, ``<key id> <hex key> [namespace ...]``; ``#`` starts a comment. The
  optional namespaces bind a key to the robots (streams) that may use it, so one robot cannot
  sign frames for another. The file must not be readable by group or others (like ssh keys).
* Replays of a validly signed frame are still the freshness guard's job
  (:mod:`split_infer.pipeline.freshness`): authentication says *who*, not *when*.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from split_infer.errors import FrameError, UserError
from split_infer.wire import AUTH_TRAILER_BYTES, AUTH_VERSION, MAGIC

__all__ = [
    "AUTH_VERSION",
    "TAG_BYTES",
    "TRAILER_BYTES",
    "FrameKey",
    "KeyFileError",
    "KeyRing",
    "load_key_file",
    "sign",
    "single_key",
    "verify",
]

#: HMAC-SHA-256 truncated to 16 bytes (128 bits).
TAG_BYTES = 16
_KEY_ID = struct.Struct("<I")
#: What authentication adds to every frame: key id and tag (the decoder skips it).
TRAILER_BYTES = AUTH_TRAILER_BYTES
_CRC = struct.Struct("<I")
MIN_KEY_BYTES = 16


class KeyFileError(UserError, ValueError):
    """A key file that cannot be used; the message names the file, line and problem."""


@dataclass(frozen=True)
class FrameKey:
    """One key: its id on the wire, the secret, and the namespaces it may sign for (empty:
    any)."""

    key_id: int
    secret: bytes = field(repr=False)
    namespaces: frozenset[str] = frozenset()

    def allows(self, namespace: str) -> bool:
        return not self.namespaces or _norm(namespace) in self.namespaces


@dataclass(frozen=True)
class KeyRing:
    """The keys a receiver accepts, by id."""

    keys: Mapping[int, FrameKey]

    def __len__(self) -> int:
        return len(self.keys)


def _norm(namespace: str) -> str:
    return "/" + namespace.strip("/")


def load_key_file(path: str | Path) -> KeyRing:
    """Read a key file (see the module docstring); KeyFileError naming the problem."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by group or others (mode "
                           f"{mode & 0o777:o}); chmod 600 it")
    keys: dict[int, FrameKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"key file {path}, line {number}"
        if len(fields) < 2:
            raise KeyFileError(f"{where}: expected '<key id> <hex key> [namespace ...]'")
        try:
            key_id = int(fields[0])
        except ValueError:
            raise KeyFileError(f"{where}: key id {fields[0]!r} is not an integer") from None
        if not 0 <= key_id <= 0xFFFFFFFF:
            raise KeyFileError(f"{where}: key id {key_id} does not fit 32 bits")
        try:
            secret = bytes.fromhex(fields[1])
        except ValueError:
            raise KeyFileError(f"{where}: the key is not hexadecimal") from None
        if len(secret) < MIN_KEY_BYTES:
            raise KeyFileError(f"{where}: a key needs at least {MIN_KEY_BYTES} bytes "
                               f"({2 * MIN_KEY_BYTES} hex digits), got {len(secret)}")
        if key_id in keys:
            raise KeyFileError(f"{where}: key id {key_id} appears twice")
        keys[key_id] = FrameKey(key_id, secret, frozenset(_norm(n) for n in fields[2:]))
    if not keys:
        raise KeyFileError(f"key file {path} holds no key")
    return KeyRing(keys)


def _tag(secret: bytes, signed: bytes | memoryview) -> bytes:
    return hmac.new(secret, signed, hashlib.sha256).digest()[:TAG_BYTES]


def sign(frame: bytes, key: FrameKey) -> bytes:
    """A version-1 wire frame → its authenticated form (version 2, CRC recomputed, trailer)."""
    if len(frame) < 5 + _CRC.size or frame[:4] != MAGIC or frame[4] != 1:
        raise ValueError("sign() takes an encoded version-1 wire frame")
    body = frame[:4] + bytes([AUTH_VERSION]) + frame[5:-_CRC.size]
    signed = body + _CRC.pack(zlib.crc32(body)) + _KEY_ID.pack(key.key_id)
    return signed + _tag(key.secret, signed)


def verify(data: bytes | memoryview, keys: KeyRing, namespace: str = "") -> memoryview:
    """Check an authenticated frame before anything else in it is interpreted; returns it
    (as a view) for :func:`split_infer.wire.decode_frame`, which skips the trailer.

    FrameError ``unauthenticated`` for an unsigned frame, an unknown key id, a key not bound
    to ``namespace``, or a tag that does not match.
    """
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    if len(view) < 5 + _CRC.size + TRAILER_BYTES or bytes(view[:4]) != MAGIC:
        raise FrameError("unauthenticated", "not an authenticated split_infer frame")
    if view[4] != AUTH_VERSION:
        raise FrameError("unauthenticated", f"wire version {view[4]} is not signed "
                                            f"(authentication needs version {AUTH_VERSION})")
    signed = view[:-TAG_BYTES]
    (key_id,) = _KEY_ID.unpack_from(view, len(view) - TRAILER_BYTES)
    key = keys.keys.get(key_id)
    if key is None:
        raise FrameError("unauthenticated", f"unknown key id {key_id}")
    if not key.allows(namespace):
        raise FrameError("unauthenticated", f"key id {key_id} may not sign for {namespace!r}")
    if not hmac.compare_digest(_tag(key.secret, signed), bytes(view[-TAG_BYTES:])):
        raise FrameError("unauthenticated", f"the tag does not match key id {key_id}")
    return view


def single_key(keys: KeyRing, key_id: int | None = None) -> FrameKey:
    """The key a sender signs with: ``key_id``, or the file's only key."""
    if key_id is not None and key_id >= 0:
        if key_id not in keys.keys:
            raise KeyFileError(f"the key file has no key id {key_id} "
                               f"(ids: {sorted(keys.keys)})")
        return keys.keys[key_id]
    if len(keys) != 1:
        raise KeyFileError(f"the key file holds {len(keys)} keys; name the one to sign with")
    return next(iter(keys.keys.values()))

