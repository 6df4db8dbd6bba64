"""Retraining from the gateway's own outcome log, end to end, against real Redis.

A gateway that stores prompts and writes outcomes to Redis serves GSM8K questions (public
data, MIT license) through fake upstreams and receives feedback for them.  Then the real
``tierwise outcomes export`` and ``tierwise classifier train --outcomes`` run as
subprocesses, and finally the CronJob's own shell script, taken from the manifest, runs with
the real ``tierwise`` on PATH.

These tests use database 9 of the Redis at ``$TIERWISE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6399``) and a key prefix of their own, deleted afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis
import yaml

from classifiers import load_artifact
from classifiers.datasets import convert, shared_data_dir
from classifiers.outcomes import GATEWAY_SOURCE, write_outcomes
from router.distribution import DistributionKeys
from router.distribution.publish import published_version
from router.outcomes.log import stream_key
from tests.gateway.conftest import TIERS, GatewayKit
from tests.scaleout.support import DEFAULT_REDIS_URL
from tests.support.fake_upstream import FakeUpstream
from tests.support.recorded import repo_root
from tests.support.redis_check import require_redis

RETRAIN_DB = 9
CRONJOB = repo_root() / "deploy" / "k8s" / "cronjob.yaml"
CONFIGMAP = repo_root() / "deploy" / "k8s" / "configmap.yaml"
TIERWISE = Path(sys.executable).with_name("tierwise")
GATEWAY_PROMPTS = 60
CACHE_HITS = 5
# GSM8K systems standing in for the three tiers of the labelled file.
TIER_MAP = ("edge=gpt3-175b-verifier", "mid=mixtral-8x7b-instruct",
            "frontier=gpt-4-1106-preview")


def _retrain_redis_url() -> str:
    parts = urlsplit(os.environ.get("TIERWISE_TEST_REDIS_URL") or DEFAULT_REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{RETRAIN_DB}", parts.query, ""))


@pytest.fixture(scope="module")
def retrain_redis_url() -> str:
    return require_redis(
        _retrain_redis_url(),
        f"start redis-server or set TIERWISE_TEST_REDIS_URL (database {RETRAIN_DB} is used)",
    )


@pytest.fixture
def key_prefix(retrain_redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted after the test."""
    prefix = f"retrain-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(retrain_redis_url, socket_timeout=10)
    try:
        for key in client.scan_iter(match=f"{{{prefix}}}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="module")
def gsm8k_records() -> list[dict[str, Any]]:
    """The first 160 GSM8K test questions with the correctness of six systems."""
    folder = shared_data_dir() / "gsm8k-openai"
    if not (folder / "tidy" / "gsm8k_correctness.csv").is_file():
        pytest.skip(f"public data not found at {folder}; set TIERWISE_SHARED_DATA to run "
                    "the retraining tests on GSM8K questions")
    return list(itertools.islice(convert("gsm8k-openai", folder), 160))


def _cli_env(retrain_redis_url: str, key_prefix: str, path: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("REDIS_URL", "TIERWISE_REDIS_URL")}
    env |= {"REDIS_URL": retrain_redis_url, "TIERWISE_REDIS_KEY_PREFIX": key_prefix,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TIERWISE_LOG_FORMAT": "json"}
    if path is not None:
        env["PATH"] = path
    return env


def _tierwise(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    if not TIERWISE.is_file():
        pytest.skip(f"the tierwise command is not installed at {TIERWISE}; pip install -e .")
    return subprocess.run([str(TIERWISE), *arguments], env=env, cwd=repo_root(),
                          capture_output=True, text=True, timeout=240, check=False)


async def _serve_and_label(kit: GatewayKit, key_prefix: str,
                           records: list[dict[str, Any]]) -> None:
    """Send each record's question, post feedback, and repeat a few as rated cache hits."""
    kit.write_policy(store_prompts=True)
    settings = kit.settings(use_redis=True, redis_key_prefix=key_prefix)
    async with kit.running(settings=settings) as gateway:
        auth = {"Authorization": f"Bearer {gateway.api_key}"}
        repeats = records[:CACHE_HITS]
        for record in records + repeats:
            body = {"model": "auto", "temperature": 0,
                    "messages": [{"role": "user", "content": record["prompt"]}]}
            response = await gateway.chat(body)
            assert response.status_code == 200, response.text
            # Feedback is accepted only for ids that the gateway issued to the same key.
            request_id = response.headers["x-request-id"]
            # The edge stand-in's correctness is the label of the answer the edge tier served.
            score = record["outcomes"]["gpt3-175b-verifier"]["quality"]
            feedback = await gateway.client.post(
                "/v1/feedback", json={"request_id": request_id, "score": score}, headers=auth)
            assert feedback.status_code == 200, feedback.text


def _exported_rows(folder: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted(folder.rglob("part-*.jsonl"))
            for line in path.read_bytes().splitlines() if line]


def _cronjob_script(root: Path, policy: Path) -> str:
    """Return the CronJob's script with its volume at ``root`` and its policy at ``policy``."""
    manifest = yaml.safe_load(CRONJOB.read_text(encoding="utf-8"))
    container = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    script = str(container["command"][-1])
    assert "root=/var/lib/tierwise" in script
    assert "policy=/etc/tierwise/policy.yaml" in script
    script = script.replace("policy=/etc/tierwise/policy.yaml", f"policy={policy}")
    return script.replace("root=/var/lib/tierwise", f"root={root}")


def _run_cronjob(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The ConfigMap's policy, which the job mounts at /etc/tierwise/policy.yaml.
    configmap = yaml.safe_load(CONFIGMAP.read_text(encoding="utf-8"))
    policy = root / "policy.yaml"
    policy.write_text(configmap["data"]["policy.yaml"], encoding="utf-8")
    return subprocess.run(["/bin/sh", "-c", _cronjob_script(root, policy)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300, check=False)


async def test_gateway_log_trains_and_publishes(
    tmp_path: Path, retrain_redis_url: str, key_prefix: str, fakes: dict[str, FakeUpstream],
    gsm8k_records: list[dict[str, Any]],
) -> None:
    served = gsm8k_records[:GATEWAY_PROMPTS]
    kit = GatewayKit(tmp_path / "gateway", fakes, retrain_redis_url)
    kit.tmp_path.mkdir()
    await _serve_and_label(kit, key_prefix, served)
    env = _cli_env(retrain_redis_url, key_prefix)

    export_dir = tmp_path / "export"
    exported = _tierwise(env, "outcomes", "export", "--out", str(export_dir), "--quiet")
    assert exported.returncode == 0, exported.stderr
    rows = _exported_rows(export_dir)
    assert sum(row["type"] == "request" for row in rows) == GATEWAY_PROMPTS + CACHE_HITS
    assert sum(row["type"] == "request" and row["cache_hit"] for row in rows) == CACHE_HITS
    assert sum(row["type"] == "feedback" for row in rows) == GATEWAY_PROMPTS + CACHE_HITS

    labelled = tmp_path / "labelled" / "gsm8k.jsonl"
    write_outcomes(labelled, gsm8k_records[GATEWAY_PROMPTS:])
    model_dir = tmp_path / "model"
    tier_map = [argument for entry in TIER_MAP for argument in ("--tier-map", entry)]
    trained = _tierwise(env, "classifier", "train", "--outcomes", str(export_dir),
                        "--data", str(labelled), *tier_map, "--out", str(model_dir))
    assert trained.returncode == 0, trained.stderr
    # A rated cache hit rates the tier whose answer was stored, so every request is usable.
    assert (f"outcome log: {GATEWAY_PROMPTS + CACHE_HITS} requests in 1 file, "
            f"{GATEWAY_PROMPTS + CACHE_HITS} usable for training") in trained.stderr
    assert "cache hits skipped" not in trained.stderr

    scorer = load_artifact(model_dir)
    for record in gsm8k_records[:10]:
        scores = scorer.score([{"role": "user", "content": record["prompt"]}])
        assert set(scores) == set(TIERS)
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    inputs = card["training"]["rows"]["input"]
    # A rated hit's score is averaged into the row of the request whose answer it copied,
    # so the log gives one input row per served prompt.
    assert (f"labelled requests averaged into the row of an earlier request with the same "
            f"conversation and tier: {CACHE_HITS}") in trained.stderr
    assert inputs[GATEWAY_SOURCE] == GATEWAY_PROMPTS
    assert inputs["gsm8k-openai"] == len(gsm8k_records) - GATEWAY_PROMPTS
    assert GATEWAY_SOURCE in (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Janet" not in (model_dir / "model.json").read_text(encoding="utf-8")

    # The volume of a real job keeps earlier exports, and the gsm8k file is its labelled data.
    root = tmp_path / "volume"
    (root / "outcomes").mkdir(parents=True)
    for part in export_dir.rglob("part-*.jsonl"):
        target = root / "outcomes" / part.relative_to(export_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(part.read_bytes())
    (root / "labelled").mkdir()
    # The tier map is not an option of the job, so its labelled file uses tier names.
    labelled_rows = [_with_tier_keys(record) for record in gsm8k_records[GATEWAY_PROMPTS:]]
    write_outcomes(root / "labelled" / "gsm8k.jsonl", labelled_rows)
    # The previous model learnt the labels upside down, so the new one must beat it.
    latest = root / "classifier" / "latest"
    _previous_model(env, root, "inverted", [_inverted(record) for record in labelled_rows])
    job_env = _cli_env(retrain_redis_url, key_prefix,
                       f"{TIERWISE.parent}:/usr/local/bin:/usr/bin:/bin")
    job = _run_cronjob(root, job_env)

    assert job.returncode == 0, job.stdout + job.stderr
    assert "compared inverted" in job.stdout
    assert latest.is_symlink()
    published_folder = latest.readlink()
    assert published_folder != Path("inverted")
    job_scorer = load_artifact(latest)
    assert job_scorer.tiers == TIERS
    assert job_scorer.metadata["comparison"]["compared_version"] == "inverted"
    assert job_scorer.metadata["comparison"]["passed"] is True
    assert "retrain: published the classifier in" in job.stdout
    client = redis.Redis.from_url(retrain_redis_url, socket_timeout=10)
    try:
        bundle = published_version(client, DistributionKeys(key_prefix), "classifier")
    finally:
        client.close()
    assert bundle is not None
    assert bundle.version == job_scorer.version

    # A previous model trained on every labelled row, the held-out ones included, is clearly
    # better on them, so the next run publishes nothing and leaves "latest" alone.
    _previous_model(env, root, "seen-all", labelled_rows)
    gated = _run_cronjob(root, job_env)

    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert "is lower than the compared model's by" in " ".join(gated.stderr.split())
    assert (f"retrain: the new classifier scored worse on held-out rows than {latest} "
            "(comparison above); nothing published") in gated.stdout
    assert "retrain: published" not in gated.stdout
    assert latest.readlink() == Path("seen-all")
    # The rejected model was not written.
    assert {path.name for path in latest.parent.iterdir()} == {
        "inverted", "seen-all", "latest", published_folder.name}
    client = redis.Redis.from_url(retrain_redis_url, socket_timeout=10)
    try:
        still = published_version(client, DistributionKeys(key_prefix), "classifier")
    finally:
        client.close()
    assert still is not None
    assert still.version == job_scorer.version


def _previous_model(env: dict[str, str], root: Path, version: str,
                    records: list[dict[str, Any]]) -> None:
    """Train an artifact on ``records`` under the job's classifier folder and point "latest" at it."""
    data = root / "previous" / f"{version}.jsonl"
    write_outcomes(data, records)
    trained = _tierwise(env, "classifier", "train", "--data", str(data), "--version", version,
                        "--out", str(root / "classifier" / version))
    assert trained.returncode == 0, trained.stderr
    latest = root / "classifier" / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(version)


def _inverted(record: dict[str, Any]) -> dict[str, Any]:
    outcomes = {tier: outcome | {"quality": 1.0 - outcome["quality"]}
                for tier, outcome in record["outcomes"].items()}
    return record | {"outcomes": outcomes}


def _with_tier_keys(record: dict[str, Any]) -> dict[str, Any]:
    models = {model: tier for tier, _, model in (entry.partition("=") for entry in TIER_MAP)}
    outcomes = {models[model]: outcome for model, outcome in record["outcomes"].items()
                if model in models}
    return record | {"outcomes": outcomes}


def test_cronjob_without_stored_prompts_exits_cleanly(
    tmp_path: Path, retrain_redis_url: str, key_prefix: str
) -> None:
    client = redis.Redis.from_url(retrain_redis_url, socket_timeout=10)
    try:
        for number in range(3):
            request = {"type": "request", "request_id": f"bare-{number}", "tenant": "key-test",
                       "tier": "edge", "cache_hit": False, "status": 200, "error": None}
            feedback = {"type": "feedback", "request_id": f"bare-{number}",
                        "tenant": "key-test", "score": 1.0, "ts": 1.0}
            for record in (request, feedback):
                client.xadd(stream_key(key_prefix), {"record": orjson.dumps(record)})
    finally:
        client.close()
    root = tmp_path / "volume"
    root.mkdir()
    env = _cli_env(retrain_redis_url, key_prefix, f"{TIERWISE.parent}:/usr/local/bin:/usr/bin:/bin")

    job = _run_cronjob(root, env)

    assert job.returncode == 0, job.stdout + job.stderr
    assert "outcomes.store_prompts: true): 3" in job.stderr
    assert "retrain: the outcome log has no trainable rows yet" in job.stdout
    assert not (root / "classifier" / "latest").exists()


def test_cronjob_with_empty_stream_exits_cleanly(
    tmp_path: Path, retrain_redis_url: str, key_prefix: str
) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    env = _cli_env(retrain_redis_url, key_prefix, f"{TIERWISE.parent}:/usr/local/bin:/usr/bin:/bin")

    job = _run_cronjob(root, env)

    assert job.returncode == 0, job.stdout + job.stderr
    assert "retrain: no outcome records exported yet; nothing to train on" in job.stdout
    assert not (root / "classifier").exists()
