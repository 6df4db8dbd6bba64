"""The synchronous Redis client that the command-line tools share.

``tierwise outcomes``, ``tierwise classifier publish``, ``tierwise policy publish`` and
``tierwise usage`` talk to the same Redis as the gateways, single node or Redis Cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

# Longer than the BLOCK time of a follow read (1 s), so an idle stream is not a timeout, and
# long enough to store the bundled classifier (about 1.5 MB) in one call.
REDIS_SOCKET_TIMEOUT_S = 10.0

ClusterOption = Annotated[
    bool,
    typer.Option(
        "--redis-cluster/--no-redis-cluster",
        envvar="TIERWISE_REDIS_CLUSTER",
        help="Treat the URL as one node of a Redis Cluster.",
    ),
]
"""The ``--redis-cluster`` option that every command talking to the gateways' Redis takes."""


@contextlib.contextmanager
def redis_session(url: str | None, cluster: bool) -> Iterator[Any]:
    """Yield a client of the Redis at ``url`` (a Redis Cluster when ``cluster``).

    A missing or unparsable URL ends the command with exit code 2.  A Redis error, while connecting or
    inside the ``with`` block, prints one line without the URL's credentials and ends the
    command with exit code 1.
    """
    if not url:
        typer.echo("error: missing Redis URL: give --redis-url, or set TIERWISE_REDIS_URL or "
                   "REDIS_URL.", err=True)
        raise typer.Exit(2)
    import redis
    from redis.exceptions import RedisClusterException

    from router.redis_link import check_redis_url

    try:
        check_redis_url(url)
    except ValueError as exc:
        typer.echo(f"error: invalid --redis-url: {exc}", err=True)
        raise typer.Exit(2) from None

    # A cluster client connects while it is built, so building it can fail too.
    errors = (redis.RedisError, RedisClusterException)
    client_class = redis.RedisCluster if cluster else redis.Redis
    try:
        client: Any = client_class.from_url(
            url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=5.0
        )
    except errors as exc:
        raise _failed(url, exc) from None
    try:
        yield client
    except errors as exc:
        raise _failed(url, exc) from None
    finally:
        client.close()


def _failed(url: str, exc: Exception) -> typer.Exit:
    typer.echo(f"error: {redis_failure_message(url, exc)}", err=True)
    return typer.Exit(1)


def redis_failure_message(url: str, exc: Exception) -> str:
    """Return the one-line message for a failed Redis call, without the URL's credentials."""
    # redis-py ends some messages with a period ("... Connection refused."), others not.
    cause = str(exc).strip().rstrip(".")
    return f"Redis at {redact_url(url)} failed: {cause}. Check --redis-url and that Redis is running."


def redact_url(url: str) -> str:
    """Return ``url`` without its user name and password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
