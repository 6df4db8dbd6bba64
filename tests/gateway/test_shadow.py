"""Shadow evaluation through the real gateway app, fake upstreams on 127.0.0.1 and Redis db 12.

Each test routes ``auto`` to the edge tier (the stub scorer's default), so an eligible request
is answered by the edge fake; a shadow job then asks the frontier fake and the judge fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from structlog.testing import capture_logs

from classifiers.outcomes import read_gateway_log
from router.policy.loader import PolicyError, parse_policy
from router.redis_link import RedisLink
from router.shadow.budget import ShadowBudget, day_key
from router.shadow.judge import parse_verdict
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    chat_body,
    open_redis_client,
    policy_document,
    read_file_records,
    write_yaml,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.recorded import scripted_answers
from tests.support.redis_check import require_redis
from tests.support.scenario import Scenario

SHADOW_REDIS_DB = 12
JUDGE_NAME = "judge-model"


# Fixtures and helpers -------------------------------------------------------------------------


@contextmanager
def running_judge(verdict: str) -> Iterator[FakeUpstream]:
    """A fake judge on 127.0.0.1 whose every answer is ``verdict``."""
    upstream = FakeUpstream("fake-judge", recorded=scripted_answers("fake-judge", verdict))
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    """A fake judge whose every answer is "8", a score of 0.8."""
    with running_judge("8") as upstream:
        yield upstream


@pytest.fixture
def shadow_redis_url(redis_url: str) -> Iterator[str]:
    """The test Redis with database 12, whose shadow spend key is removed before and after."""
    parts = urlsplit(redis_url)
    url = require_redis(
        urlunsplit(parts._replace(path=f"/{SHADOW_REDIS_DB}")), "start redis-server"
    )
    client = open_redis_client(url)
    client.delete(day_key())
    try:
        yield url
    finally:
        client.delete(day_key())
        client.close()


def judge_deployment(judge: FakeUpstream) -> dict[str, Any]:
    return {
        "name": JUDGE_NAME,
        "model": "openai/fake-judge",
        "api_base": judge.base_url,
        "transport": "direct",
        "price": {"input_per_million": 1.0, "output_per_million": 2.0},
        "context_window": 32768,
    }


def write_shadow_policy(
    kit: GatewayKit, judge: FakeUpstream, shadow: dict[str, Any] | None, **options: Any
) -> Path:
    """Write the test policy with the judge as a second mid deployment and ``shadow`` set."""
    document = policy_document(kit.base_urls, cache_enabled=False, **options)
    document["tiers"]["mid"]["deployments"].append(judge_deployment(judge))
    if shadow is not None:
        document["shadow"] = {"judge": {"deployment": JUDGE_NAME}, **shadow}
    return write_yaml(kit.policy_path, document)


def shadow_on(**overrides: Any) -> dict[str, Any]:
    return {"enabled": True, "sample_rate": 1.0, **overrides}


def metric(gateway: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def send_and_settle(gateway: Gateway, count: int = 1, **body: Any) -> list[Any]:
    """Send ``count`` chat requests, wait for their shadow jobs, and return the responses."""
    responses = [await gateway.chat(chat_body(f"Question {i}?", **body)) for i in range(count)]
    await gateway.runtime.shadow.wait_idle()
    return responses


def shadow_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("source") == "shadow"]


# Tests ----------------------------------------------------------------------------------------


async def test_shadow_off_by_default(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, None)
    async with kit.running(settings=kit.settings()) as gateway:
        responses = await send_and_settle(gateway, count=3)
        records = await gateway.records()

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len(kit.fakes["edge"].requests) == 3
    assert kit.fakes["frontier"].requests == []
    assert judge.requests == []
    assert shadow_records(records) == []
    assert metric(gateway, "tierwise_shadow_sampled_total") == 0


async def test_shadow_labels_each_request_with_redis(
    kit: GatewayKit, judge: FakeUpstream, shadow_redis_url: str
) -> None:
    redis_kit = GatewayKit(kit.tmp_path, kit.fakes, shadow_redis_url)
    write_shadow_policy(redis_kit, judge, shadow_on())
    async with redis_kit.running(settings=redis_kit.settings(use_redis=True)) as gateway:
        responses = await send_and_settle(gateway, count=2)
        records = await gateway.records()
        spent = await gateway.runtime.shadow.budget.spent()

    assert [r.status_code for r in responses] == [200, 200]
    assert len(kit.fakes["frontier"].requests) == 2
    assert len(judge.requests) == 2
    labels = shadow_records(records)
    request_ids = {r["request_id"] for r in records if r["type"] == "request"}
    assert {label["request_id"] for label in labels} == request_ids
    for label in labels:
        assert label["type"] == "feedback"
        assert label["score"] == pytest.approx(0.8)
        assert label["verdict"] == "parsed"
        assert label["tier"] == "edge"
        assert label["reference_tier"] == "frontier"
        assert label["reference_model"] == "frontier-large"
        assert label["judge"] == JUDGE_NAME
        assert label["cost_usd"] > 0
        assert "judge_messages" not in label
    assert spent == pytest.approx(sum(label["cost_usd"] for label in labels), rel=1e-6)
    assert metric(gateway, "tierwise_shadow_sampled_total") == 2
    assert metric(gateway, "tierwise_shadow_done_total", {"verdict": "parsed"}) == 2


async def test_shadow_reference_and_judge_bodies(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, shadow_on())
    async with kit.running(settings=kit.settings()) as gateway:
        await send_and_settle(gateway, max_tokens=50)

    reference = kit.fakes["frontier"].requests[0].body
    assert reference["messages"] == chat_body("Question 0?")["messages"]
    assert reference["max_tokens"] == 50
    assert "stream" not in reference
    verdict_request = judge.requests[0].body
    assert verdict_request["max_tokens"] == 16
    assert verdict_request["temperature"] == 0
    judge_prompt = verdict_request["messages"][-1]["content"]
    assert "Question 0?" in judge_prompt
    assert "[Reference answer]" in judge_prompt


async def test_shadow_budget_exhausted_skips(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, shadow_on(budget_usd_per_day=0.0))
    async with kit.running(settings=kit.settings()) as gateway:
        responses = await send_and_settle(gateway, count=3)
        records = await gateway.records()

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert kit.fakes["frontier"].requests == []
    assert judge.requests == []
    assert shadow_records(records) == []
    assert metric(gateway, "tierwise_shadow_sampled_total") == 3
    assert metric(gateway, "tierwise_shadow_skipped_budget_total") == 3


async def test_shadow_budget_skips_logged_once(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, shadow_on(budget_usd_per_day=0.0))
    async with kit.running(settings=kit.settings()) as gateway:
        with capture_logs() as skipped_logs:
            await send_and_settle(gateway, count=3)
        write_shadow_policy(kit, judge, shadow_on(budget_usd_per_day=5.0))
        assert gateway.runtime.policies.reload()
        with capture_logs() as resumed_logs:
            await send_and_settle(gateway, count=2)

    skip_lines = [e for e in skipped_logs if e["event"] == "shadow_skipped_budget"]
    assert len(skip_lines) == 1
    assert skip_lines[0]["budget_usd_per_day"] == 0.0
    assert metric(gateway, "tierwise_shadow_skipped_budget_total") == 3
    available_lines = [e for e in resumed_logs if e["event"] == "shadow_budget_available"]
    assert len(available_lines) == 1
    assert available_lines[0]["skipped_since_logged"] == 2
    assert len(judge.requests) == 2


async def test_shadow_budget_shared_in_redis(
    kit: GatewayKit, judge: FakeUpstream, shadow_redis_url: str
) -> None:
    # Another replica has spent the whole day's budget: this gateway must not add to it.
    client = redis.Redis.from_url(shadow_redis_url)
    client.set(day_key(), "5.0")
    client.close()
    redis_kit = GatewayKit(kit.tmp_path, kit.fakes, shadow_redis_url)
    write_shadow_policy(redis_kit, judge, shadow_on(budget_usd_per_day=5.0))
    async with redis_kit.running(settings=redis_kit.settings(use_redis=True)) as gateway:
        await send_and_settle(gateway, count=2)
        spent = await gateway.runtime.shadow.budget.spent()

    assert kit.fakes["frontier"].requests == []
    assert metric(gateway, "tierwise_shadow_skipped_budget_total") == 2
    assert spent == pytest.approx(5.0)


async def test_shadow_judge_garbage_unparsable(kit: GatewayKit) -> None:
    with running_judge("The first answer is better, I think.") as judge:
        write_shadow_policy(kit, judge, shadow_on())
        async with kit.running(settings=kit.settings()) as gateway:
            await send_and_settle(gateway)
            records = await gateway.records()

    labels = shadow_records(records)
    assert len(labels) == 1
    assert labels[0]["type"] == "shadow"
    assert labels[0]["verdict"] == "unparsable"
    assert labels[0]["score"] is None
    assert metric(gateway, "tierwise_shadow_done_total", {"verdict": "unparsable"}) == 1
    assert metric(gateway, "tierwise_shadow_done_total", {"verdict": "parsed"}) == 0


async def test_shadow_failure_keeps_client_response(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, None)
    async with kit.running(settings=kit.settings()) as gateway:
        (plain,) = await send_and_settle(gateway)

    kit.fakes["frontier"].set_default(Scenario.http_error(503, "overloaded"))
    write_shadow_policy(kit, judge, shadow_on())
    async with kit.running(settings=kit.settings()) as gateway:
        (shadowed,) = await send_and_settle(gateway)
        records = await gateway.records()

    assert shadowed.status_code == plain.status_code == 200
    assert shadowed.json()["choices"] == plain.json()["choices"]
    assert shadowed.headers["x-tierwise-tier"] == "edge"
    assert judge.requests == []
    (label,) = shadow_records(records)
    assert label["verdict"] == "failed"
    assert label["error"] == "upstream_error"
    assert metric(gateway, "tierwise_shadow_failed_total") == 1


async def test_shadow_timeout_counts_failed(kit: GatewayKit, judge: FakeUpstream) -> None:
    kit.fakes["frontier"].set_default(Scenario.hang())
    write_shadow_policy(kit, judge, shadow_on(timeout_s=0.2))
    async with kit.running(settings=kit.settings()) as gateway:
        (response,) = await send_and_settle(gateway)
        records = await gateway.records()

    assert response.status_code == 200
    (label,) = shadow_records(records)
    assert label["error"] == "timeout"
    assert label["reserved_usd"] > 0
    assert metric(gateway, "tierwise_shadow_failed_total") == 1


async def test_shadow_concurrency_drops_and_stop_cancels(
    kit: GatewayKit, judge: FakeUpstream
) -> None:
    kit.fakes["frontier"].set_default(Scenario.hang())
    write_shadow_policy(kit, judge, shadow_on(concurrency=1))
    async with kit.running(settings=kit.settings()) as gateway:
        responses = [await gateway.chat(chat_body(f"Question {i}?")) for i in range(3)]
        running_before_stop = gateway.runtime.shadow.running

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert running_before_stop == 1
    assert gateway.runtime.shadow.running == 0
    assert metric(gateway, "tierwise_shadow_sampled_total") == 3
    assert metric(gateway, "tierwise_shadow_dropped_total") == 2


async def test_shadow_skips_streams_and_other_tiers(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, shadow_on(tiers=["mid"]))
    async with kit.running(settings=kit.settings()) as gateway:
        await send_and_settle(gateway)
        streamed = await gateway.chat(chat_body("Stream this.", stream=True))
        await gateway.runtime.shadow.wait_idle()

    assert streamed.status_code == 200
    assert kit.fakes["frontier"].requests == []
    assert metric(gateway, "tierwise_shadow_sampled_total") == 0


async def test_shadow_respects_tenant_blocked_tiers(kit: GatewayKit, judge: FakeUpstream) -> None:
    import hashlib

    import yaml

    key = "sk-no-frontier"
    document = write_shadow_policy(kit, judge, shadow_on())
    policy = yaml.safe_load(document.read_text())
    policy["tenants"] = {"entries": {"no-frontier": {
        "key_sha256": [hashlib.sha256(key.encode()).hexdigest()], "blocked_tiers": ["frontier"],
    }}}
    write_yaml(kit.policy_path, policy)
    async with kit.running(settings=kit.settings()) as gateway:
        answer = await gateway.chat(chat_body("Keep this prompt away from frontier."), api_key=key)
        await gateway.runtime.shadow.wait_idle()

    assert answer.status_code == 200
    assert kit.fakes["frontier"].requests == []
    assert judge.requests == []
    assert metric(gateway, "tierwise_shadow_sampled_total") == 0


async def test_shadow_respects_alias_max_tier(kit: GatewayKit, judge: FakeUpstream) -> None:
    import yaml

    document = write_shadow_policy(kit, judge, shadow_on())
    policy = yaml.safe_load(document.read_text())
    policy["aliases"]["auto-local"] = {"max_tier": "edge"}
    write_yaml(kit.policy_path, policy)
    async with kit.running(settings=kit.settings()) as gateway:
        local = await gateway.chat(chat_body("Keep this prompt on the edge.", model="auto-local"))
        await gateway.runtime.shadow.wait_idle()
        local_sampled = metric(gateway, "tierwise_shadow_sampled_total")
        routed = await gateway.chat(chat_body("This one may be compared."))
        await gateway.runtime.shadow.wait_idle()

    assert local.status_code == routed.status_code == 200
    assert local.headers["x-tierwise-tier"] == "edge"
    assert local_sampled == 0
    assert metric(gateway, "tierwise_shadow_sampled_total") == 1


async def test_shadow_offer_never_raises(kit: GatewayKit, judge: FakeUpstream) -> None:
    from router.outcomes.record import Outcome

    write_shadow_policy(kit, judge, shadow_on())
    async with kit.running(settings=kit.settings()) as gateway:
        policy = gateway.runtime.policies.current.policy
        outcome = Outcome("req-odd", "tenant", "auto", "v1", None, False, tier="edge", status=200)
        outcome.deployment = policy.tiers["edge"].deployments[0]
        odd_completion = {"choices": ["not an object"]}
        gateway.runtime.shadow.offer(policy, chat_body(), outcome, odd_completion)

    assert metric(gateway, "tierwise_shadow_failed_total") == 1
    assert judge.requests == []


async def test_shadow_label_feeds_training(kit: GatewayKit, judge: FakeUpstream) -> None:
    write_shadow_policy(kit, judge, shadow_on(), store_prompts=True)
    async with kit.running(settings=kit.settings()) as gateway:
        await send_and_settle(gateway, count=2)
        log_path = gateway.runtime.outcomes.path
    assert len(shadow_records(read_file_records(log_path))) == 2

    labelled = read_gateway_log([log_path])

    assert len(labelled) == 2
    for prompt in labelled:
        assert prompt.quality == {"edge": pytest.approx(0.8)}
        assert prompt.messages[0]["content"].startswith("Question ")


async def test_shadow_budget_replicas_share_cap(shadow_redis_url: str) -> None:
    links = [RedisLink(shadow_redis_url, 2.0), RedisLink(shadow_redis_url, 2.0)]
    first, second = (ShadowBudget(link) for link in links)
    try:
        reserved = await first.reserve(0.6, cap_usd=1.0)
        refused = await second.reserve(0.6, cap_usd=1.0)
        assert reserved is not None
        await first.settle(reserved, actual_usd=0.1)
        after_settle = await second.reserve(0.6, cap_usd=1.0)
        total = await second.spent()
    finally:
        for link in links:
            await link.close()

    assert refused is None
    assert after_settle is not None
    assert total == pytest.approx(0.7)


async def test_shadow_budget_redis_down_skips() -> None:
    # Port 1 on 127.0.0.1 refuses connections, so the shared total cannot be read.
    link = RedisLink("redis://127.0.0.1:1/12", 0.5)
    try:
        reservation = await ShadowBudget(link).reserve(0.01, cap_usd=5.0)
    finally:
        await link.close()

    assert reservation is None


def test_verdict_parser_cases() -> None:
    cases: list[tuple[str | None, float | None]] = [
        ("8", 0.8),
        ("Score: 7", 0.7),
        ("7/10", 0.7),
        ("**9**", 0.9),
        ("6 out of 10", 0.6),
        ("Score (0-10): 5", 0.5),
        ("8.5", 0.85),
        ("0", 0.0),
        ("10/10", 1.0),
        ("7 or 8", None),
        ("12", None),
        ("-3", None),
        ("No score.", None),
        ("", None),
        (None, None),
    ]
    for text, expected in cases:
        parsed = parse_verdict(text)
        if expected is None:
            assert parsed is None, text
        else:
            assert parsed == pytest.approx(expected), text


@pytest.mark.parametrize(
    ("shadow", "expected"),
    [
        (
            {"enabled": True, "judge": {"deployment": "missing"}},
            ("shadow.judge.deployment: 'missing' is not a deployment of this policy; expected "
            "one of "),
        ),
        (
            {"enabled": True},
            ("shadow.judge: an enabled shadow section needs a judge; set judge.deployment to a "
            "deployment of this policy (found nothing)"),
        ),
        ({"sample_rate": 1.5}, "shadow.sample_rate: must be at most 1 (found 1.5)"),
        (
            {"tiers": ["edge", "frontier"]},
            ("shadow.reference_tier: 'frontier' is also in tiers (edge, frontier); the reference "
            "must be a tier that the shadowed requests were not served by"),
        ),
        ({"concurrency": 0}, "shadow.concurrency: must be greater than 0 (found 0)"),
    ],
)
def test_shadow_policy_validation(
    kit: GatewayKit, judge: FakeUpstream, shadow: dict[str, Any], expected: str
) -> None:
    document = policy_document(kit.base_urls)
    document["shadow"] = shadow
    path = write_yaml(kit.policy_path, document)
    text = path.read_text(encoding="utf-8")
    shadow_line = text.splitlines().index("shadow:") + 1

    with pytest.raises(PolicyError) as raised:
        parse_policy(text, path)

    (problem,) = raised.value.problems
    assert expected in problem
    assert "{" not in problem
    line = int(problem.split(":")[1])
    assert line > shadow_line


SHADOW_PRICED = {
    "name": "priced",
    "model": "openai/priced",
    "api_base": "http://127.0.0.1:9/v1",
    "price": {"input_per_million": 500_000, "output_per_million": 1_000_000,
              "cached_input_per_million": 50_000},
    "context_window": 32000,
}


@pytest.mark.parametrize(
    ("usage", "expected_usd"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 1}, 6.0),
        ({"prompt_tokens": 10, "completion_tokens": 1,
          "prompt_tokens_details": {"cached_tokens": 4}}, 4.2),
        ({"prompt_tokens": 10, "completion_tokens": 1,
          "prompt_tokens_details": {"cached_tokens": "4 tokens"}}, 6.0),
        ({"prompt_tokens": 10, "completion_tokens": 1,
          "prompt_tokens_details": {"cached_tokens": {"text": 4}}}, 6.0),
        ({"prompt_tokens": 10, "completion_tokens": 1,
          "prompt_tokens_details": {"cached_tokens": 10**30}}, 6.0),
        ({"prompt_tokens": "ten", "completion_tokens": 1}, 1.0),
        ({"prompt_tokens": 10**30, "completion_tokens": 1}, 1.0),
        ({"prompt_tokens": -10, "completion_tokens": 1}, 1.0),
    ],
)
def test_shadow_call_cost_takes_valid_counts_only(usage: dict[str, Any], expected_usd: float) -> None:
    from router.policy.schema import Deployment
    from router.shadow.job import _call_cost

    deployment = Deployment.model_validate(SHADOW_PRICED)
    completion = {"choices": [], "usage": usage}

    # As in the outcome record, a count that is not a whole number from 0 to 10**9 is 0.
    assert _call_cost(deployment, completion, fallback_usd=99.0) == pytest.approx(expected_usd)
