"""deploy/Dockerfile parsed with Docker's own parser (PyPI `dockerfile`), the build context
(.dockerignore) and the container health check script."""

from __future__ import annotations

import http.server
import importlib.util
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dockerfile
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _load_healthcheck():  # deploy/healthcheck.py is a script copied into the images
    spec = importlib.util.spec_from_file_location("deploy_healthcheck",
                                                  ROOT / "deploy" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load_healthcheck()


@pytest.fixture(scope="module")
def commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages(commands: list[dockerfile.Command]) -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def test_multi_stage_with_a_pinned_base(commands):
    args = {c.value[0].split("=", 1)[0]: c.value[0].partition("=")[2]
            for c in commands if c.cmd == "ARG" and "=" in c.value[0]}
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    build, final = stages(commands)
    assert build[0].value[:3] == ("${PYTHON_IMAGE}", "AS", "build")
    assert final[0].value == ("${PYTHON_IMAGE}",)
    runs = " ".join(c.value[0] for c in build if c.cmd == "RUN")
    assert "uv sync --locked --no-dev --no-install-workspace" in runs
    assert "uv sync --locked --no-dev --no-editable" in runs
    uv = re.search(r"uv==([\d.]+)", runs)
    make = re.search(r"^UV_VERSION := ([\d.]+)", (ROOT / "Makefile").read_text(), re.M)
    assert uv and make and uv.group(1) == make.group(1), "one uv version for make and images"


def test_final_stage_is_small_non_root_and_checks_its_health(commands):
    final = stages(commands)[-1]
    kinds = [c.cmd for c in final]
    assert "RUN" not in kinds[kinds.index("COPY"):], "no build steps in the final stage"
    copies = [c for c in final if c.cmd == "COPY"]
    assert all(c.flags == ("--from=build",) for c in copies[:-1])
    assert copies[-1].value == ("deploy/healthcheck.py", "/opt/referral/healthcheck.py")
    (user,) = [c for c in final if c.cmd == "USER"]
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000
    (health,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert health.value == ("CMD", "python", "/opt/referral/healthcheck.py")
    env = " ".join(" ".join(c.value) for c in final if c.cmd == "ENV")
    assert "PYTHONDONTWRITEBYTECODE 1" in env and "ATTRIBUTION_DATA_DIR /tmp/" in env


def test_every_service_has_a_main_process_and_health_port(commands):
    run = next(c.value[0] for c in commands if c.cmd == "RUN" and "health-port" in c.value[0])
    table = dict(re.findall(r"(\w+)\) port=(\d+);", run))
    assert table == {"tracker": "8001", "rewards": "8002", "notifier": "8003",
                     "attribution": "8004"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    used = {s["build"]["args"]["SERVICES"].split()[0] for s in compose.values() if "build" in s}
    assert used <= set(table)


def test_build_context_leaves_out_local_state_and_secrets():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "**", "allow-list: everything is left out unless named"
    allowed = [line[1:] for line in lines if line.startswith("!")]
    for path in (".env", ".venv", ".data", ".git", "tests", "bench", ".tools"):
        assert not any(a == path or a.startswith(path + "/") for a in allowed), path
    commands = list(dockerfile.parse_file(str(DOCKERFILE)))
    for cmd in commands:
        if cmd.cmd == "COPY" and not cmd.flags:
            for source in cmd.value[:-1]:
                assert (ROOT / source).exists(), source


# --- deploy/healthcheck.py ---------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_script(probe_server, tmp_path, monkeypatch):
    assert healthcheck.check(probe_server, "/healthz") is True
    assert healthcheck.check(probe_server, "/readyz") is False  # 503
    assert healthcheck.main([str(probe_server)]) == 0
    assert healthcheck.main([str(probe_server), "/readyz"]) == 1
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert healthcheck.main([str(closed)]) == 1
    monkeypatch.setenv("HEALTH_PORT", str(probe_server))
    assert healthcheck.main([]) == 0

    port_file = tmp_path / "health-port"
    port_file.write_text("8004\n")
    assert healthcheck.resolve_port([], {}, port_file) == 8004
    assert healthcheck.resolve_port([], {"HEALTH_PORT": "8005"}, port_file) == 8005
    assert healthcheck.resolve_port(["8001"], {"HEALTH_PORT": "8005"}, port_file) == 8001
    with pytest.raises(SystemExit):
        healthcheck.resolve_port([], {}, tmp_path / "missing")
