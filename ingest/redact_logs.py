"""Log redaction: every log record's message and traceback pass the Redactor before a handler writes them."""

from __future__ import annotations

import logging

from ingest.redact import Redactor


class RedactingLogFilter(logging.Filter):
    """Redacts every log record's message (and traceback) before a handler writes it."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor.redact(logging.Formatter().formatException(record.exc_info))
        return True


LOG_FILTER = RedactingLogFilter()


def install_log_redaction(redactor: Redactor | None = None) -> None:
    """Put :data:`LOG_FILTER` on every root handler (once) and use ``redactor`` from now on."""
    if redactor is not None:
        LOG_FILTER.redactor = redactor
    for handler in logging.getLogger().handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
