"""How a config file's text is read, and how what is wrong with it is said.

YAML without a key written twice, and one error line that names each bad key and never
shows a secret's value, nor a URL's credentials or query.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing a key written twice in one mapping (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key written twice in one mapping: YAML keeps the last silently,
    so a second ``detectors:`` section would drop the first one's settings without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults": its keys may be overridden, as YAML says
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader names that problem
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {str(key)[:64]!r} is written twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark is not None else problem


_SECRET_NAMES = ("password", "secret", "token", "key", "authorization")


def _holds_a_secret(location: tuple[int | str, ...]) -> bool:
    """A setting whose value must not be echoed: a name ending like a secret's (``sasl_password``,
    ``hash_key``), or a header a forwarder sends (``Authorization: Bearer ...``)."""
    if location[:1] == ("detectors",):
        return False  # thresholds and counts (max_addresses_per_token): never a secret
    if location[:2] == ("http_ingest", "tokens"):
        return True  # a digest, or the token itself pasted by mistake
    name = str(location[-1]).lower().replace("-", "_") if location else ""
    return "headers" in map(str, location) or any(name == n or name.endswith("_" + n) for n in _SECRET_NAMES)


_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def printable_url(url: str) -> str:
    """``url`` as an error or a log line may show it: ``scheme://host:port/path``, without a ``user:password@``
    or a query (``?token=...``), either of which may hold a secret; ``?…`` says a query was left out."""
    shown = _USERINFO.sub("", url, count=1)
    end = min((i for i in (shown.find("?"), shown.find("#")) if i >= 0), default=len(shown))
    return shown[:end] + (shown[end] + "…" if end < len(shown) else "")


def _shown(value: object) -> object:
    return printable_url(value) if isinstance(value, str) and "://" in value else value


def describe_error(error: ValidationError) -> str:
    """One line, however many problems: a config error is one line on the terminal, with no secret in it."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if message.startswith("Input "):  # pydantic's "Input should be ...": the key is the subject
            key, message = f"{key} {message.removeprefix('Input ')}", ""
        if item["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key (check the spelling; see schemas/config.schema.json)")
        elif _holds_a_secret(item["loc"]):
            problems.append(f"{key} (its value not shown){message and ': ' + message}")
        elif isinstance(item.get("input"), (dict, list)):  # a whole section may hold secrets: name the keys only
            problems.append(f"{key}{message and ': ' + message}")
        else:
            problems.append(f"{key}{message and ': ' + message} (got {_shown(item.get('input'))!r})")
    return "invalid config: " + "; ".join(problems)
