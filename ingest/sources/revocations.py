"""The token revocation list: a CSV of ``jti,revoked_at``."""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from ingest.errors import SourceError
from ingest.escape import quoted
from ingest.normalize import InvalidValueError, parse_timestamp

log = logging.getLogger(__name__)


def load_revocations(path: Path) -> dict[str, float]:
    """Map each revoked ``jti`` to its revocation time (epoch seconds); the earliest wins."""
    try:
        # utf-8-sig: Excel and PowerShell begin a UTF-8 file with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)  # "jti, revoked_at" too
            if reader.fieldnames is not None:
                reader.fieldnames = [name.strip() for name in reader.fieldnames]
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


_shared: dict[Path, tuple[tuple[int, int, int], dict[str, float]]] = {}  # path -> (inode, mtime, size; its list)
_shared_lock = threading.Lock()
_last_refresh = float("-inf")  # time.monotonic() of the last refresh_shared_revocations that looked

REFRESH_SECS = 5.0
"""How often a running ``serve`` looks whether a revocation list it read has changed."""


def shared_revocations(path: Path) -> Mapping[str, float]:
    """:func:`load_revocations`, read once a process while the file stays the same (inode, mtime, size).

    ``serve`` makes the rules' context for every task it runs (13 with the default six
    partitions) and again at each rebalance: a list of a million jtis cost 2.6 s of CPU and
    140 MB each time it was read. Every caller gets the same mapping, which
    :func:`refresh_shared_revocations` brings up to date in place: never change it yourself.
    """
    try:
        stat = path.stat()
    except OSError:
        return load_revocations(path)  # raises SourceError with the reason
    signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _shared_lock:
        known = _shared.get(path)
        if known is None:
            known = _shared[path] = (signature, load_revocations(path))
        elif known[0] != signature:
            _replace_in_place(known[1], load_revocations(path))
            _shared[path] = (signature, known[1])
    return known[1]


def refresh_shared_revocations(now: float) -> list[Path]:
    """Read again every shared revocation list whose file changed; the paths read. ``now``: ``time.monotonic()``.

    Looks at most every :data:`REFRESH_SECS`. A list that no longer reads (a half-written
    file, a bad line) is kept as it was, with a warning, until the file reads again: a
    revocation is never lost to an edit in progress.
    """
    global _last_refresh
    if now - _last_refresh < REFRESH_SECS:
        return []
    _last_refresh = now
    read: list[Path] = []
    with _shared_lock:
        for path, (signature, revoked) in list(_shared.items()):
            try:
                stat = path.stat()
                current = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if current == signature:
                    continue
                _replace_in_place(revoked, load_revocations(path))
            except (OSError, SourceError) as error:
                log.warning("revocations_unreadable path=%s error=%s kept=%d", quoted(str(path)), quoted(str(error)),
                            len(revoked))  # fmt: skip
                continue
            _shared[path] = (current, revoked)
            log.info("revocations_read path=%s jtis=%d", quoted(str(path)), len(revoked))
            read.append(path)
    return read


def _replace_in_place(revoked: dict[str, float], new: dict[str, float]) -> None:
    # The rules read this dict from another thread: additions and changes first, removals after,
    # so a token revoked in both lists is never missing from it.
    revoked.update(new)
    for jti in revoked.keys() - new.keys():
        del revoked[jti]
