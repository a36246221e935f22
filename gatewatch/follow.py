"""``serve --follow``: tail log files on this node and produce their lines to the input topics.

gatewatch as its own shipper: a thread polls a :class:`~ingest.sources.tail.Follower`,
produces each line to ``kafka.topics.gateway`` / ``app`` (keyed by request id when
the line is JSON that has one, with the header ``gatewatch-origin:
file:<fingerprint>:<byte offset>`` that gives it its id downstream), waits for the
broker's acks and only then saves the read positions. A crash re-produces at most
the lines after the last save, under the same ids, so the store holds each once.
While Kafka does not answer, the lines in hand are retried and nothing new is read.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from gatewatch.errors import ConfigError
from gatewatch.http_body import record_key
from gatewatch.http_ingest import InputMessage, input_producer_settings, produce_all, request_id_paths
from ingest.records import Dataset, RawRecord
from ingest.redact_key import origin_key
from ingest.sources.kafka_settings import client_settings
from ingest.sources.tail import Follower

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

__all__ = ["FollowStage", "parse_follow_specs"]

log = logging.getLogger(__name__)

POLL_INTERVAL_SECS = 0.25
RETRY_SECS = 1.0
PRODUCE_TIMEOUT_SECS = 60.0
_SIDES = {"gateway": Dataset.GATEWAY, "app": Dataset.APP}


def parse_follow_specs(specs: list[str]) -> dict[Dataset, list[str]]:
    """``gateway=GLOB`` / ``app=GLOB`` arguments of ``--follow`` as globs per dataset."""
    patterns: dict[Dataset, list[str]] = {}
    for spec in specs:
        side, sep, pattern = spec.partition("=")
        if not sep or side not in _SIDES or not pattern:
            raise ConfigError(f"--follow {spec!r}: write gateway=GLOB or app=GLOB (e.g. gateway=/var/log/envoy/*.log)")
        patterns.setdefault(_SIDES[side], []).append(pattern)
    return patterns


class FollowStage:
    """The follow thread: poll files, produce, wait for acks, save positions (see the module docstring)."""

    def __init__(self, config: GatewatchConfig, metrics: Any, patterns: dict[Dataset, list[str]], positions_path: Path) -> None:
        kafka = config.kafka
        self.metrics = metrics
        self._stop = threading.Event()
        self._topics = {Dataset.GATEWAY: kafka.topics.gateway, Dataset.APP: kafka.topics.app}
        self._origin_key = origin_key(config.redact)
        self._key_paths = {dataset: request_id_paths(config, side) for side, dataset in _SIDES.items()}
        self._follower = Follower(
            patterns, positions_path, max(config.gateway.max_line_bytes, config.app.max_line_bytes),
            unwraps={Dataset.GATEWAY: config.gateway.unwrap, Dataset.APP: config.app.unwrap},
        )
        self._producer = KafkaProducer(
            client_id=f"gatewatch-{kafka.group_id}-follow",
            acks="all",
            linger_ms=5,
            batch_size=1024 * 1024,
            **input_producer_settings(config),
            **client_settings(kafka),
        )
        self._thread = threading.Thread(target=self._run, name="gatewatch-follow", daemon=True)
        self.loop_at = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the lines in hand are produced (or abandoned: they are read again on restart)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._follower.close()
        try:
            self._producer.close(timeout=5)
        except KafkaError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self.loop_at = time.monotonic()
            records = self._follower.poll()
            if not records:
                self._stop.wait(POLL_INTERVAL_SECS)
                continue
            while not self._produce(records):
                if self._stop.wait(RETRY_SECS):
                    return  # not saved: read again after a restart
            self._follower.commit()

    def _produce(self, records: list[RawRecord]) -> bool:
        # The Follower hands out at most max_line_bytes + 1 of a line: longer is an "oversized" dead letter.
        messages = [
            InputMessage(self._topics[record.origin.dataset], record.line, self._key(record),
                         f"{record.origin.stream}:{record.origin.offset}".encode(), self._origin_key)  # fmt: skip
            for record in records
        ]
        try:
            if produce_all(self._producer, messages, time.monotonic() + PRODUCE_TIMEOUT_SECS):
                self.metrics.record_error("follow", "record_too_large")
        except KafkaError as error:
            self.metrics.record_error("follow", "kafka")
            log.warning("follow_produce_failed records=%d error=%r retry_in_secs=%s", len(records), str(error),
                        RETRY_SECS)  # fmt: skip
            return False
        for dataset in (Dataset.GATEWAY, Dataset.APP):
            own = [record for record in records if record.origin.dataset is dataset]
            if own:
                side = "gateway" if dataset is Dataset.GATEWAY else "app"
                self.metrics.received_events.labels(component="file", topic=side).inc(len(own))
                self.metrics.received_bytes.labels(component="file", topic=side).inc(sum(len(r.line) for r in own))
        return True

    def _key(self, record: RawRecord) -> bytes | None:
        path = self._key_paths[record.origin.dataset]
        if path is None or record.line[:1] != b"{":
            return None
        try:
            return record_key(orjson.loads(record.line), path)
        except orjson.JSONDecodeError:
            return None
