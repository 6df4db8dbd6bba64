"""Replay real prompts through a running Tierwise gateway and report routing, cost and quality.

Prompts come from the public traffic mix (``traffic-mix/tidy/traffic-*.jsonl``), shuffled with a
fixed seed. Records whose license names CC BY-NC are skipped (the WizardLM test set, and the
AlpacaEval instructions whose dataset card is CC BY-NC 4.0), and so are RouterBench prompts of
RouterDC's train split, which classifiers may have been trained on; RouterBench prompts
therefore come from its test split only. Requests go through the official ``openai`` client.

The report gives requests per tier, the gateway's cost (``x-tierwise-cost-usd``) against an
all-frontier baseline (the policy's frontier price applied to the same prompt and completion
tokens), cache hits, latency, and, for prompts with recorded correctness (RouterBench 0/1
scores per model, RouteLLM GSM8K and MMLU), the accuracy of the model the gateway used against
always using the frontier model on the same prompts.

Examples (from the repository root):

    python bench/replay.py --start-stack      # replay upstreams and a gateway, 500 prompts
    python bench/replay.py --base-url http://127.0.0.1:8080/v1 --policy policies/replay.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

    from tests.support.correctness import Correctness

REPO_ROOT = Path(__file__).resolve().parents[1]
NON_COMMERCIAL_MARK = "CC-BY-NC"
# The API key of requests and feedback posts. A policy with tenants.require_key must list it,
# and other policies treat an unlisted key as a tenant of its own.
DEFAULT_API_KEY = "replay-bench"


@dataclass(frozen=True, slots=True)
class Prompt:
    """One traffic-mix prompt: its record id, source name and text."""

    id: str
    source: str
    text: str


@dataclass(slots=True)
class Result:
    """The gateway's response to one prompt, from its headers and usage (USD, seconds)."""

    id: str
    source: str
    tier: str = ""
    deployment: str = ""
    score: float | None = None
    cost_usd: float | None = None
    cache: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """The parts of a policy deployment the report needs (prices in USD per million tokens)."""

    name: str
    tier: str
    model: str
    input_per_million: float
    output_per_million: float

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Return the price of ``prompt_tokens`` in and ``completion_tokens`` out, in USD."""
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1e6


# Prompt selection ----------------------------------------------------------------------------


def _traffic_records(data_dir: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted((data_dir / "traffic-mix" / "tidy").glob("traffic-*.jsonl")):
        # Not splitlines(): prompts contain U+2028, which it treats as a line break.
        records.extend(
            json.loads(line)
            for line in path.read_text(encoding="utf-8").split("\n")
            if line.strip()
        )
    if not records:
        raise FileNotFoundError(f"no traffic-mix records under {data_dir / 'traffic-mix' / 'tidy'}")
    return records


def _eligible(record: dict[str, Any], correctness: Correctness, sources: set[str] | None) -> bool:
    if NON_COMMERCIAL_MARK in str(record.get("license", "")):
        return False
    if sources is not None and record["source"] not in sources:
        return False
    return record["source"] != "routerbench" or record["id"] in correctness.routerbench_test_ids


def load_prompts(
    data_dir: Path,
    correctness: Correctness,
    *,
    count: int,
    seed: int,
    sources: set[str] | None = None,
    max_chars: int | None = None,
) -> list[Prompt]:
    """Return ``count`` eligible traffic-mix prompts in a shuffled order fixed by ``seed``."""
    pool = [
        Prompt(record["id"], record["source"], record["prompt"])
        for record in _traffic_records(data_dir)
        if _eligible(record, correctness, sources)
        and (max_chars is None or len(record["prompt"]) <= max_chars)
    ]
    random.Random(seed).shuffle(pool)
    return pool[:count]


# Policy --------------------------------------------------------------------------------------


def load_deployments(policy_path: Path) -> dict[str, DeploymentView]:
    """Return the deployments of a policy YAML keyed by their public name.

    Raises:
        ValueError: the policy has no frontier tier, which the baseline needs.
    """
    import yaml

    policy = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    views: dict[str, DeploymentView] = {}
    for tier, body in (policy.get("tiers") or {}).items():
        for entry in body.get("deployments") or []:
            price = entry["price"]
            views[entry["name"]] = DeploymentView(
                entry["name"],
                tier,
                entry["model"],
                float(price["input_per_million"]),
                float(price["output_per_million"]),
            )
    if not any(view.tier == "frontier" for view in views.values()):
        raise ValueError(
            f"policy {policy_path} has no frontier tier; the all-frontier baseline needs one"
        )
    return views


def frontier_deployment(deployments: dict[str, DeploymentView]) -> DeploymentView:
    """Return the first frontier deployment (the one an all-frontier setup would use)."""
    return next(view for view in deployments.values() if view.tier == "frontier")


# Sending -------------------------------------------------------------------------------------


def _header_float(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _fill_from_headers(result: Result, headers: Any) -> None:
    result.tier = headers.get("x-tierwise-tier", "")
    result.deployment = headers.get("x-tierwise-model", "")
    result.cache = headers.get("x-tierwise-cache", "")
    result.score = _header_float(headers, "x-tierwise-score")
    result.cost_usd = _header_float(headers, "x-tierwise-cost-usd")
    result.request_id = headers.get("x-request-id", "")


async def _send_json(client: openai.AsyncOpenAI, request: dict[str, Any], result: Result) -> None:
    raw = await client.chat.completions.with_raw_response.create(**request)
    _fill_from_headers(result, raw.headers)
    completion = raw.parse()
    if completion.usage is not None:
        result.prompt_tokens = completion.usage.prompt_tokens
        result.completion_tokens = completion.usage.completion_tokens


async def _send_stream(client: openai.AsyncOpenAI, request: dict[str, Any], result: Result) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    _fill_from_headers(result, raw.headers)
    async for chunk in raw.parse():
        if chunk.usage is not None:
            result.prompt_tokens = chunk.usage.prompt_tokens
            result.completion_tokens = chunk.usage.completion_tokens


async def send_one(
    client: openai.AsyncOpenAI, prompt: Prompt, model: str, stream: bool, limit: asyncio.Semaphore
) -> Result:
    """Send ``prompt`` once and return what came back; an API error is kept in ``error``."""
    import openai

    result = Result(prompt.id, prompt.source)
    request = {
        "model": model,
        "messages": [{"role": "user", "content": prompt.text}],
        "temperature": 0,
    }
    async with limit:
        started = time.perf_counter()
        try:
            await (_send_stream if stream else _send_json)(client, request, result)
        except openai.APIStatusError as error:
            result.error = f"HTTP {error.status_code}"
        except openai.APIError as error:
            result.error = type(error).__name__
        result.latency_s = time.perf_counter() - started
    return result


async def send_all(
    base_url: str,
    prompts: Sequence[Prompt],
    *,
    model: str,
    concurrency: int,
    stream: bool,
    timeout_s: float,
    api_key: str = DEFAULT_API_KEY,
) -> list[Result]:
    """Send every prompt with at most ``concurrency`` requests in flight; keep the prompt order."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s
    )
    limit = asyncio.Semaphore(concurrency)
    try:
        return list(
            await asyncio.gather(*(send_one(client, p, model, stream, limit) for p in prompts))
        )
    finally:
        await client.close()


async def send_feedback(
    base_url: str,
    results: Sequence[Result],
    deployments: dict[str, DeploymentView],
    correctness: Correctness,
    api_key: str = DEFAULT_API_KEY,
) -> int:
    """Rate each successful, uncached request with its model's recorded correctness.

    This is the feedback a team would post after grading answers, so that
    ``tierwise policy simulate`` can report quality.  Returns how many were accepted.
    """
    import httpx

    from tests.support.recorded import resolve_model_name

    known = correctness.models()
    ratings = []
    for result in results:
        view = deployments.get(result.deployment)
        if result.error or result.cache == "hit" or not result.request_id or view is None:
            continue
        model = resolve_model_name(view.model, known)
        score = correctness.score(result.id, model) if model else None
        if score is not None:
            ratings.append({"request_id": result.request_id, "score": float(score)})
    headers = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0) as client:
        replies = [await client.post("/feedback", json=rating) for rating in ratings]
    return sum(reply.status_code == 200 for reply in replies)


# Report --------------------------------------------------------------------------------------


def _cost(result: Result, deployments: dict[str, DeploymentView]) -> float:
    """Return the gateway's cost header, else the policy price of the response's usage."""
    if result.cost_usd is not None:
        return result.cost_usd
    view = deployments.get(result.deployment)
    return view.cost_usd(result.prompt_tokens, result.completion_tokens) if view else 0.0


def quality_summary(
    results: Sequence[Result], deployments: dict[str, DeploymentView], correctness: Correctness
) -> dict[str, Any]:
    """Compare recorded correctness of the models used against the frontier model, prompt by prompt.

    Only prompts where both the used model and the frontier model have a recorded score count.
    """
    from tests.support.recorded import resolve_model_name

    known = correctness.models()
    frontier = resolve_model_name(frontier_deployment(deployments).model, known)
    delivered: list[float] = []
    always_frontier: list[float] = []
    unscored = 0
    for result in results:
        if result.error is not None or result.id not in correctness.scores:
            continue
        view = deployments.get(result.deployment)
        model = resolve_model_name(view.model, known) if view else None
        used = correctness.score(result.id, model) if model else None
        best = correctness.score(result.id, frontier) if frontier else None
        if used is None or best is None:
            unscored += 1
            continue
        delivered.append(used)
        always_frontier.append(best)
    return {
        "prompts_with_recorded_correctness": len(delivered) + unscored,
        "prompts_compared": len(delivered),
        "prompts_used_model_unscored": unscored,
        "delivered_accuracy": statistics.fmean(delivered) if delivered else None,
        "always_frontier_accuracy": statistics.fmean(always_frontier) if always_frontier else None,
    }


def summarize(
    results: Sequence[Result], deployments: dict[str, DeploymentView], correctness: Correctness
) -> dict[str, Any]:
    """Return the report's figures (counts, USD costs, latencies in seconds, accuracies)."""
    ok = [r for r in results if r.error is None]
    frontier = frontier_deployment(deployments)
    cost = sum(_cost(r, deployments) for r in ok)
    baseline = sum(frontier.cost_usd(r.prompt_tokens, r.completion_tokens) for r in ok)
    latencies = sorted(r.latency_s for r in ok)
    return {
        "requests": len(results),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "tiers": dict(Counter(r.tier for r in ok)),
        "tiers_by_source": {
            source: dict(Counter(r.tier for r in ok if r.source == source))
            for source in sorted({r.source for r in ok})
        },
        "cache_hits": sum(1 for r in ok if r.cache == "hit"),
        "cost_usd": cost,
        "all_frontier_cost_usd": baseline,
        "saving_fraction": 1 - cost / baseline if baseline else None,
        "frontier_price_per_million": [frontier.input_per_million, frontier.output_per_million],
        "latency_p50_s": latencies[len(latencies) // 2] if latencies else None,
        "latency_p95_s": latencies[int(len(latencies) * 0.95)] if latencies else None,
        "quality": quality_summary(results, deployments, correctness),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_report(summary: dict[str, Any]) -> None:
    """Print ``summary`` as a short plain-text report."""
    quality = summary["quality"]
    input_price, output_price = summary["frontier_price_per_million"]
    print(f"requests: {summary['requests']}  errors: {summary['errors'] or 'none'}")
    print(
        "per tier: "
        + ", ".join(f"{tier or '?'} {n}" for tier, n in sorted(summary["tiers"].items()))
    )
    for source, tiers in summary["tiers_by_source"].items():
        print(
            f"  {source:20s} "
            + ", ".join(f"{tier or '?'} {n}" for tier, n in sorted(tiers.items()))
        )
    print(f"cache hits: {summary['cache_hits']}")
    print(
        f"cost: ${summary['cost_usd']:.4f} vs all-frontier ${summary['all_frontier_cost_usd']:.4f}"
        f" (saving {_percent(summary['saving_fraction'])}; frontier price in/out per 1M tokens:"
        f" ${input_price} / ${output_price})"
    )
    if summary["latency_p50_s"] is not None:
        print(
            f"latency: p50 {summary['latency_p50_s'] * 1000:.0f} ms,"
            f" p95 {summary['latency_p95_s'] * 1000:.0f} ms"
        )
    print(
        f"quality on {quality['prompts_compared']} prompts with recorded correctness of both the"
        f" used and the frontier model: delivered {_percent(quality['delivered_accuracy'])}"
        " vs always-frontier"
        f" {_percent(quality['always_frontier_accuracy'])}"
        f" ({quality['prompts_used_model_unscored']} more had no score for the model used)"
    )


# Command line --------------------------------------------------------------------------------


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--base-url", help="OpenAI base URL of a running gateway, e.g. http://127.0.0.1:8080/v1"
    )
    target.add_argument(
        "--start-stack",
        action="store_true",
        help="start 3 replay upstreams and a gateway, then stop them",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        help="policy YAML the running gateway serves (needed with --base-url)",
    )
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help="API key sent to the gateway, for a policy with tenants.require_key"
        f" (default: {DEFAULT_API_KEY!r}, which such a policy must list)",
    )
    parser.add_argument(
        "--thresholds", help="with --start-stack: routing thresholds, e.g. edge=0.7,mid=0.6"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="with --start-stack: folder for the policy, logs and outcome records"
        " (default: a new temporary folder, kept after the run)",
    )


def _add_traffic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=500, help="prompts to send (default 500)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight at once (default 8)"
    )
    parser.add_argument("--seed", type=int, default=7, help="shuffle seed (default 7)")
    parser.add_argument(
        "--model", default="auto", help="model field of each request (default: the auto alias)"
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream responses; their cost is then usage times the policy price",
    )
    parser.add_argument(
        "--sources", help="comma-separated traffic-mix sources to draw from (default: all eligible)"
    )
    parser.add_argument(
        "--max-prompt-chars", type=int, help="skip prompts longer than this many characters"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per-request timeout in seconds (default 120)"
    )
    parser.add_argument(
        "--feedback",
        action="store_true",
        help="afterwards, post the recorded correctness of each successful, uncached request "
        "to /v1/feedback",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; exit with status 2 on invalid options, as argparse does."""
    parser = argparse.ArgumentParser(
        prog="python bench/replay.py",
        description="Replay public traffic-mix prompts through a Tierwise gateway and report"
        " routing, cost and quality.",
        epilog="Example: python bench/replay.py --start-stack --count 500 --concurrency 16",
    )
    _add_target_options(parser)
    _add_traffic_options(parser)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="public data folder (default: $TIERWISE_SHARED_DATA or ../shared/data)",
    )
    parser.add_argument(
        "--json-out",
        type=Path,
        help="also write the summary and per-request rows (no prompt text) as JSON",
    )

    args = parser.parse_args(argv)
    if args.base_url and args.policy is None:
        parser.error(
            "--policy is required with --base-url (for model names and the frontier price)"
        )
    return args


def _parse_thresholds(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {tier.strip(): float(value) for tier, value in pairs}


def run(
    args: argparse.Namespace, base_url: str, policy_path: Path, data_dir: Path
) -> dict[str, Any]:
    """Send the prompts, print the report and return the summary."""
    from tests.support.correctness import load_correctness

    correctness = load_correctness(data_dir)
    sources = {s.strip() for s in args.sources.split(",")} if args.sources else None
    prompts = load_prompts(
        data_dir,
        correctness,
        count=args.count,
        seed=args.seed,
        sources=sources,
        max_chars=args.max_prompt_chars,
    )
    deployments = load_deployments(policy_path)
    print(
        f"sending {len(prompts)} prompts to {base_url} with concurrency {args.concurrency}",
        flush=True,
    )
    started = time.perf_counter()
    results = asyncio.run(
        send_all(
            base_url,
            prompts,
            model=args.model,
            concurrency=args.concurrency,
            stream=args.stream,
            timeout_s=args.timeout,
            api_key=args.api_key,
        )
    )
    summary = summarize(results, deployments, correctness)
    summary["wall_time_s"] = time.perf_counter() - started
    if args.feedback:
        summary["feedback_accepted"] = asyncio.run(
            send_feedback(base_url, results, deployments, correctness, args.api_key)
        )
        print(f"feedback: {summary['feedback_accepted']} ratings accepted", flush=True)
    print_report(summary)
    if args.json_out:
        rows = [asdict(result) for result in results]
        args.json_out.write_text(
            json.dumps({"summary": summary, "requests": rows}, indent=1), encoding="utf-8"
        )
    return summary


def run_with_stack(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Fit RouterBench prices, start the replay stack and the gateway, run, and stop everything."""
    from tests.support.fixtures import REPLAY_STACK, TierModel
    from tests.support.prices import fit_routerbench_prices
    from tests.support.stack import run_replay_stack

    fitted = fit_routerbench_prices(data_dir, [spec.model for spec in REPLAY_STACK])
    stack: list[TierModel] = []
    for spec in REPLAY_STACK:
        price = fitted[spec.model]
        print(
            f"{spec.tier:8s} {spec.model}: ${price.input_per_million} in"
            f" / ${price.output_per_million} out per 1M tokens (least-squares fit to"
            f" {price.rows} RouterBench call costs, R^2 {price.r_squared:.4f})"
        )
        stack.append(
            TierModel(
                spec.tier,
                spec.deployment,
                spec.model,
                price.input_per_million,
                price.output_per_million,
                spec.context_window,
            )
        )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tierwise-replay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"policy, outcome records and process logs go to {workdir}")
    with run_replay_stack(stack, workdir, thresholds=_parse_thresholds(args.thresholds)) as running:
        return run(args, running.gateway_url, running.policy_path, data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replay benchmark; return 0, or 2 on a usage or setup error."""
    args = parse_args(argv)
    # The helpers live in tests/support; a script run puts only bench/ on sys.path.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.recorded import shared_data_dir
    from tests.support.stack import StackStartError

    data_dir = (args.data_dir or shared_data_dir()).resolve()
    if not data_dir.is_dir():
        print(
            f"error: public data folder not found at {data_dir};"
            " pass --data-dir or set TIERWISE_SHARED_DATA",
            file=sys.stderr,
        )
        return 2
    try:
        if args.start_stack:
            run_with_stack(args, data_dir)
        else:
            run(args, args.base_url, args.policy, data_dir)
    except (StackStartError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
