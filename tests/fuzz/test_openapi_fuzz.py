"""Schemathesis against the tracker's and the rewards admin API's OpenAPI, each a real process.

Every operation of each schema gets positive and negative (schema-violating) requests, sent with
valid credentials so the handlers behind authentication are reached, and path ids that are
either real (a programme, referrer and reward that exist) or generated. Pass: no 5xx, and every
4xx is RFC 9457 problem details (``application/problem+json`` with a ``detail``). Bounded: a
fixed number of examples per operation (``FUZZ_EXAMPLES``), no shrinking database.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support import free_port
from tests.tracker.support import Programme, publish_registry, random_ref

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
# Not JSON APIs: the referral link answers an HTML page (CONTRACT: "unknown code → 404 page").
HTML_OPERATIONS = {("GET", "/r/{code}")}


def _check(response, label: str) -> None:
    status = response.status_code
    assert status < 500, f"{label}: {status} {response.text[:500]}"
    if 400 <= status < 500:
        ctype = response.headers.get("content-type") or [""]
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/problem+json"), (
            f"{label}: {status} with content-type {ctype!r}: {response.text[:300]}"
        )
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"], f"{label}: {body}"


def _fuzz(schema_url: str, headers_for, ids: dict[str, list[str]], skip=frozenset()) -> list[str]:
    schema = schemathesis.openapi.from_url(schema_url)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in skip:
            continue
        failures.extend(_fuzz_operation(operation, headers_for, ids))
    return failures


def _fuzz_operation(operation, headers_for, ids: dict[str, list[str]]) -> list[str]:
    label = f"{operation.method.upper()} {operation.path}"
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, real=st.booleans())
    def run(case, real) -> None:
        if real:  # reach the handlers behind the 404s with ids that exist
            for name in list(case.path_parameters or {}):
                if ids.get(name):
                    case.path_parameters[name] = ids[name][0]
        response = case.call(headers=headers_for(case), timeout=15)
        _check(
            response, f"{label} {case.method} {case.formatted_path} body={str(case.body)[:200]!r}"
        )

    try:
        run()
    except AssertionError as exc:
        return [str(exc)[:1500]]
    return []


@pytest.fixture
async def tracker_service(platform_env, run_service, kafka_bootstrap, topics):
    prog = Programme()
    code = random_ref("Z")
    await publish_registry(kafka_bootstrap, topics, prog.entry(), prog.code_entry(code))
    port = free_port()
    env = {**platform_env, "TRACKER_PORT": str(port), "LOG_LEVEL": "WARNING"}
    proc = await run_service("tracker", [".venv/bin/tracker"], env, port=port)
    return proc.url, prog, code


@pytest.fixture
async def rewards_service(platform_env, run_service, admin_token):
    port = free_port()
    env = {**platform_env, "REWARDS_PORT": str(port), "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [str(ROOT / ".venv/bin/rewards"), "migrate"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )
    proc = await run_service("rewards-api", [".venv/bin/rewards", "api"], env, port=port)
    auth = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=proc.url, headers=auth, timeout=10) as admin:
        created = await admin.post(
            "/v1/programs",
            json={
                "name": "Fuzz",
                "landing_url": "https://shop.example/",
                "currency": "EUR",
                "referrer_reward": {"kind": "cash", "amount": 1000},
            },
        )
        assert created.status_code == 201, created.text
        program_id = created.json()["id"]
        enrolled = await admin.post(
            f"/v1/programs/{program_id}/referrers",
            json={"external_id": "fuzz-1", "email": "f@example.com"},
        )
        assert enrolled.status_code == 201, enrolled.text
    return proc.url, {
        "program_id": [program_id],
        "referrer_id": [enrolled.json()["id"]],
        "reward_id": [f"rwd_{uuid.uuid4().hex[:12]}"],
    }


def test_tracker_openapi_fuzz(tracker_service) -> None:
    url, prog, code = tracker_service

    def headers_for(case):
        if case.path == "/v1/clicks":
            return {"X-Publishable-Key": prog.publishable_key}
        return {"Authorization": f"Bearer {prog.secret_key}"}

    # Found by this fuzzing: a body that is not UTF-8 was a 500 (now a 422 like bad JSON).
    for path in ("/v1/clicks", "/v1/conversions", "/v1/reversals", "/v1/batch"):
        answer = httpx.post(url + path, content=b"o,)\xf5\x989", headers={
            "Content-Type": "application/json", **headers_for(type("C", (), {"path": path}))})
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    failures = _fuzz(url + "/openapi.json", headers_for, {"code": [code]}, skip=HTML_OPERATIONS)
    assert not failures, "\n\n".join(failures)


def test_rewards_admin_openapi_fuzz(rewards_service, admin_token) -> None:
    url, ids = rewards_service
    failures = _fuzz(
        url + "/openapi.json", lambda case: {"Authorization": f"Bearer {admin_token}"}, ids
    )
    assert not failures, "\n\n".join(failures)
