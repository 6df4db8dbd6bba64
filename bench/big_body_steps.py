"""Time each step of the gateway's request path in process for maximum-size bodies.

The steps are the functions that ``router.api.chat.serve_chat`` and
``router.api.embeddings.create_embeddings`` call between reading the body and calling the
upstream, plus the outcome record written after the response. Each is timed with
``time.perf_counter``, and the median of ``--repeat`` runs is printed in milliseconds.

Run from the repository root:

    python -m bench.big_body_steps                 # every shape, 4 MiB bodies
    python -m bench.big_body_steps --shapes tiny_messages,many_tools --limit 1048576
    python -m bench.big_body_steps --no-gc      # as in the gateway's parsing thread
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.big_body_shapes import DEFAULT_LIMIT, SHAPES
from classifiers.artifact import load_default
from router.api import anthropic_format, responses_format
from router.api.admission import MAX_JSON_DEPTH, json_depth
from router.api.chat import parse_chat_request
from router.api.embeddings import parse_embedding_request
from router.cache.keys import cache_key
from router.errors import GatewayError
from router.ratelimits import estimate_prompt_tokens
from router.routing.category import prompt_category
from router.routing.tokens import count_prompt_tokens, message_texts

TRANSLATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "/v1/messages": anthropic_format.to_chat_body,
    "/v1/responses": responses_format.to_chat_body,
}


def time_steps(path: str, raw: bytes) -> dict[str, float]:
    """Run the request path's steps on ``raw`` once; return each step's time in ms."""
    times: dict[str, float] = {}
    scorer = load_default()

    def step(name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return work()
        finally:
            times[name] = (time.perf_counter() - start) * 1000

    body = step("orjson.loads", lambda: orjson.loads(raw))
    step("count brackets", lambda: raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH)
    step("json_depth", lambda: json_depth(body))
    if path == "/v1/embeddings":
        parsed = step("parse_embedding_request", lambda: parse_embedding_request(body))
        step("estimate_prompt_tokens", lambda: estimate_prompt_tokens(parsed.texts, 0))
        step("cache_key", lambda: cache_key("t", "scope", body))
        step("orjson.dumps (upstream)", lambda: orjson.dumps(body))
        return times
    translate = TRANSLATIONS.get(path)
    if translate is not None:
        body = step("translate", lambda: translate(body).body)
    try:
        chat = step("parse_chat_request", lambda: parse_chat_request(body))
    except GatewayError as exc:
        times["error"] = 0.0
        print(f"    rejected: {exc.message[:100]}")
        return times
    messages = body["messages"]
    step("estimate_prompt_tokens",
         lambda: estimate_prompt_tokens(message_texts(messages), len(messages)))
    step("cache_key", lambda: cache_key("t", "scope", body))
    step("scorer.score", lambda: scorer.score(messages))
    step("prompt_category", lambda: prompt_category(messages))
    step("content_part_types", lambda: chat.content_part_types)
    step("has_tool_messages", lambda: chat.has_tool_messages)
    step("count_prompt_tokens", lambda: count_prompt_tokens(messages, fits_below=128000))
    step("orjson.dumps (upstream)", lambda: orjson.dumps(body))
    step("orjson.dumps (record)", lambda: orjson.dumps({"messages": messages}))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="body size in bytes")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names")
    parser.add_argument("--repeat", type=int, default=3, help="runs per shape (median printed)")
    parser.add_argument("--no-gc", action="store_true",
                        help="turn the cyclic garbage collector off, as the gateway's parsing "
                             "thread does")
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    for name in args.shapes.split(","):
        path, build = SHAPES[name]
        raw = build(args.limit)
        runs = [time_steps(path, raw) for _ in range(args.repeat)]
        medians = {step: statistics.median(run[step] for run in runs) for step in runs[0]}
        total = sum(medians.values())
        print(f"{name} ({path}, {len(raw):,} bytes): {total:.0f} ms in all")
        for step, value in medians.items():
            if value >= 1.0:
                print(f"    {step:<26} {value:8.1f} ms")


if __name__ == "__main__":
    main()
