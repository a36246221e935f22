"""Parsers: one raw log line in, one :class:`~ingest.records.Event` or :class:`~ingest.records.DeadLetter` out.

A parser is compiled once from configuration (an Envoy format string, a
``json_format`` mapping, the app's field paths) and then applied per line. It
never raises on a bad line: it returns a dead letter with a low-cardinality
reason (``oversized``, ``invalid_utf8``, ``truncated``, ``format_mismatch``,
``invalid_json``, ``not_an_object``, ``invalid_value``; normalize adds
``missing_timestamp``). A broken *configuration* raises ``ValueError`` at
compile time.

The pipeline calls :func:`build_gateway_parser` and :func:`build_app_parser`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ingest.errors import FormatError
from ingest.parsers.app_json import DEFAULT_APP_FIELDS, compile_app_parser
from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, Parser, decode_json_object, decode_line
from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT
from ingest.parsers.envoy_json import compile_json_format, json_labelled_values
from ingest.parsers.envoy_text import compile_text_format, compile_text_pattern

__all__ = [
    "DEFAULT_APP_FIELDS",
    "DEFAULT_MAX_LINE_BYTES",
    "ENVOY_DEFAULT_FORMAT",
    "Parser",
    "build_app_parser",
    "build_gateway_parser",
    "compile_app_parser",
    "compile_json_format",
    "compile_text_format",
    "decode_json_object",
    "decode_line",
    "gateway_labelled_values",
]


def build_gateway_parser(
    format: str | None = None,  # shadows the builtin on purpose: Envoy's option name
    json_format: Mapping[str, Any] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    xff_num_trusted_hops: int = 0,
) -> Parser:
    """The parser for the gateway's access log, configured like Envoy's access logger.

    Give ``format`` (a format string) or ``json_format`` (a ``json_format`` or
    ``typed_json_format`` mapping), not both; with neither, Envoy's default
    format. Raises ``ValueError`` for both, or for a broken format.
    ``xff_num_trusted_hops``: as the gateway's own setting, for reading the client from
    X-Forwarded-For (:func:`ingest.addresses.forwarded_client`).
    """
    if format is not None and json_format is not None:
        raise FormatError("gateway: set format or json_format, not both")
    if json_format is not None:
        return compile_json_format(json_format, max_line_bytes, xff_num_trusted_hops)
    fmt = ENVOY_DEFAULT_FORMAT if format is None else format
    return compile_text_format(fmt, max_line_bytes, xff_num_trusted_hops)


def gateway_labelled_values(
    format: str | None = None, json_format: Mapping[str, Any] | None = None
) -> Callable[[str], list[tuple[str, str]]]:
    """For a gateway line, the values of the format's label operators (``req.authorization``...):
    what redaction needs to find a header's secret by its place in a dead letter's raw line."""
    if json_format is not None:
        return json_labelled_values(json_format)
    return compile_text_pattern(ENVOY_DEFAULT_FORMAT if format is None else format).labelled_values


def build_app_parser(fields: Mapping[str, str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Parser:
    """The parser for the app's JSON log: ``fields`` overrides entries of ``DEFAULT_APP_FIELDS``."""
    return compile_app_parser(fields, max_line_bytes)
