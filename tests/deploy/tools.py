"""The real tools the deployment files are checked with, and a copy of deploy/ to run them on.

docker-compose (Debian's `docker-compose`, 1.29), promtool (Debian's `prometheus`)
and nginx (Debian's `nginx`): `make deploy-tools` installs them. Without one, the
tests that need it skip with the reason; ``GATEWAY_TEST_REQUIRE_TOOLS=1`` (set by
.ci/run) turns that skip into a failure, so CI always runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.auth.keys import new_key

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
REQUIRE_VARIABLE = "GATEWAY_TEST_REQUIRE_TOOLS"
PACKAGES = {"docker-compose": "docker-compose", "promtool": "prometheus", "nginx": "nginx"}
# A replica in nginx.conf's upstream block: "server ADDRESS ..." (not "server {").
UPSTREAM_SERVER = re.compile(r"^([ \t]*server[ \t]+)([^\s;]+:\d+)([\s;])", re.MULTILINE)
# Guards against a hang, never part of what is asserted.
GUARD_S = 30.0


def require_tool(name: str) -> str:
    """The tool's path; skips the test without it (fails when the tools are required)."""
    path = shutil.which(name) or (
        # Debian installs nginx in /usr/sbin, which a non-root PATH may lack.
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").is_file() else None
    )
    if path is None:
        reason = (
            f"{name} is not installed (Debian package {PACKAGES[name]}; `make deploy-tools` "
            "installs it)"
        )
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{reason}; {REQUIRE_VARIABLE}=1: the deployment checks must run")
        pytest.skip(reason)
    return path


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # No GATEWAY_* or COMPOSE_* from the test's own environment leaks into the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "COMPOSE_"))}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def copy_deploy(destination: Path, env: dict[str, str] | None = None) -> Path:
    """deploy/ copied under ``destination`` with a .env made from .env.example.

    The compose file's build context is `..` and its env_file `.env` (git-ignored):
    compose refuses a file whose env_file or build context does not exist.
    ``env`` sets (or uncomments) variables of .env.example in the copy. The admin
    key Prometheus scrapes with (secrets/, git-ignored) is a fresh one in the copy:
    promtool refuses a config whose credentials_file does not exist.
    """
    copy = destination / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns(".env", "secrets"))
    (copy / "secrets").mkdir()
    (copy / "secrets" / "gateway_admin_key").write_text(new_key() + "\n")
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    for name, value in (env or {}).items():
        pattern = re.compile(rf"^#?\s*{re.escape(name)}=")
        matches = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert matches, f"{name} is not in .env.example"
        lines[matches[-1]] = f"{name}={value}"
    (copy / ".env").write_text("\n".join(lines) + "\n")
    return copy


@dataclass(frozen=True)
class Compose:
    """docker-compose run on a copy of deploy/."""

    directory: Path

    def command(self, *args: str, profile: str | None = None) -> list[str]:
        profiles = ["--profile", profile] if profile else []
        return [require_tool("docker-compose"), "-f", "docker-compose.yml", *profiles, *args]

    def check(self, profile: str | None = None) -> subprocess.CompletedProcess[str]:
        """`config -q`: the file is valid for this profile (exit status 0) or not."""
        return run(self.command("config", "-q", profile=profile), cwd=self.directory)

    def resolved(self, profile: str | None = None) -> dict[str, Any]:
        """The configuration as compose resolves it: variables substituted, env_file merged."""
        result = run(self.command("config", profile=profile), cwd=self.directory)
        assert result.returncode == 0, result.stderr
        loaded: dict[str, Any] = yaml.safe_load(result.stdout)
        return loaded


def nginx_test(config: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on ``config``, with pid file and start-up log beside it, so no root paths."""
    prefix = config.parent
    return run(
        [
            require_tool("nginx"),
            "-t",
            "-p",
            f"{prefix}/",
            "-c",
            str(config),
            "-e",
            str(prefix / "error.log"),
            "-g",
            f"pid {prefix / 'nginx.pid'};",
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_address() -> str:
    """An address on which nothing listens: connections are refused."""
    return f"127.0.0.1:{free_port()}"


@dataclass(frozen=True)
class Nginx:
    url: str
    log: Path

    def access_log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@contextmanager
def running_nginx(directory: Path, upstreams: list[str]) -> Iterator[Nginx]:
    """The shipped nginx.conf, listening on loopback and proxying to ``upstreams``.

    Only the listen port and the replicas' addresses differ from the file in
    deploy/ (compose gives the replicas fixed addresses on its own network).
    """
    binary = require_tool("nginx")
    text = NGINX_CONF.read_text()
    assert len(UPSTREAM_SERVER.findall(text)) == len(upstreams)
    replacements = iter(upstreams)
    text = UPSTREAM_SERVER.sub(lambda m: f"{m[1]}{next(replacements)}{m[3]}", text)
    port = free_port()
    assert text.count("listen 8080;") == 1
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    prefix = directory / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(text)
    log, errors = prefix / "stdout.log", prefix / "stderr.log"
    with log.open("wb") as stdout, errors.open("wb") as stderr:
        process = subprocess.Popen(
            [
                binary,
                "-p",
                f"{prefix}/",
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "error.log"),
                "-g",
                f"daemon off; pid {prefix / 'nginx.pid'};",
            ],
            stdout=stdout,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + GUARD_S
        while True:
            assert process.poll() is None, errors.read_text()
            try:
                httpx.get(f"{url}/nginx-health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield Nginx(url, log)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        try:
            process.wait(timeout=GUARD_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors.read_text()
