"""deploy/ through the real tools: docker-compose, promtool and nginx -t.

Each validator is also shown a broken file and must reject it, so a pass means
the tool looked. The scale profile is read as compose resolves it (variables
substituted, env_file merged), not as this repository's YAML parser sees it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway import Settings
from gateway.settings import LedgerSettings
from tests.deploy.tools import (
    DEPLOY,
    NGINX_CONF,
    UPSTREAM_SERVER,
    Compose,
    copy_deploy,
    nginx_test,
    require_tool,
    run,
)

PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
SCALE_ONLY = {"postgres", "ledger-migrate", "gateway-a", "gateway-b", "nginx"}


def _replicas(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if re.fullmatch(r"gateway-[a-z]", name)}


# --- docker-compose -----------------------------------------------------------


@pytest.mark.parametrize("profile", [None, "demo-cloud", "scale"])
def test_compose_file_is_valid(tmp_path: Path, profile: str | None) -> None:
    result = Compose(copy_deploy(tmp_path)).check(profile)
    assert result.returncode == 0, result.stderr


def test_compose_knows_the_profiles(tmp_path: Path) -> None:
    compose = Compose(copy_deploy(tmp_path))
    result = run(compose.command("config", "--profiles"), cwd=compose.directory)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["demo-cloud", "scale"]


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # a key compose does not know
        ("    image: nginx:", "    replicas: 2\n    image: nginx:", "'replicas'"),
        # a dependency on a service that does not exist
        ("      gateway-b:\n        condition: service_started", "      gateway-c:", "gateway-c"),
        # why the file has no top-level `name:` (the project name is in .env)
        ("services:\n", "name: hybrid-gateway\n\nservices:\n", "'name'"),
    ],
)
def test_compose_check_rejects_a_broken_file(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    copy = copy_deploy(tmp_path)
    compose_file = copy / "docker-compose.yml"
    text = compose_file.read_text()
    assert text.count(old) == 1
    compose_file.write_text(text.replace(old, new))
    result = Compose(copy).check("scale")
    assert result.returncode != 0
    assert complaint in result.stderr


def test_scale_profile_as_compose_resolves_it(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    services = Compose(copy_deploy(tmp_path, {"POSTGRES_PASSWORD": password})).resolved("scale")[
        "services"
    ]
    for name in SCALE_ONLY:
        assert services[name]["profiles"] == ["scale"], name
    replicas = _replicas(services)
    assert sorted(replicas) == ["gateway-a", "gateway-b"]

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["environment"]["POSTGRES_PASSWORD"] == password
    assert "ports" not in postgres  # reachable from the compose network only
    (data,) = postgres["volumes"]
    assert data["type"] == "volume" and data["target"] == "/var/lib/postgresql/data"
    assert "pg_isready" in postgres["healthcheck"]["test"]

    single = services["gateway"]["environment"]
    for name in [*replicas, "ledger-migrate"]:
        service = services[name]
        assert service["image"] == services["gateway"]["image"], name
        environment = dict(service["environment"])
        url = urlsplit(environment.pop("GATEWAY_LEDGER__URL"))
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432), name
        assert url.username == postgres["environment"]["POSTGRES_USER"], name
        assert url.password == password, name
        assert url.path == "/" + postgres["environment"]["POSTGRES_DB"], name
        # the rest of each replica's settings is the single gateway's .env
        assert environment == single, name
        # a value the gateway accepts
        LedgerSettings.model_validate({"url": url.geturl()})

    assert services["ledger-migrate"]["command"] == ["hybrid-gateway", "ledger", "migrate"]
    assert services["ledger-migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}
    }
    for name, replica in replicas.items():
        assert replica["depends_on"] == {
            "ledger-migrate": {"condition": "service_completed_successfully"}
        }, name
        assert "ports" not in replica, name  # only through nginx
    # nginx comes up even while a replica is down, and routes around it
    assert services["nginx"]["depends_on"] == {
        name: {"condition": "service_started"} for name in replicas
    }


def test_default_services_do_not_need_a_profile(tmp_path: Path) -> None:
    services = Compose(copy_deploy(tmp_path)).resolved()["services"]
    profiled = {name for name, s in services.items() if s.get("profiles")}
    for name, service in services.items():
        if not service.get("profiles"):
            assert not set(service.get("depends_on", {})) & profiled, name


def test_replicas_nginx_and_prometheus_agree(tmp_path: Path) -> None:
    resolved = Compose(copy_deploy(tmp_path)).resolved("scale")
    services = resolved["services"]
    port = Settings().server.port  # the image sets the same, see test_compose
    (subnet_config,) = resolved["networks"]["scale"]["ipam"]["config"]
    subnet = ipaddress.ip_network(subnet_config["subnet"])
    addresses = {}
    for name, replica in _replicas(services).items():
        address = ipaddress.ip_address(replica["networks"]["scale"]["ipv4_address"])
        assert address in subnet, name
        # the single gateway's network too: Postgres and Prometheus find it by name
        assert "default" in replica["networks"], name
        addresses[name] = f"{address}:{port}"
    assert len(set(addresses.values())) == len(addresses)
    assert list(services["nginx"]["networks"]) == ["scale"]

    upstream = re.search(r"upstream gateways \{(.*?)\}", NGINX_CONF.read_text(), re.DOTALL)
    assert upstream is not None
    assert sorted([m[1] for m in UPSTREAM_SERVER.findall(upstream.group(1))]) == sorted(
        addresses.values()
    )

    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hybrid-gateway-replicas"]
    (discovery,) = job["dns_sd_configs"]
    assert sorted(discovery["names"]) == sorted(addresses)
    assert discovery["port"] == port


# --- promtool -----------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    copy = copy_deploy(tmp_path) / "prometheus" / "prometheus.yml"
    result = run([require_tool("promtool"), "check", "config", str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    copy = copy_deploy(tmp_path) / "prometheus" / "prometheus.yml"
    copy.write_text(copy.read_text().replace("type: A", "type: AAAAA"))
    result = run([require_tool("promtool"), "check", "config", str(copy)])
    assert result.returncode != 0
    assert "AAAAA" in result.stdout + result.stderr


# --- nginx -t -----------------------------------------------------------------


def test_nginx_accepts_its_config(tmp_path: Path) -> None:
    config = copy_deploy(tmp_path) / "nginx" / "nginx.conf"
    result = nginx_test(config)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_rejects_a_replica_it_cannot_resolve(tmp_path: Path) -> None:
    """Why nginx.conf lists addresses: a name in `upstream` must resolve when nginx starts."""
    config = copy_deploy(tmp_path) / "nginx" / "nginx.conf"
    text = config.read_text()
    (_, first, _), *_ = UPSTREAM_SERVER.findall(text)
    config.write_text(text.replace(first, "gateway-a:8080"))
    result = nginx_test(config)
    assert result.returncode != 0
    assert 'host not found in upstream "gateway-a:8080"' in result.stderr


def test_nginx_body_limit_is_the_gateways() -> None:
    (size,) = re.findall(r"client_max_body_size\s+(\d+)([km]?);", NGINX_CONF.read_text())
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size[1]]
    assert int(size[0]) * factor == Settings().limits.max_body_bytes
