"""Kafka forwarder: lifecycle event documents on a topic, keyed by alert id (so one alert's events stay in order)."""

from __future__ import annotations

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from gatewatch.errors import DeliveryError
from gatewatch.forward.config import KafkaForwarderConfig
from ingest.alerts import AlertEvent
from ingest.settings import KafkaSettings
from ingest.sources.kafka_settings import client_settings


class KafkaForwarder:
    """Produces each event with ``acks=all`` and waits for the acknowledgement."""

    def __init__(self, config: KafkaForwarderConfig, kafka: KafkaSettings) -> None:
        self.config = config
        self._settings = client_settings(kafka, config.bootstrap_servers)
        self._producer: KafkaProducer | None = None

    def send(self, event: AlertEvent) -> None:
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    acks="all", client_id=f"gatewatch-forward-{self.config.name}", **self._settings,
                )  # fmt: skip
            future = self._producer.send(
                self.config.topic, key=event.alert.id.encode(), value=orjson.dumps(event.to_document())
            )
            future.get(timeout=self.config.timeout_secs)
        except KafkaError as error:
            raise DeliveryError(f"kafka topic {self.config.topic}: {error}") from None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError:
                pass
            self._producer = None
