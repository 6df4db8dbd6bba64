"""The direct path: OpenAI-compatible upstreams over one pooled aiohttp session.

It skips litellm's request translation. Measured with ``python -m bench.transports``
(litellm 1.110.2, 2-core AMD EPYC VM), a call through litellm costs about 4.6 ms of CPU
(17.8 ms for a 20-chunk stream), against 0.16 ms (0.25 ms) on this path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from router.policy.schema import Deployment
from router.upstream.base import UpstreamError, classify_http_error, error_message_of

# Longest SSE line (one event's JSON) accepted from an upstream. A longer line ends the
# stream as a failure, so the buffer cannot grow without bound.
MAX_SSE_LINE_BYTES = 16 * 1024 * 1024
_DONE = object()


class DirectTransport:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _headers(deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = deployment.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @staticmethod
    def _url(deployment: Deployment) -> str:
        return f"{(deployment.api_base or '').rstrip('/')}/chat/completions"

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(
            total=deployment.timeout_s, sock_connect=deployment.connect_timeout_s
        )
        try:
            async with self._client().post(
                self._url(deployment),
                data=orjson.dumps(body),
                headers=self._headers(deployment),
                timeout=timeout,
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise classify_http_error(response.status, _message(payload))
                return orjson.loads(payload)  # type: ignore[no-any-return]
        except TimeoutError:
            raise UpstreamError("timeout", f"no response within {deployment.timeout_s} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", _describe(exc)) from None
        except orjson.JSONDecodeError:
            raise UpstreamError("server", "the upstream responded with invalid JSON") from None

    async def stream(
        self, deployment: Deployment, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        # sock_read bounds the silence between two reads, so a stream that stalls is cut
        # after timeout_s without limiting how long a healthy stream may run.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=deployment.connect_timeout_s, sock_read=deployment.timeout_s
        )
        try:
            async with self._client().post(
                self._url(deployment),
                data=orjson.dumps(body),
                headers=self._headers(deployment),
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    raise classify_http_error(response.status, _message(await response.read()))
                async for chunk in _parse_events(response.content):
                    yield chunk
        except TimeoutError:
            raise UpstreamError("timeout", f"silent for {deployment.timeout_s} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", _describe(exc)) from None


async def _parse_events(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Yield the JSON payload of each SSE ``data:`` line until ``[DONE]``.

    Raises UpstreamError for an invalid event, an error event, a line longer than
    MAX_SSE_LINE_BYTES, or a stream that ends before ``[DONE]``.
    """
    # Lines are split here because StreamReader.readline raises LineTooLong, which is not
    # a ClientError, for lines past twice its 256 KiB buffer (aiohttp 3.14).
    partial: list[bytes] = []
    partial_size = 0
    async for data in content.iter_any():
        if b"\n" not in data:
            partial.append(data)
            partial_size += len(data)
            if partial_size > MAX_SSE_LINE_BYTES:
                raise UpstreamError("stream", f"an SSE line exceeds {MAX_SSE_LINE_BYTES} bytes")
            continue
        if partial:
            data = b"".join(partial) + data
        lines = data.split(b"\n")
        last = lines.pop()
        partial, partial_size = ([last], len(last)) if last else ([], 0)
        for line in lines:
            event = _decode_line(line)
            if event is _DONE:
                return
            if event is not None:
                yield event
    # Like readline, a last line without a newline still counts.
    event = _decode_line(b"".join(partial)) if partial else None
    if event is _DONE:
        return
    if event is not None:
        yield event
    raise UpstreamError("connection", "the upstream closed the stream before [DONE]")


def _decode_line(raw_line: bytes) -> Any:
    """Return the event of one SSE line, _DONE, or None for lines that carry no data."""
    line = raw_line.strip()
    if not line.startswith(b"data:"):
        return None  # comments (keep-alives), event names, blank separators
    data = line[5:].strip()
    if data == b"[DONE]":
        return _DONE
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("stream", "the upstream sent an invalid SSE event") from None
    if isinstance(event, dict) and "error" in event:
        raise classify_http_error(500, error_message_of(event))
    return event


def _message(payload: bytes) -> str:
    try:
        return error_message_of(orjson.loads(payload))
    except orjson.JSONDecodeError:
        return payload[:200].decode(errors="replace")


def _describe(exc: aiohttp.ClientError) -> str:
    """Name a client error, with the host and port for a failed connection.

    Only a connection error's text is kept: it names host and port, while the text of other
    errors, such as InvalidURL, may contain the whole URL with credentials in it.
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
