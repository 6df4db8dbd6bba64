"""``GET /dashboard``: the data endpoint, the feedback join, evaluation curves, and the page in Chromium.

The browser test serves real recorded answers (the replay stack), sends traffic-mix prompts
and feedback through a live gateway, and renders the page in headless Chromium.  It needs
the public data folder and the ``chromium`` binary, and skips with the reason when either
is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.app import create_app
from router.dashboard.aggregates import DashboardAggregates
from router.dashboard.evaluation import ReportError, summarize_report
from router.settings import Settings
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    new_api_key,
    policy_document,
    write_yaml,
)
from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_COPY = REPO_ROOT / "var" / "screenshots" / "dashboard.png"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
# A report in the shape ``tierwise evaluate --json`` writes (classifiers.evaluation).
EVALUATION_REPORT: dict[str, Any] = {
    "seed": 0,
    "mode": "5-fold",
    "tiers": ["edge", "mid", "frontier"],
    "rows_scored": 400,
    "cost_quality": {
        "rows": 400,
        "frontier_cost": 0.02,
        "frontier_quality": 0.8,
        "classifier": {
            "aiq": 0.71,
            "curve": [[0.0002, 0.5], [0.004, 0.7], [0.01, 0.78], [0.016, 0.8]],
            "cost_share_95": 0.45,
        },
        "random": {"aiq": 0.64, "curve": [[0.0002, 0.5], [0.02, 0.8]]},
        "always-edge": {"cost_share": 0.01, "quality": 0.5},
        "always-mid": {"cost_share": 0.05, "quality": 0.62},
        "always-frontier": {"cost_share": 1.0, "quality": 0.8},
    },
}


async def dashboard_data(gateway: Gateway) -> dict[str, Any]:
    response = await gateway.client.get("/dashboard/data")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def post_feedback(
    gateway: Gateway, request_id: str, score: float, api_key: str | None = None
) -> int:
    """Post feedback and return the HTTP status."""
    response = await gateway.client.post(
        "/v1/feedback",
        json={"request_id": request_id, "score": score},
        headers={"Authorization": f"Bearer {api_key or gateway.api_key}"},
    )
    return response.status_code


# The page and its files ---------------------------------------------------------------------


async def test_dashboard_page_loads_nothing_external(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        page = await gateway.client.get("/dashboard")
        script = await gateway.client.get("/dashboard/static/dashboard.js")
        style = await gateway.client.get("/dashboard/static/dashboard.css")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    for response in (page, script, style):
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", response.text))
        assert urls <= {SVG_NAMESPACE}, urls
    assert 'src="/dashboard/static/dashboard.js"' in page.text
    assert "innerHTML" not in script.text


async def test_dashboard_rejects_unknown_files(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        missing = await gateway.client.get("/dashboard/static/secret.py")
        html = await gateway.client.get("/dashboard/static/dashboard.html")
        escaped = await gateway.client.get("/dashboard/static/..%2F..%2Fsettings.py")

    for response in (missing, html, escaped):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


# /dashboard/data --------------------------------------------------------------------------------


async def test_dashboard_data_totals_and_minutes(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.1)) as gateway:
        body = chat_body("Dashboard totals.", temperature=0)
        await gateway.chat(body)
        await gateway.chat(body)
        await gateway.chat(chat_body("Named model.", model="frontier-large"))
        await gateway.chat(chat_body(model="no-such-model"))
        data = await dashboard_data(gateway)
        records = await gateway.request_records()
        started_at = gateway.runtime.dashboard.started_at

    totals = data["totals"]
    assert data["tiers"] == ["edge", "mid", "frontier"]
    assert data["policy"]["name"] == "gateway-tests"
    assert data["classifier"] == {"version": "stub-1"}
    assert data["redis"] == "not_configured"
    assert totals["requests"] == 4
    # The unknown model's 404 is the client's error, not a failure.
    assert totals["errors"] == 0
    assert totals["rejected"] == 1
    assert totals["by_tier"] == {"mid": 2, "frontier": 1, "none": 1}
    assert totals["cache_hits"] == 1
    assert totals["cache_hit_rate"] == pytest.approx(1 / 3)
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))
    assert totals["baseline_cost_usd"] == pytest.approx(sum(r["baseline_cost_usd"] for r in records))
    assert totals["savings_usd"] == pytest.approx(totals["baseline_cost_usd"] - totals["cost_usd"])
    minutes = data["minutes"]
    assert minutes[0]["minute"] == int(started_at // 60) * 60
    assert [m["minute"] % 60 for m in minutes] == [0] * len(minutes)
    assert sum(m["requests"] for m in minutes) == 4
    assert minutes[-1]["requests"] >= 1 or minutes[-2]["requests"] >= 1


async def test_dashboard_value_per_tier_from_feedback(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        first = await gateway.chat(chat_body("Rate me."))
        second = await gateway.chat(chat_body("Rate me too."))
        first_id, second_id = first.headers["x-request-id"], second.headers["x-request-id"]
        statuses = [
            await post_feedback(gateway, first_id, 1.0),
            await post_feedback(gateway, second_id, 0.2),
            await post_feedback(gateway, second_id, 0.5),  # replaces 0.2
            await post_feedback(gateway, first_id, 0.0, api_key=new_api_key()),  # another tenant
            await post_feedback(gateway, "req-never-sent", 1.0),
        ]
        data = await dashboard_data(gateway)

    cost = float(first.headers["x-tierwise-cost-usd"]) + float(second.headers["x-tierwise-cost-usd"])
    edge = data["value"]["edge"]
    assert set(data["value"]) == {"edge"}
    assert edge["rated_requests"] == 2
    assert edge["mean_quality"] == pytest.approx(0.75)
    assert edge["cost_usd"] == pytest.approx(cost)
    assert edge["quality_per_usd"] == pytest.approx(1.5 / cost)
    assert edge["quality_per_1k_tokens"] > 0
    # Feedback on another tenant's id or an id never issued is rejected before it is counted.
    assert statuses == [200, 200, 200, 404, 404]
    assert data["feedback"] == {"received": 3, "unmatched": 0}


async def test_dashboard_without_evaluation(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        data = await dashboard_data(gateway)

    assert data["evaluation"] == {"status": "not_configured", "message": "no evaluation configured"}


async def test_dashboard_evaluation_curves(kit: GatewayKit) -> None:
    report = kit.tmp_path / "evaluation.json"
    report.write_text(json.dumps(EVALUATION_REPORT), encoding="utf-8")
    kit.write_policy()
    async with kit.running(settings=kit.settings(evaluation_report=report)) as gateway:
        data = await dashboard_data(gateway)
        report.write_text("{not json", encoding="utf-8")
        broken = await dashboard_data(gateway)
        report.unlink()
        missing = await dashboard_data(gateway)

    evaluation = data["evaluation"]
    assert evaluation["status"] == "ok"
    assert evaluation["file"] == "evaluation.json"
    classifier = evaluation["curves"][0]
    assert classifier["name"] == "classifier"
    assert classifier["aiq"] == 0.71
    assert classifier["points"][-1] == pytest.approx([0.8, 0.8])
    assert [p["name"] for p in evaluation["points"]] == ["always-edge", "always-mid", "always-frontier"]
    assert broken["evaluation"]["status"] == "invalid"
    assert broken["evaluation"]["message"].startswith("evaluation.json is not valid JSON")
    assert missing["evaluation"]["status"] == "unavailable"


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ([], "expected a JSON object; got list"),
        ({"routellm": {}}, "no 'cost_quality' table; evaluate with three tiers whose rows have cost and quality"),
        ({"cost_quality": {"frontier_cost": 0}}, "'frontier_cost' must be positive; got 0.0"),
        ({"cost_quality": {"frontier_cost": "x"}}, "'frontier_cost' must be a number; got 'x'"),
        ({"cost_quality": {"frontier_cost": 1, "c": {"curve": [[1]]}}}, "'c.curve' must be a list of [cost, quality] pairs"),
        ({"cost_quality": {"frontier_cost": 1}}, "the 'cost_quality' table has no router curves and no tier points"),
    ],
)
def test_evaluation_report_errors(report: Any, message: str) -> None:
    with pytest.raises(ReportError) as caught:
        summarize_report(report)
    assert str(caught.value) == message


def test_evaluation_report_wrapped_and_thinned() -> None:
    curve = [[i / 1000, 0.5 + i / 2000] for i in range(1001)]
    summary = summarize_report({"result": {"cost_quality": {"frontier_cost": 1.0, "r": {"curve": curve}}}})
    points = summary["curves"][0]["points"]
    assert len(points) <= 202
    assert points[0] == [0.0, 0.5]
    assert points[-1] == [1.0, 1.0]


def test_evaluation_report_from_classifier_evaluation() -> None:
    from classifiers.evaluation import evaluate_records
    from classifiers.outcomes import LabelledPrompt

    records = [
        LabelledPrompt(
            id=str(i),
            messages=[{"role": "user", "content": ("prove the theorem " * (i % 7)) + f"question {i}"}],
            quality={"edge": float(i % 7 < 3), "mid": float(i % 7 < 5), "frontier": float(i % 7 < 6)},
            cost={"edge": 0.0001, "mid": 0.0006, "frontier": 0.01},
        )
        for i in range(84)
    ]
    report = json.loads(json.dumps(evaluate_records(records, ["edge", "mid", "frontier"], folds=3)))
    summary = summarize_report(report)
    assert summary["status"] == "ok"
    assert "classifier" in {curve["name"] for curve in summary["curves"]}
    assert {p["name"] for p in summary["points"]} == {"always-edge", "always-mid", "always-frontier"}
    frontier = next(p for p in summary["points"] if p["name"] == "always-frontier")
    assert frontier["cost_share"] == pytest.approx(1.0)


# Aggregates ----------------------------------------------------------------------------------


def record(request_id: str, ts: float, tier: str | None = "edge", **fields: Any) -> dict[str, Any]:
    """An outcome record with the fields the aggregates read."""
    return {
        "request_id": request_id, "ts": ts, "tenant": "t", "tier": tier, "status": 200, "error": None,
        "cache_hit": False, "cost_usd": 0.001, "baseline_cost_usd": 0.01, "tokens_in": 10,
        "tokens_out": 20, **fields,
    }


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_aggregates_keep_a_bounded_minute_window() -> None:
    clock = FakeClock(600_000.0)
    aggregates = DashboardAggregates(window_minutes=30, clock=clock)
    for minute in range(120):
        aggregates.observe(record(f"r{minute}", 600_000.0 + minute * 60))
    clock.now = 600_000.0 + 119 * 60
    snapshot = aggregates.snapshot()

    assert len(aggregates.minutes) == 30
    assert len(snapshot["minutes"]) == 30
    assert snapshot["totals"]["requests"] == 120
    assert [m["requests"] for m in snapshot["minutes"]] == [1] * 30


def test_aggregates_count_late_records_in_their_minute() -> None:
    clock = FakeClock(60_000.0 + 300)
    aggregates = DashboardAggregates(clock=clock)
    aggregates.observe(record("new", 60_000.0 + 290))
    aggregates.observe(record("long-stream", 60_000.0 + 10))  # started earlier, finished later
    minutes = {m["minute"]: m["requests"] for m in aggregates.snapshot()["minutes"]}

    assert minutes[60_000] == 1
    assert minutes[60_240] == 1


def test_aggregates_series_starts_at_process_start() -> None:
    clock = FakeClock(600_000.0 + 30)
    aggregates = DashboardAggregates(clock=clock)
    clock.now += 7
    first_series = aggregates.snapshot()["minutes"]
    aggregates.observe(record("r1", clock.now))
    clock.now += 120
    later_series = aggregates.snapshot()["minutes"]

    assert [m["minute"] for m in first_series] == [600_000]
    assert [m["minute"] for m in later_series] == [600_000, 600_060, 600_120]
    assert [m["requests"] for m in later_series] == [1, 0, 0]


def test_aggregates_forget_oldest_requests_for_feedback() -> None:
    aggregates = DashboardAggregates(join_size=3, clock=FakeClock(0.0))
    for number in range(5):
        aggregates.observe(record(f"r{number}", 0.0))
    aggregates.observe(record("failed", 0.0, tier=None, status=502, error="upstream_error"))

    assert list(aggregates.served) == ["r2", "r3", "r4"]
    assert aggregates.observe_feedback("t", "r0", 1.0) is False
    assert aggregates.observe_feedback("t", "failed", 1.0) is False
    assert aggregates.observe_feedback("t", "r4", 1.0) is True
    assert aggregates.value["edge"].rated == 1


def test_aggregates_quality_per_usd_without_cost() -> None:
    aggregates = DashboardAggregates(clock=FakeClock(0.0))
    aggregates.observe(record("hit", 0.0, cache_hit=True, cost_usd=0.0))
    aggregates.observe_feedback("t", "hit", 0.9)
    value = aggregates.snapshot()["value"]["edge"]

    assert value["quality_per_usd"] is None
    assert value["mean_quality"] == 0.9


# The page in headless Chromium ---------------------------------------------------------------


@dataclass
class SentTraffic:
    requests: int
    by_tier: dict[str, int]
    rated_tiers: set[str]
    feedback: int = 0


def find_chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium not found on PATH; install the Debian package 'chromium' (CI does)")
    return binary


def run_chromium(binary: str, url: str, profile: Path, *action: str) -> str:
    """Run headless Chromium on ``url`` with no network use besides the page; return stdout."""
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1280,1600", "--virtual-time-budget=5000",
        *action, url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"chromium exited with {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


def element_text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match is not None, f"no element with id {element_id!r} in the rendered page"
    return match.group(1)


class LengthScorer:
    """Scores by prompt length, so short prompts go to edge and long ones further up.

    The page test needs a mix of tiers, not a good classifier, and must not depend on
    the state of the bundled model.
    """

    version = "length-test-1"
    tiers: tuple[str, ...] = ("edge", "mid", "frontier")

    def score(self, messages: list[Any]) -> dict[str, float]:
        chars = sum(len(str(message.get("content") or "")) for message in messages)
        return {"edge": 0.9 if chars < 250 else 0.3, "mid": 0.9 if chars < 900 else 0.3, "frontier": 0.9}


@pytest.fixture
def live_replay_gateway(
    tmp_path: Path, replay_stack: dict[str, TierUpstream]
) -> Iterator[LiveGateway]:
    """A live gateway on the replay stack, routing by prompt length, with an evaluation report."""
    report = tmp_path / "evaluation.json"
    report.write_text(json.dumps(EVALUATION_REPORT), encoding="utf-8")
    settings = Settings(
        policy=write_policy(tmp_path / "policy.yaml", replay_stack.values()),
        data_dir=tmp_path / "var",
        local_model=False,
        policy_reload_interval_s=0.0,
        log_format="json",
        evaluation_report=report,
    )
    with LiveGateway(create_app(settings, LengthScorer())) as gateway:
        yield gateway


def send_replay_traffic(base_url: str, shared_data: Path) -> SentTraffic:
    """Send traffic-mix prompts (a few repeated, a few streamed, one invalid) with feedback.

    Feedback is the recorded correctness of the model that served the prompt, when known.
    """
    from bench.replay import load_prompts
    from tests.support.correctness import load_correctness

    correctness = load_correctness(shared_data)
    prompts = load_prompts(shared_data, correctness, count=30, seed=3, max_chars=3000)
    recorded_model = {spec.tier: spec.model for spec in REPLAY_STACK}
    headers = {"Authorization": "Bearer dashboard-test-key"}
    sent = SentTraffic(0, {}, set())
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        for number, prompt in enumerate([*prompts, *prompts[:6]]):
            body = {"model": "auto", "messages": [{"role": "user", "content": prompt.text}],
                    "temperature": 0, "stream": number % 10 == 9}
            response = client.post("/chat/completions", json=body)
            assert response.status_code == 200, response.text
            tier = response.headers["x-tierwise-tier"]
            sent.requests += 1
            sent.by_tier[tier] = sent.by_tier.get(tier, 0) + 1
            score = correctness.score(prompt.id, recorded_model[tier])
            if score is not None:
                request_id = response.headers["x-request-id"]
                rated = client.post("/feedback", json={"request_id": request_id, "score": score})
                assert rated.status_code == 200, rated.text
                sent.rated_tiers.add(tier)
                sent.feedback += 1
        assert client.post("/chat/completions", json={"model": "auto"}).status_code == 400
        sent.requests += 1
    return sent


def test_dashboard_renders_in_chromium(
    live_replay_gateway: LiveGateway, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = find_chromium()
    sent = send_replay_traffic(live_replay_gateway.base_url, shared_data)
    url = f"http://127.0.0.1:{live_replay_gateway.port}/dashboard"
    screenshot = tmp_path / "dashboard.png"

    dom = run_chromium(binary, url, tmp_path / "profile-dom", "--dump-dom")
    run_chromium(binary, url, tmp_path / "profile-shot", f"--screenshot={screenshot}")

    assert 'data-loaded="true"' in dom
    assert element_text(dom, "stat-requests") == str(sent.requests)
    assert element_text(dom, "stat-errors").startswith("0 errors (")
    assert element_text(dom, "stat-errors").endswith(", 1 rejected (4xx)")
    assert element_text(dom, "stat-cache") != "–"
    assert element_text(dom, "stat-savings").startswith("$")
    for tier, count in sent.by_tier.items():
        assert re.search(rf'<li data-tier="{tier}">.*?<span class="count">{count} \(', dom), tier
    for tier in sent.rated_tiers:
        assert f'<tr data-tier="{tier}">' in dom
    feedback_note = element_text(dom, "feedback-note")
    assert feedback_note.startswith(f"{sent.feedback} feedback records received; 0 did not match ")
    assert 'data-router="classifier"' in dom
    assert "AIQ 0.710" in dom
    assert screenshot.stat().st_size > 10_000
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    with capsys.disabled():
        print(f"\ndashboard screenshot: {screenshot} (copied to {SCREENSHOT_COPY})")


def test_dashboard_shows_loss_as_negative(kit: GatewayKit, tmp_path: Path) -> None:
    # An edge tier priced above the frontier tier makes every routed request a loss.
    document = policy_document(kit.base_urls)
    for entry in document["tiers"]["edge"]["deployments"]:
        entry["price"] = {"input_per_million": 500.0, "output_per_million": 500.0}
    write_yaml(kit.policy_path, document)
    binary = find_chromium()
    with LiveGateway(create_app(kit.settings(), StubScorer())) as live:
        with httpx.Client(base_url=live.base_url, timeout=10) as client:
            response = client.post("/chat/completions", json=chat_body("Say hello."))
        dom = run_chromium(binary, f"http://127.0.0.1:{live.port}/dashboard",
                           tmp_path / "profile", "--dump-dom")

    assert response.headers["x-tierwise-tier"] == "edge"
    assert element_text(dom, "stat-savings").startswith("-$")
    assert '<div class="card accent loss"><h2>Savings</h2>' in dom
