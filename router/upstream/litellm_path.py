"""The litellm path: every provider that needs request translation.

litellm is imported on first use, because importing it takes about a second and most
deployments of the embedded default go through the direct path.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from router.errors import UnsupportedParameter
from router.policy.schema import Deployment, EmbeddingDeployment
from router.upstream.base import (
    MAX_PARAM_CHARS,
    RATE_LIMIT_PREFIX,
    UpstreamError,
    UpstreamHeaders,
    classify_http_error,
    error_param_of,
    parse_retry_after,
)

# Without this, importing litellm tries to download its model price map from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

log = structlog.get_logger("tierwise.upstream")


def _litellm() -> Any:
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = False
    # The gateway fails over between deployments itself, so each attempt sends one request.
    # litellm 1.110's OpenAI embedding call replaces max_retries=0 with this default
    # (`max_retries or litellm.DEFAULT_MAX_RETRIES`), so the OpenAI SDK retried a timed-out
    # embedding twice, taking three timeouts.
    litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[misc]  # Final in litellm, read at each call
    return litellm


def _load_litellm() -> Any:
    """Import and configure litellm and list its settings, in a worker thread."""
    started = time.monotonic()
    litellm = _litellm()
    litellm_settings()
    log.info("litellm_imported", seconds=round(time.monotonic() - started, 2))
    return litellm


class LitellmTransport:
    """Calls deployments that are not on the direct path through litellm.

    Importing litellm takes seconds of CPU (2.8 to 5.3 s on a 2-core machine) and, done on the
    event loop, would stall every request in flight. ``preload`` imports it in a worker
    thread, and requests wait for that import instead of running their own.
    """

    def __init__(self) -> None:
        self.propagate: Callable[[dict[str, str]], dict[str, str]] | None = None
        """Returns a request's headers with trace context added; set when tracing is on."""
        self._module: Any = None
        self._loading: asyncio.Task[Any] | None = None
        self.import_error: str | None = None
        """The error of the last failed import, until an import succeeds; its deployments
        are unavailable meanwhile."""

    @property
    def loading(self) -> bool:
        """Whether litellm is being imported in a worker thread now."""
        return self._loading is not None and not self._loading.done()

    def preload(self) -> None:
        """Start importing litellm in a worker thread, unless it is imported or importing."""
        if self._module is None and self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(asyncio.to_thread(_load_litellm))
            self._loading.add_done_callback(self._import_done)

    def _import_done(self, loading: asyncio.Task[Any]) -> None:
        """Record and log a failed import when it happens, not when a request awaits it."""
        if loading.cancelled():
            return
        error = loading.exception()
        if error is None:
            self.import_error = None
            return
        self.import_error = f"{type(error).__name__}: {error}"
        if self._loading is loading:
            # The next preload (a policy reload) or request tries the import again.
            self._loading = None
        log.error("litellm_import_failed", error=self.import_error,
                  effect="deployments on the litellm path are unavailable until an import "
                  "succeeds; the import is tried again when the policy is reloaded")

    async def _imported(self) -> Any:
        if self._module is None:
            self.preload()
            assert self._loading is not None
            try:
                self._module = await asyncio.shield(self._loading)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any import failure fails this deployment
                # The request fails over to the next deployment. The next preload (a policy
                # reload) or a request to a litellm deployment tries the import again.
                self._loading = None
                raise UpstreamError(
                    "server", f"litellm failed to import: {type(exc).__name__}: {exc}"
                ) from None
        return self._module

    async def close(self) -> None:
        return None

    @staticmethod
    def _arguments(
        deployment: Deployment | EmbeddingDeployment, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Build litellm's keyword arguments: the body's parameters and the deployment's.

        Raises:
            UnsupportedParameter: the body sets one of litellm's own settings.
        """
        _reject_litellm_settings(body)
        arguments = {key: value for key, value in body.items() if key != "model"}
        arguments["model"] = deployment.model
        arguments["timeout"] = deployment.timeout_s
        arguments["num_retries"] = 0
        if deployment.api_base:
            arguments["api_base"] = deployment.api_base
        key = deployment.api_key()
        if key:
            arguments["api_key"] = key
        elif deployment.api_base:
            # OpenAI-compatible local servers need no key, but the OpenAI SDK insists on one.
            arguments["api_key"] = "unused"
        return arguments

    async def complete(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> dict[str, Any]:
        return await self._call("acompletion", deployment, body, seen)

    async def embed(
        self,
        deployment: EmbeddingDeployment,
        body: dict[str, Any],
        seen: UpstreamHeaders | None = None,
    ) -> dict[str, Any]:
        """Send an embeddings request through ``litellm.aembedding``; return the response as a dict."""
        return await self._call("aembedding", deployment, body, seen)

    async def _call(
        self,
        function: str,
        deployment: Deployment | EmbeddingDeployment,
        body: dict[str, Any],
        seen: UpstreamHeaders | None,
    ) -> dict[str, Any]:
        """Call ``litellm.<function>`` for one non-streaming request; return the response as a dict."""
        litellm = await self._imported()
        arguments = self._arguments(deployment, body)
        if self.propagate is not None:
            arguments["extra_headers"] = self.propagate({})
        try:
            response = await getattr(litellm, function)(**arguments)
        except Exception as exc:  # noqa: BLE001 - litellm raises many provider-specific types
            raise _translate(litellm, exc) from None
        if seen is not None:
            _pass_on(response, seen)
        result: dict[str, Any] = response.model_dump(exclude_none=True)
        _drop_litellm_fields(result, "message")
        if function == "aembedding" and isinstance(result.get("usage"), dict):
            # litellm 1.110 adds completion_tokens: 0, which OpenAI's embeddings usage lacks.
            result["usage"].pop("completion_tokens", None)
        return result

    async def stream(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        litellm = await self._imported()
        arguments = self._arguments(deployment, body)
        if self.propagate is not None:
            arguments["extra_headers"] = self.propagate({})
        try:
            response = await litellm.acompletion(**arguments)
            if seen is not None:
                _pass_on(response, seen)
            # litellm ends a stream that carried no chunk (only [DONE], or a body that is not
            # SSE at all) with a chunk it makes up: finish_reason "stop" and an empty delta.
            # Chunks are held until one has a delta, so such a stream yields nothing and the
            # dispatcher treats it as empty, as on the direct path.
            chunks_before_delta: list[dict[str, Any]] | None = []
            async for chunk in response:
                data = chunk.model_dump(exclude_none=True)
                _drop_litellm_fields(data, "delta")
                if chunks_before_delta is None:
                    yield data
                    continue
                chunks_before_delta.append(data)
                if _has_delta(data):
                    for item in chunks_before_delta:
                        yield item
                    chunks_before_delta = None
        except UpstreamError:
            raise
        except Exception as exc:  # noqa: BLE001 - litellm raises many provider-specific types
            raise _translate(litellm, exc) from None


# Parameters of OpenAI's chat completions and embeddings APIs that litellm also lists among
# its own settings. Clients may set them.
# NOTE: litellm 1.110 keeps "metadata" for its own logging and sends "user" only for models
# in OpenAI's catalog, so neither reaches another OpenAI-compatible server.
_API_PARAMETERS = frozenset(
    {"model", "messages", "input", "dimensions", "encoding_format", "metadata", "user", "stream"}
)

# Names in litellm.OPENAI_CHAT_COMPLETION_PARAMS that configure the OpenAI client, not the
# request, so a client must not set them.
_CLIENT_SETTINGS = frozenset({"timeout", "request_timeout", "default_headers", "deployment_id"})


@functools.cache
def litellm_settings() -> frozenset[str]:
    """Return the body keys that litellm reads as its own settings, not as API parameters.

    litellm takes every keyword argument of ``litellm.completion`` and ``litellm.embedding``
    and every name in ``litellm.types.utils.all_litellm_params`` from the body's fields. Among
    them are ``model_list`` (request another model at another api_base, with the
    deployment's key), callback hosts and credential file paths. The set is read from the
    installed litellm, so names that a new litellm version adds are rejected too.
    """
    litellm = _litellm()
    from litellm.types.utils import all_litellm_params

    names = set(all_litellm_params)
    for function in (litellm.completion, litellm.embedding):
        names.update(
            name
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD
        )
    openai_parameters = set(litellm.OPENAI_CHAT_COMPLETION_PARAMS) - _CLIENT_SETTINGS
    return frozenset(names - openai_parameters - _API_PARAMETERS)


def _reject_litellm_settings(body: dict[str, Any]) -> None:
    settings = litellm_settings().intersection(body)
    if settings:
        name = min(settings)
        raise UnsupportedParameter(
            f"The parameter '{name}' is a setting of the gateway's litellm library, not an "
            "OpenAI API parameter, so clients cannot set it. Remove it from the request.",
            param=name,
        )


def _drop_litellm_fields(response: dict[str, Any], part: str) -> None:
    """Remove the fields litellm adds to each choice's ``part`` (message or delta), in place.

    litellm 1.110 adds ``provider_specific_fields`` (often empty), which OpenAI's API and the
    direct path never return.
    """
    for choice in response.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get(part), dict):
            choice[part].pop("provider_specific_fields", None)
    response.pop("provider_specific_fields", None)


def _has_delta(chunk: dict[str, Any]) -> bool:
    """Tell whether a stream chunk's choices carry a role, text, tool call or other delta."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    return any(isinstance(choice, dict) and choice.get("delta") for choice in choices)


def _pass_on(response: Any, seen: UpstreamHeaders) -> None:
    """Take the headers to pass on from a litellm response or stream.

    litellm keeps the provider's headers in ``_hidden_params["additional_headers"]``: every
    raw header with the prefix ``llm_provider-``, some OpenAI rate-limit headers under their
    own names (litellm 1.8x maps other providers' rate limits to them), and the provider's
    request id as ``request-id``.  The raw headers come first, so a mapped value replaces a
    raw one of the same name.
    """
    hidden = getattr(response, "_hidden_params", None)
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    if not isinstance(headers, dict):
        return
    mapped = []
    for name, value in headers.items():
        if not (isinstance(name, str) and isinstance(value, str)):
            continue
        if name.startswith(_RAW_PREFIX):
            seen.take(*_one_value(name[len(_RAW_PREFIX):].lower(), value))
        else:
            mapped.append(_one_value(name.lower(), value))
    for name, value in mapped:
        seen.take(name, value)


def _one_value(name: str, value: str) -> tuple[str, str]:
    """Split the values of a repeated header that httpx joined with ", ".

    The direct path keeps the last of repeated rate-limit headers and the first request id,
    so this keeps the same ones.  NOTE: a single value that contains a comma itself is cut
    too.  The rate-limit values and request ids in the tests ("9999", "6ms") have none.
    """
    if "," not in value:
        return name, value
    parts = [part.strip() for part in value.split(",")]
    return name, parts[-1] if name.startswith(RATE_LIMIT_PREFIX) else parts[0]


_RAW_PREFIX = "llm_provider-"


# litellm puts its exception names before the provider's text, for example
# "litellm.BadRequestError: OpenAIException - Invalid 'seed'" (litellm 1.110).
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: |\w+Error: |\w+Exception - )+")


def _translate(litellm: Any, exc: Exception) -> UpstreamError:
    raw_message = str(getattr(exc, "message", "") or "")
    message = _LITELLM_PREFIX.sub("", raw_message) or raw_message or type(exc).__name__
    if isinstance(exc, litellm.ContextWindowExceededError):
        return UpstreamError("context", message, 400)
    if isinstance(exc, litellm.Timeout):
        return UpstreamError("timeout", message, 504)
    if isinstance(exc, litellm.APIConnectionError):
        return UpstreamError("connection", message)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return classify_http_error(status, message, _retry_after(exc), _param(exc))
    return UpstreamError("server", message)


def _param(exc: Exception) -> str | None:
    """Return the request parameter that the provider's error body names, when litellm kept it.

    litellm's errors derive from the openai SDK's ``APIError``, which has the error object's
    ``param`` as ``param`` and the error object itself as ``body``.
    """
    param = getattr(exc, "param", None)
    if isinstance(param, str) and 0 < len(param) <= MAX_PARAM_CHARS:
        return param
    return error_param_of(getattr(exc, "body", None))


def _retry_after(exc: Exception) -> float | None:
    """Return the wait that the provider's error response requested, when litellm kept it.

    litellm's HTTP errors carry the provider's ``httpx.Response`` as ``response``.
    """
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    return parse_retry_after(headers.get("retry-after-ms"), headers.get("retry-after"))
