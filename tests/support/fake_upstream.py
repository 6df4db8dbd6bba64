"""A replay upstream whose behaviour each test scripts, request by request.

By default every answer is :data:`~tests.support.recorded.SCRIPTED_ANSWER`, so the fake needs no
public data; pass ``recorded=load_recorded(...)`` to answer with real recorded text instead.

Queue :class:`~tests.support.scenario.Scenario` objects; each chat-completion request takes the
oldest one, and a request that finds the queue empty gets the default scenario (a plain replay
unless :meth:`FakeUpstream.set_default` changed it)::

    with FakeUpstream() as fake:
        fake.enqueue(Scenario.cut(after_events=3), context_length_error("vllm"))
        ...  # first request: stream aborted after 3 events; second: vLLM's HTTP 400
        fake.set_default(Scenario.http_error(503, "overloaded"))  # every later request fails

What a scenario can do (stream positions are explained in :mod:`tests.support.scenario`):

- abort the connection after K events (``Scenario.cut``), or before any byte of a JSON answer;
- accept and never answer (``Scenario.hang``) until the server stops;
- send ``data: {"error": {...}}`` as the first or a later event (``Scenario.stream_error``);
- return HTTP 4xx/5xx with an OpenAI error body (``Scenario.http_error``, ``rate_limited``,
  ``context_length_error(server)`` in the wording of OpenAI, vLLM, llama.cpp or Anthropic);
- pause P seconds in mid-stream (``Scenario.pause``);
- return streamed or JSON tool calls with finish_reason ``tool_calls`` (``Scenario.tools``);
- send ``reasoning_content`` deltas before the answer (``Scenario.with_reasoning``);
- stream given chunks exactly as they are (``Scenario.stream_of``), or answer with a given JSON
  body (``Scenario(body=...)``), for fields such as ``logprobs`` that the replay never sends.

``n: 2`` streams chunks for indexes 0 and 1 in every scenario. The queue is safe to use from the
test thread while the server thread serves requests. Received requests are kept as on
:class:`~tests.support.replay_upstream.ReplayUpstream`.
"""

from __future__ import annotations

import threading
from collections import deque

from tests.support.recorded import RecordedAnswers, scripted_answers
from tests.support.replay_upstream import ReplayOptions, ReplayUpstream
from tests.support.scenario import Scenario

DEFAULT_FAKE_MODEL = "gpt-4-1106-preview"


class FakeUpstream(ReplayUpstream):
    """A :class:`ReplayUpstream` that takes its behaviour from a scenario queue."""

    def __init__(
        self,
        model: str = DEFAULT_FAKE_MODEL,
        *,
        port: int = 0,
        options: ReplayOptions | None = None,
        recorded: RecordedAnswers | None = None,
    ) -> None:
        if recorded is None:
            recorded = scripted_answers(model)
        super().__init__(model, port=port, options=options, recorded=recorded)
        self._scenarios: deque[Scenario] = deque()
        self._default = Scenario.replay()
        self._scenario_lock = threading.Lock()
        self._served: list[Scenario] = []

    def enqueue(self, *scenarios: Scenario) -> None:
        """Append ``scenarios``; each later chat-completion request takes one, oldest first."""
        with self._scenario_lock:
            self._scenarios.extend(scenarios)

    def set_default(self, scenario: Scenario) -> None:
        """Use ``scenario`` for every request that finds the queue empty."""
        with self._scenario_lock:
            self._default = scenario

    def reset(self) -> None:
        """Empty the queue, restore the plain replay default and forget received requests."""
        with self._scenario_lock:
            self._scenarios.clear()
            self._default = Scenario.replay()
            self._served.clear()
        self.clear_requests()

    @property
    def pending(self) -> int:
        """The number of queued scenarios not yet taken by a request."""
        with self._scenario_lock:
            return len(self._scenarios)

    @property
    def served(self) -> list[Scenario]:
        """The scenarios taken so far, in request order."""
        with self._scenario_lock:
            return list(self._served)

    def next_scenario(self) -> Scenario:
        """Take the oldest queued scenario, or the default when the queue is empty."""
        with self._scenario_lock:
            scenario = self._scenarios.popleft() if self._scenarios else self._default
            self._served.append(scenario)
            return scenario
