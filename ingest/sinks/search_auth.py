"""Credentials and TLS for the search store, from the ``store`` config section.

Each secret (``username``, ``password``, ``api_key``) is given at most one way:
the value itself (``store.password``), an environment variable named by
``store.password_env``, or a file named by ``store.password_file`` (its content,
surrounding whitespace stripped). ``user:password@`` in the URL still works but
is logged as a warning (it shows in ``ps``); a ``store.username`` /
``store.password`` given in the config wins over it.

A secret never leaves this module except into the client: :class:`StoreAuth`
hides it from ``repr``, errors name the key and never the value, and
:func:`redact_url` is what prints a URL.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ingest.errors import ConfigError

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@?#]*)@")
_ANY_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@?#:\s]*)(?::[^/@?#\s]*)?@")


@dataclass(frozen=True, slots=True)
class StoreAuth:
    """What the client needs to authenticate and to check the server: all optional."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify_certs: bool = True

    def elasticsearch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``elasticsearch.Elasticsearch`` for these settings."""
        kwargs: dict[str, Any] = self._tls()
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key
        elif self.username is not None:
            kwargs["basic_auth"] = (self.username, self.password or "")
        return kwargs

    def opensearch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``opensearchpy.OpenSearch`` for these settings."""
        kwargs: dict[str, Any] = self._tls()
        if self.api_key is not None:
            kwargs["headers"] = {"Authorization": f"ApiKey {self.api_key}"}
        elif self.username is not None:
            kwargs["http_auth"] = (self.username, self.password or "")
        return kwargs

    def _tls(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"verify_certs": self.verify_certs}
        if not self.verify_certs:
            kwargs["ssl_show_warn"] = False  # said once, by check_tls, not on every request
        for name in ("ca_certs", "client_cert", "client_key"):
            if (value := getattr(self, name)) is not None:
                kwargs[name] = value
        return kwargs


def redact_url(url: str) -> str:
    """``url`` with the password of any ``user:password@`` in it replaced by ``***``: the form to print."""
    return _ANY_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, username, password)``; the names are percent-decoded."""
    match = _USERINFO.match(url)
    if match is None:
        return url, None, None
    user, _, password = match["userinfo"].partition(":")
    return f"{match['scheme']}{url[match.end():]}", unquote(user) or None, unquote(password) if password else None


def read_secret(config: object, name: str, section: str = "store") -> str | None:
    """``config.<name>``, else the variable ``<name>_env`` names, else the file ``<name>_file`` names; or None.

    Raises :class:`ConfigError` naming ``<section>.<name>_env|_file``, never the value.
    """
    value = getattr(config, name, None)
    if value is not None:
        return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    env = getattr(config, f"{name}_env", None)
    if env is not None:
        found = os.environ.get(env)
        if not found:
            raise ConfigError(f"{section}.{name}_env: the environment variable {env} is not set or empty")
        return found
    path = getattr(config, f"{name}_file", None)
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError(f"{section}.{name}_file: cannot read {path}: {why}") from None
        if not text:
            raise ConfigError(f"{section}.{name}_file: {path} is empty")
        return text
    return None


def store_auth(store_config: object | None, url: str) -> tuple[str, StoreAuth]:
    """The URL to connect to (no userinfo) and the credentials, from ``store_config`` and ``url``.

    Raises :class:`ConfigError` naming the key when a variable is unset or a
    file unreadable.
    """
    clean, url_user, url_password = split_userinfo(url)
    if url_user is not None:
        log.warning(
            "store_url_credentials url=%s: credentials in the store URL show in ps and shell history; "
            "use store.username with store.password_env or store.password_file",
            redact_url(url),
        )
    username = read_secret(store_config, "username") if store_config is not None else None
    password = read_secret(store_config, "password") if store_config is not None else None
    api_key = read_secret(store_config, "api_key") if store_config is not None else None
    if username is None and api_key is None:
        username, password = url_user, url_password if password is None else password
    tls = {
        name: str(value) if (value := getattr(store_config, name, None)) is not None else None
        for name in ("ca_certs", "client_cert", "client_key")
    }
    verify = bool(getattr(store_config, "verify_certs", True))
    if not verify and clean.lower().startswith("https:"):
        log.warning("store_tls_unverified url=%s: store.verify_certs is false, the server is not authenticated",
                    redact_url(clean))
    return clean, StoreAuth(username, password, api_key, verify_certs=verify, **tls)
