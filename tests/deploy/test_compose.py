"""docker-compose.yml checked without a Docker engine: valid against the compose
specification (check-jsonschema's vendored compose-spec schema), a healthcheck on every
service, nothing that stops `--scale`, dependencies that can be met, settings wired as the
services read them, and the nginx proxy pointing at what the services listen on."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
OURS = {"init", "tracker", "attribution", "rewards-api", "rewards-worker", "notifier"}
SCALED = {"tracker", "attribution", "rewards-api", "rewards-worker", "notifier"}
LISTENS = {"tracker": ("TRACKER_PORT", 8001), "rewards-api": ("REWARDS_PORT", 8002),
           "notifier": ("NOTIFIER_PORT", 8003), "attribution": ("ATTRIBUTION_WEB_PORT", 8004),
           "rewards-worker": ("REWARDS_WORKER_PORT", 8005)}
HOSTS = {"tracker": "TRACKER_HOST", "rewards-api": "REWARDS_HOST", "notifier": "NOTIFIER_HOST",
         "attribution": "ATTRIBUTION_WEB_HOST", "rewards-worker": "REWARDS_WORKER_HOST"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # resolves the `<<:` merge keys


def test_valid_against_the_compose_specification():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_has_a_healthcheck(services):
    one_shot = {dep for svc in services.values()
                for dep, cond in svc.get("depends_on", {}).items()
                if cond["condition"] == "service_completed_successfully"}
    assert one_shot == {"init"}
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if name in one_shot:
            # A job that exits: the image's HEALTHCHECK is turned off, completion gates.
            assert check == {"disable": True} and svc["restart"] == "no"
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_scaled_services_have_no_fixed_name_or_host_port(services):
    for name in SCALED:
        svc = services[name]
        assert "container_name" not in svc, name
        assert "ports" not in svc, f"{name}: a host port allows one replica only"
        assert "hostname" not in svc, name
    # The only published application ports belong to the proxy.
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"proxy", "mailpit", "kafka"}


def test_dependencies_can_be_met(services):
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert services[dep]["healthcheck"].get("disable") is not True
    for name in SCALED:
        deps = services[name]["depends_on"]
        assert deps["init"] == {"condition": "service_completed_successfully"}
        assert deps["kafka"] == {"condition": "service_healthy"}
    assert services["init"]["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                              "postgres": {"condition": "service_healthy"}}
    assert set(services["proxy"]["depends_on"]) == {"tracker", "rewards-api", "notifier"}


def test_infrastructure_images_are_pinned(services):
    for svc in services.values():
        image = svc["image"]
        if "build" in svc:
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d+\.\d+", tag), image
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["volumes"] and services["postgres"]["image"].startswith(
        "postgres:")


def test_services_build_from_the_dockerfile_and_run_their_console_scripts(services):
    scripts: dict[str, set[str]] = {}
    for pyproject in ROOT.glob("*/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        scripts[project["name"].removeprefix("referral-")] = set(project.get("scripts", {}))
    for name in OURS:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        packages = svc["build"]["args"]["SERVICES"].split()
        available = set().union(*(scripts[p] for p in packages), scripts["kit"])
        command = svc["command"]
        commands = (re.findall(r"(?:^|&&)\s*([\w-]+)", command[2]) if command[0] == "sh"
                    else [command[0]])
        for program in commands:
            assert program in available, f"{name}: {program} not installed by {packages}"
        assert svc["read_only"] is True and any(t.startswith("/tmp") for t in svc["tmpfs"])
        assert svc["env_file"] == [{"path": ".env", "required": False}]


def test_processes_listen_where_the_healthchecks_and_the_proxy_look(services):
    for name, (port_var, port) in LISTENS.items():
        env = services[name]["environment"]
        assert env[port_var] == str(port), name
        assert env[HOSTS[name]] == "0.0.0.0", f"{name} must listen beyond its loopback"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/opt/referral/healthcheck.py"]
        assert test[3:] == [str(port), "/readyz"], name
    conf = (ROOT / "deploy" / "proxy" / "nginx.conf").read_text()
    upstreams = dict(re.findall(r"server ([\w-]+):(\d+) resolve", conf))
    assert upstreams == {"tracker": "8001", "rewards-api": "8002", "notifier": "8003"}
    assert "resolver 127.0.0.11" in conf  # Docker's DNS: one address per replica
    listens = set(re.findall(r"listen (\d+);", conf))
    proxy = services["proxy"]
    published = {p.rpartition(":")[2] for p in proxy["ports"]}
    assert published == {"8001", "8002", "8003"} and published <= listens
    assert proxy["volumes"] == ["./deploy/proxy/nginx.conf:/etc/nginx/nginx.conf:ro"]


def test_compose_variables_are_documented():
    text = COMPOSE.read_text()
    variables = set(re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", text))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(),
                                re.M))
    assert variables <= documented, variables - documented
