"""The token revocation list: a CSV of ``jti,revoked_at``."""

from __future__ import annotations

import csv
import threading
from collections.abc import Mapping
from pathlib import Path

from ingest.errors import SourceError
from ingest.normalize import InvalidValueError, parse_timestamp


def load_revocations(path: Path) -> dict[str, float]:
    """Map each revoked ``jti`` to its revocation time (epoch seconds); the earliest wins."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"jti", "revoked_at"} <= set(reader.fieldnames):
                raise SourceError(f"{path}: the revocation list needs a header line 'jti,revoked_at'")
            revoked: dict[str, float] = {}
            for line_number, row in enumerate(reader, start=2):
                try:
                    at = parse_timestamp(row["revoked_at"].strip())
                except (InvalidValueError, AttributeError):
                    raise SourceError(
                        f"{path}:{line_number}: revoked_at {row['revoked_at']!r} is not ISO 8601 or epoch seconds"
                    ) from None
                jti = (row["jti"] or "").strip()
                if jti:
                    revoked[jti] = min(at, revoked.get(jti, at))
            return revoked
    except OSError as error:
        raise SourceError(f"cannot read the revocation list {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SourceError(f"the revocation list {path} is not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise SourceError(f"the revocation list {path} is not CSV: {error}") from None


_shared: dict[Path, tuple[tuple[int, int, int], Mapping[str, float]]] = {}  # path -> (inode, mtime, size; its list)
_shared_lock = threading.Lock()


def shared_revocations(path: Path) -> Mapping[str, float]:
    """:func:`load_revocations`, read once a process while the file stays the same (inode, mtime, size).

    ``serve`` makes the rules' context for every task it runs (13 with the default six
    partitions) and again at each rebalance: a list of a million jtis cost 2.6 s of CPU and
    140 MB each time it was read. Every caller gets the same mapping: never change it.
    """
    try:
        stat = path.stat()
    except OSError:
        return load_revocations(path)  # raises SourceError with the reason
    signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _shared_lock:
        known = _shared.get(path)
        if known is None or known[0] != signature:
            known = _shared[path] = (signature, load_revocations(path))
    return known[1]
