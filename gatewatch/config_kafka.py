"""``kafka.security``: the TLS and SASL settings every kafka-python client gatewatch builds is given.

A free mapping once took any key: a misspelt one (``security_protcol``) loaded, and serve
failed only at connect, blaming the address; ``client_id``, which gatewatch sets itself, ended
serve in a TypeError traceback; a producer's ``retries`` was refused by the consumer in words of
its own. Only the security settings below are taken, each with its type, and a relative file
is read from the config file's folder like every other file the config names.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool, with_config
from typing_extensions import TypedDict  # pydantic reads a TypedDict from typing only on Python 3.12+

from gatewatch.errors import ConfigError

_FILE = "relative to the config file's folder"


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False))
class KafkaSecurity(TypedDict, total=False):
    """kafka-python's security settings, by its own names; unset keys keep kafka-python's defaults."""

    security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        Field(description="How the brokers' listener is spoken to (default PLAINTEXT)."),
    ]
    # OAUTHBEARER is left out: kafka-python needs a token provider object for it, which YAML cannot give.
    sasl_mechanism: Annotated[
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "AWS_MSK_IAM"],
        Field(description="SASL mechanism, with security_protocol SASL_PLAINTEXT or SASL_SSL."),
    ]
    ssl_cafile: Annotated[str, Field(description=f"PEM file of the CA(s) of the brokers' certificates ({_FILE}).")]
    ssl_certfile: Annotated[str, Field(description=f"PEM client certificate, for mutual TLS ({_FILE}).")]
    ssl_keyfile: Annotated[str, Field(description=f"PEM private key of ssl_certfile ({_FILE}).")]
    ssl_password: Annotated[str, Field(description="Password of ssl_keyfile, if it is encrypted. Prefer "
                                                   "ssl_password_env or ssl_password_file: a config file is read "
                                                   "by many.")]
    ssl_password_env: Annotated[str, Field(description="Environment variable holding ssl_password.")]
    ssl_password_file: Annotated[str, Field(description=f"File holding ssl_password ({_FILE}).")]
    ssl_crlfile: Annotated[str, Field(description=f"PEM certificate revocation list ({_FILE}).")]
    ssl_check_hostname: Annotated[StrictBool, Field(description="Match the broker's name in its certificate.")]
    sasl_kerberos_service_name: Annotated[str, Field(description="GSSAPI: the brokers' service name (default kafka).")]
    sasl_kerberos_domain_name: Annotated[str, Field(description="GSSAPI: their domain (default: the broker's host).")]


SECURITY_KEYS: tuple[str, ...] = tuple(KafkaSecurity.__annotations__)
_FileKey = Literal["ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile", "ssl_password_file"]
SECURITY_FILE_KEYS: tuple[_FileKey, ...] = (
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile", "ssl_password_file",
)  # fmt: skip
SSL_PASSWORD_KEYS = ("ssl_password", "ssl_password_env", "ssl_password_file")
# Given their own keys, so the secret is read from the environment or a file, never kept in this mapping.
_CREDENTIAL_KEYS = {"sasl_plain_username": "sasl_username", "sasl_plain_password": "sasl_password"}


def check_security_keys(security: object) -> object:
    """``security`` if every key is one of :data:`SECURITY_KEYS`, else a ValueError naming the first that is not.

    Checked before the types so the line says what is wrong with the key itself, and which keys there are:
    "unknown key" alone reads as a typo for ``client_id``, a real kafka-python setting gatewatch sets itself.
    """
    if not isinstance(security, dict):
        return security  # pydantic says it must be a mapping
    for key in security:
        if key in _CREDENTIAL_KEYS:
            name = _CREDENTIAL_KEYS[key]
            raise ValueError(f"{key} is not read: use kafka.{name}, {name}_env or {name}_file")
        if key not in SECURITY_KEYS:
            close = difflib.get_close_matches(str(key), SECURITY_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"unknown key {str(key)[:64]!r}{hint}: it takes {', '.join(SECURITY_KEYS)}; "
                "gatewatch sets every other client setting itself"
            )
    if sum(key in security for key in SSL_PASSWORD_KEYS) > 1:
        raise ValueError(f"give one of {', '.join(SSL_PASSWORD_KEYS)}")
    return security


def security_files_from(base_dir: Path, security: KafkaSecurity) -> KafkaSecurity:
    """``security`` with its relative files (:data:`SECURITY_FILE_KEYS`) read from ``base_dir``."""
    resolved = security.copy()
    for name in SECURITY_FILE_KEYS:
        path = security.get(name)
        if path is not None and not Path(path).is_absolute():
            resolved[name] = str(base_dir / path)
    return resolved


def check_security_files(security: KafkaSecurity) -> None:
    """A :class:`ConfigError` naming the first file of ``security`` that is not there, and where it was looked for."""
    for name in SECURITY_FILE_KEYS:
        path = security.get(name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"kafka.security.{name}: cannot read {path}: no such file "
                              "(a relative path is read from the config file's folder)")  # fmt: skip
