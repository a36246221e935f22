"""A request's route as gatewatch keys it: what ``http_5xx_burst`` counts by, the hunt queries group by and
the search documents carry as ``gatewatch.route``.

Envoy's default format logs no route name, so one is made from what the line has: the route name, else
the upstream cluster, else the Host the client wrote and the first path segment. The Host is taken
without port or trailing dot, so ``API.example:443`` and ``api.example.`` cannot split one route's errors
three ways.
"""

from __future__ import annotations


def route_of(
    route_name: str | None, upstream_cluster: str | None, authority: str | None, path: str | None
) -> str | None:
    """Route name, else upstream cluster, else ``host/first-path-segment``; None without any of them."""
    if route_name:
        return route_name
    if upstream_cluster:
        return upstream_cluster
    if not authority:
        return None
    segment = (path or "/").split("?", 1)[0].lstrip("/").split("/", 1)[0]
    return f"{_host(authority)}/{segment}"


def _host(authority: str) -> str:
    host = authority.lower()
    if host.startswith("["):  # [2001:db8::1]:443
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")
