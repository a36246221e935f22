"""A log file's identity: the fingerprint of its first line, not its name.

As Vector's ``file`` source does: a file renamed by logrotate (``access.log``
-> ``access.log.1``), compressed later (``access.log.1.gz`` gunzips to the same
first line) or copied keeps its fingerprint, and a new file at an old name has
a new one. ``--follow`` and ``replay`` both name a file's records
``file:<fingerprint>`` with their byte offsets, so a line has one id however
and under whatever name it was read.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

FINGERPRINT_BYTES = 256
GZIP_MAGIC = b"\x1f\x8b"


def head_fingerprint(head: bytes, whole_file: bool = False) -> str | None:
    """The fingerprint of ``head``, a file's first FINGERPRINT_BYTES (fewer if the file is shorter).

    It hashes the first line with its newline, or all of ``head`` when the
    first line is longer. None while a shorter file has no complete line yet,
    unless ``head`` is the ``whole_file`` (replay: nothing more will come).
    """
    newline = head.find(b"\n")
    if newline < 0 and len(head) < FINGERPRINT_BYTES and not whole_file:
        return None
    return hashlib.blake2b(head[: newline + 1] if newline >= 0 else head, digest_size=8).hexdigest()


def read_head(path: Path | str) -> bytes:
    """The first FINGERPRINT_BYTES of ``path``'s content, gunzipped if it is gzip. Raises OSError.

    A gzip file damaged within its head gives what decoded before the damage,
    and one that is gzip only in its first bytes its raw head: it has a
    fingerprint all the same.
    """
    with open(path, "rb") as handle:
        raw = handle.read(FINGERPRINT_BYTES)
    if raw[:2] != GZIP_MAGIC:
        return raw
    head = b""
    with gzip.open(path, "rb") as unzipped:
        try:
            while len(head) < FINGERPRINT_BYTES and (piece := unzipped.read1(FINGERPRINT_BYTES - len(head))):
                head += piece
        except (EOFError, gzip.BadGzipFile, zlib.error):
            pass
    return head or raw
