"""Tracker benchmark: how close a broker-acknowledged ``POST /v1/conversions`` comes to a
bare FastAPI endpoint with the same body, and that no acknowledged event is lost.

In one run on this machine: an embedded broker on a free port, the real tracker (console
script ``tracker``, one uvicorn worker) and the baseline (:mod:`bench.tracker_baseline`,
same uvicorn options) each on a free port, driven by the same load generator (``wrk``:
1 thread, 32 connections; an asyncio client if wrk cannot be had) for a fixed duration.
Baseline and tracker runs alternate for a few rounds (the machine is small and shared) and
the medians are kept. Then 500-event ``POST /v1/batch`` requests, and finally the whole
conversions topic is read back and every acknowledged conversion id looked up.

Figures: ``tracker.baseline_rps``, ``tracker.single_rps``, ``tracker.single_p99_ms``,
``tracker.baseline_p99_ms``, ``tracker.ratio`` (target ≥ 0.8: the median over the rounds of
single/baseline, each round's two runs back to back),
``tracker.baseline_cpu_us`` and ``tracker.single_cpu_us`` (server CPU per request, less
sensitive to other load on the machine than req/s),
``tracker.batch_events_per_s`` (target ≥ 30,000), ``tracker.acked_events``,
``tracker.lost_events`` (must be 0; a loss fails the run).

``BENCH_TRACKER_SECONDS`` (6) and ``BENCH_TRACKER_ROUNDS`` (4) shorten or lengthen it;
``BENCH_TRACKER_PYTHONPATH`` runs the tracker from other sources (e.g. an older commit's
``services/tracker/src``, ``libs/*/src`` exported with ``git archive``) against the same
baseline, for before/after figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.net import free_port
from referral_events import (
    ProgramEntry,
    ReferralCodeEntry,
    TopicRegistry,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import key_hash
from referral_kit.kafka import ensure_topics
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .results import process_cpu_seconds, record

COMMAND = "make bench"
DURATION = float(os.environ.get("BENCH_TRACKER_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_TRACKER_ROUNDS", "4"))
WARMUP = 2.0
CONNECTIONS = 32
BATCH_SIZE = 500
BATCH_CONNECTIONS = 4
BIN = Path(sys.executable).parent  # the venv's bin: python, tracker
TARGET_RATIO = 0.8
TARGET_BATCH = 30_000

console = Console()

# One conversion as a shop's checkout reports it; {id} makes every request a new order.
CONVERSION = ('{{"conversion_id":"{id}","code":"{code}","customer":{{"id":"cust-{n}",'
              '"email":"buyer{n}@example.com","is_new":true}},"amount":4999,"currency":"EUR"}}')

CODES = 16  # referral codes the conversions name, <stem>0 … <stem>15

WRK_SCRIPT = r"""
-- args: id prefix, secret key, referral code stem, number of codes. Every request is a
-- new conversion id <prefix>-<thread>-<n> of one of CODES referral codes (spread over the
-- partitions, as a shop's orders are); done() prints how many each thread generated, and
-- the figures.
local threads = {}
counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  CODES = tonumber(args[4])
  prefix = args[1] .. "-" .. tid .. "-"
  code = args[3]
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[2]}
end

function request()
  counter = counter + 1
  local n = tostring(counter)
  local body = '{"conversion_id":"' .. prefix .. n .. '","code":"' .. code .. (counter % CODES) ..
    '","customer":{"id":"cust-' .. n .. '","email":"buyer' .. n ..
    '@example.com","is_new":true},"amount":4999,"currency":"EUR"}'
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local generated = {}
  for i, t in ipairs(threads) do generated[i] = tostring(t:get("counter")) end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"status_errors":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d,"p50_us":%.0f,"p99_us":%.0f,"generated":[%s]}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(generated, ",")))
end
"""


@dataclass
class LoadRun:
    """One timed run of the load generator against one server."""

    target: str
    requests: int  # completed responses
    acked: int  # 2xx responses
    errors: int  # non-2xx responses, socket errors and timeouts
    seconds: float
    p50_ms: float
    p99_ms: float
    generated: list[str] = field(default_factory=list)  # every conversion id sent
    acked_ids: set[str] | None = None  # exactly which were acknowledged, when known
    cpu_seconds: float = 0.0  # used by the server process during the run

    @property
    def cpu_us(self) -> float:
        """Server CPU per answered request, in µs."""
        return 1e6 * self.cpu_seconds / max(self.requests, 1)

    @property
    def durable(self) -> bool:
        """Whether its acknowledgements promise events on the topic (not the baseline's)."""
        return "baseline" not in self.target

    @property
    def rps(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (all threads)."""
        return process_cpu_seconds(self.proc.pid) or 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# -- load generators ----------------------------------------------------------------------

def find_wrk() -> str | None:
    """wrk on the PATH; installed with apt-get when this runs as root on Debian/Ubuntu."""
    if path := shutil.which("wrk"):
        return path
    if os.environ.get("BENCH_NO_INSTALL") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    console.print("wrk is not installed; installing it with apt-get (Debian package wrk)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-qq", "wrk"],
                ["sh", "-c", "apt-get update -qq && apt-get install -y -qq wrk"]):
        if subprocess.run(cmd, env=env, capture_output=True,  # noqa: S603
                          check=False).returncode == 0:
            break
    return shutil.which("wrk")


class Wrk:
    """``wrk -t1 -c32`` with a Lua script that makes every conversion id new."""

    name = "wrk -t1 -c32"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.script = workdir / "conversions.lua"
        self.script.write_text(WRK_SCRIPT)

    def run(self, target: str, url: str, *, seconds: float, prefix: str, secret_key: str,
            code: str) -> LoadRun:
        cmd = [self.binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(self.script), f"{url}/v1/conversions", "--", prefix, secret_key, code,
               str(CODES)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,  # noqa: S603
                             timeout=seconds + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
        r = json.loads(line.removeprefix("WRK_RESULT "))
        socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
        # wrk calls request() of the first thread once before the run, to check the script
        # (script_verify_request): that first id is never sent.
        generated = [f"{prefix}-{tid}-{n}" for tid, count in enumerate(r["generated"], 1)
                     for n in range(2 if tid == 1 else 1, int(count) + 1)]
        return LoadRun(target=target, requests=r["requests"],
                       acked=r["requests"] - r["status_errors"],
                       errors=r["status_errors"] + socket_errors,
                       seconds=r["duration_us"] / 1e6, p50_ms=r["p50_us"] / 1000,
                       p99_ms=r["p99_us"] / 1000, generated=generated)


class AsyncClient:
    """The fallback generator when wrk cannot be had: 32 keep-alive connections from
    asyncio streams with pre-formatted requests (heavier than wrk on the same cores)."""

    name = "asyncio client, 32 connections"

    def run(self, target: str, url: str, *, seconds: float, prefix: str, secret_key: str,
            code: str) -> LoadRun:
        return asyncio.run(self._run(target, int(url.rsplit(":", 1)[1]), seconds, prefix,
                                     secret_key, code))

    async def _run(self, target: str, port: int, seconds: float, prefix: str,
                   secret_key: str, code: str) -> LoadRun:
        generated: list[str] = []
        acked: set[str] = set()
        latencies: list[float] = []
        errors = 0
        head = (f"POST /v1/conversions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {secret_key}\r\nContent-Type: application/json\r\n")
        started = time.perf_counter()
        deadline = started + seconds

        async def connection(conn: int) -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            n = 0
            try:
                while time.perf_counter() < deadline:
                    n += 1
                    conversion_id = f"{prefix}-{conn}-{n}"
                    body = CONVERSION.format(id=conversion_id, code=f"{code}{n % CODES}",
                                             n=n).encode()
                    generated.append(conversion_id)
                    sent = time.perf_counter()
                    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                    header = await reader.readuntil(b"\r\n\r\n")
                    status = int(header[9:12])
                    length = 0
                    for line in header.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    await reader.readexactly(length)
                    latencies.append(time.perf_counter() - sent)
                    if 200 <= status < 300:
                        acked.add(conversion_id)
                    else:
                        errors += 1
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
            finally:
                writer.close()

        await asyncio.gather(*(connection(c) for c in range(1, CONNECTIONS + 1)))
        elapsed = time.perf_counter() - started
        latencies.sort()

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
                if latencies else 0.0

        return LoadRun(target=target, requests=len(latencies), acked=len(acked), errors=errors,
                       seconds=elapsed, p50_ms=pct(0.5), p99_ms=pct(0.99), generated=generated,
                       acked_ids=acked)


async def batch_load(url: str, *, seconds: float, prefix: str, secret_key: str, code: str
                     ) -> LoadRun:
    """``POST /v1/batch`` with 500 new conversions each from a few connections; which
    events were accepted is read from the per-event results."""
    generated: list[str] = []
    acked: set[str] = set()
    latencies: list[float] = []
    errors = 0
    sequence = iter(range(1, 1 << 62))
    headers = {"Authorization": f"Bearer {secret_key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    deadline = started + seconds

    async def connection(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            ids = [f"{prefix}-{next(sequence)}" for _ in range(BATCH_SIZE)]
            body = '{"events":[' + ",".join(
                '{"type":"conversion",' + CONVERSION.format(id=i, code=f"{code}{n % CODES}",
                                                            n=n)[1:]
                for n, i in enumerate(ids)) + "]}"
            generated.extend(ids)
            sent = time.perf_counter()
            response = await client.post("/v1/batch", content=body, headers=headers)
            latencies.append(time.perf_counter() - sent)
            if response.status_code >= 300:
                errors += 1
                continue
            for conversion_id, result in zip(ids, _batch_results(response.json()), strict=True):
                if _accepted(result):
                    acked.add(conversion_id)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=BATCH_CONNECTIONS,
                          max_keepalive_connections=BATCH_CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(connection(client) for _ in range(BATCH_CONNECTIONS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies \
        else 0.0
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    return LoadRun(target="batch", requests=len(latencies), acked=len(acked), errors=errors,
                   seconds=elapsed, p50_ms=p50, p99_ms=p99, generated=generated,
                   acked_ids=acked)


def _batch_results(doc: object) -> list[object]:
    if isinstance(doc, dict):
        for key in ("results", "events", "items"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
    if isinstance(doc, list):
        return doc
    raise RuntimeError(f"unexpected /v1/batch answer: {str(doc)[:300]}")


def _accepted(result: object) -> bool:
    if not isinstance(result, dict):
        return False
    status = result.get("status")
    return status in ("accepted", 202) or (isinstance(status, int) and 200 <= status < 300
                                           and result.get("result", "accepted") == "accepted")


# -- the platform pieces ------------------------------------------------------------------

async def seed_registry(bootstrap: str, topics: TopicRegistry) -> tuple[str, str]:
    """Create the topics and publish one active programme with CODES referral codes;
    returns the programme's secret key and the codes' stem."""
    await ensure_topics(bootstrap, topics.all())
    secret_key = f"sk_bench{uuid.uuid4().hex}"
    code = f"BENCH{uuid.uuid4().hex[:8]}"
    program = ProgramEntry(
        program_id=f"prg_bench{uuid.uuid4().hex[:8]}", name="Benchmark shop",
        landing_url="https://shop.example/", currency="EUR",
        publishable_key_hash=key_hash(f"pk_bench{uuid.uuid4().hex}"),
        secret_key_hash=key_hash(secret_key), version=1, updated_at=utcnow())
    entries = [ReferralCodeEntry(code=f"{code}{n}", program_id=program.program_id,
                                 referrer_id=f"ref_bench{n}", referrer_external_id=f"bench-{n}",
                                 version=1, updated_at=utcnow()) for n in range(CODES)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for item in (program, *entries):
            await producer.send_and_wait(topics.registry.name, encode(new_event(item,
                                         source="bench")), key=item.registry_key().encode())
    finally:
        await producer.stop()
    return secret_key, code


def start_server(name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str,
                 logs: Path) -> Server:
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                start_new_session=True)
    server = Server(name, port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} was not ready within 60 s:\n{server.tail()}")


async def conversion_ids_on_topic(bootstrap: str, topic: str, partitions: int) -> set[str]:
    """Every conversion id on ``topic``, read from the beginning up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20)
    await consumer.start()
    found: set[str] = set()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500,
                                                       max_records=20_000)).items():
                for rec in records:
                    found.add(json.loads(rec.value)["data"]["conversion_id"])
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise RuntimeError(f"could not read {topic} to its end within 120 s")
    finally:
        await consumer.stop()
    return found


def lost_in(run: LoadRun, found: set[str]) -> tuple[int, bool]:
    """(acknowledged events of ``run`` missing from the topic, whether that is exact).

    wrk does not say which request got which answer; when every id it generated is on
    the topic nothing acknowledged is missing (exact), otherwise the count is an upper
    bound (missing ids, at most the acknowledged count)."""
    if run.acked_ids is not None:
        return len(run.acked_ids - found), True
    missing = sum(1 for i in run.generated if i not in found)
    return min(missing, run.acked), missing == 0


# -- the benchmark ------------------------------------------------------------------------

@contextlib.contextmanager
def platform(workdir: Path) -> Iterator[tuple[str, TopicRegistry, Server, Server, str, str]]:
    broker = EmbeddedBroker.on_free_port(log_path=workdir / "broker.log")
    servers: list[Server] = []
    try:
        topics = TopicRegistry(f"bench{uuid.uuid4().hex[:8]}.")
        secret_key, code = asyncio.run(seed_registry(broker.bootstrap, topics))
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
               **CLIENT_ENV, "TOPIC_PREFIX": topics.prefix,
               "TOPIC_PARTITIONS": str(topics.conversions.partitions),
               "ENVIRONMENT": "local", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "console",
               # one client drives one key far past a shop's rate: the budget (still checked
               # on every request) must not refuse it
               "TRACKER_RATE_LIMIT_SECRET": "100000000/second"}
        tracker_port, baseline_port = free_port(), free_port()
        env["TRACKER_HOST"], env["TRACKER_PORT"] = "127.0.0.1", str(tracker_port)
        tracker_env = dict(env)
        if other := os.environ.get("BENCH_TRACKER_PYTHONPATH"):  # another tracker's sources
            tracker_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (other, env.get("PYTHONPATH")) if p)
        servers.append(start_server("tracker", [str(BIN / "tracker")], tracker_env,
                                    tracker_port, "/readyz", workdir))
        servers.append(start_server(
            "baseline", [sys.executable, "-m", "bench.tracker_baseline", str(baseline_port)],
            {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            baseline_port, "/healthz", workdir))
        yield broker.bootstrap, topics, servers[0], servers[1], secret_key, code
    finally:
        for server in servers:
            server.stop()
        broker.stop()


def has_batch_endpoint(server: Server) -> bool:
    try:
        spec = httpx.get(f"{server.url}/openapi.json", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return "/v1/batch" in spec.get("paths", {})


def main() -> int:
    wrk = find_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-tracker-"))
    generator: Wrk | AsyncClient = Wrk(wrk, workdir) if wrk else AsyncClient()
    if not wrk:
        console.print("[yellow]wrk not available: using the asyncio client (it shares the "
                      "cores with the servers, so both figures come out lower)[/yellow]")
    runs: list[LoadRun] = []
    failed = False
    with platform(workdir) as (bootstrap, topics, tracker, baseline, secret_key, code):
        with_batch = has_batch_endpoint(tracker)
        steps = 2 + 2 * ROUNDS + (2 if with_batch else 0) + 1
        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                            console=console)
        with progress:
            task = progress.add_task("tracker bench", total=steps)

            def load(server: Server, target: str, seconds: float) -> LoadRun:
                progress.update(task, description=f"{target}: {seconds:g} s of load")
                cpu = server.cpu_seconds()
                run = generator.run(target, server.url, seconds=seconds,
                                    prefix=f"{target}{len(runs)}-{uuid.uuid4().hex[:6]}",
                                    secret_key=secret_key, code=code)
                run.cpu_seconds = cpu = server.cpu_seconds() - cpu
                runs.append(run)
                progress.advance(task)
                if not target.startswith("warm"):
                    # CPU per request: the application's cost, less sensitive than req/s
                    # to other processes on the machine (which leave the server idle).
                    progress.console.print(
                        f"  {target:<8} {run.rps:8,.0f} req/s  p50 {run.p50_ms:6.1f} ms  "
                        f"p99 {run.p99_ms:6.1f} ms  errors {run.errors}  server CPU "
                        f"{100 * cpu / run.seconds:3.0f}%, {run.cpu_us:4.0f} µs/request")
                return run

            load(baseline, "warm-baseline", WARMUP)
            load(tracker, "warm-tracker", WARMUP)
            pairs: list[tuple[LoadRun, LoadRun]] = []
            for r in range(ROUNDS):
                # alternate the order so drift of the machine's load hits both alike
                if r % 2 == 0:
                    b = load(baseline, "baseline", DURATION)
                    t = load(tracker, "tracker", DURATION)
                else:
                    t = load(tracker, "tracker", DURATION)
                    b = load(baseline, "baseline", DURATION)
                pairs.append((b, t))

            batch: LoadRun | None = None
            if with_batch:
                for target, seconds in (("warm-batch", WARMUP), ("batch", DURATION)):
                    progress.update(task, description=f"{target}: {seconds:g} s of 500-event "
                                    "batches")
                    batch = asyncio.run(batch_load(
                        tracker.url, seconds=seconds, secret_key=secret_key, code=code,
                        prefix=f"{target}-{uuid.uuid4().hex[:6]}"))
                    runs.append(batch)
                    progress.advance(task)
                assert batch is not None
                progress.console.print(
                    f"  batch    {batch.rps:8,.0f} events/s  "
                    f"p99 {batch.p99_ms:6.1f} ms per request  errors {batch.errors}")
            else:
                progress.console.print("[yellow]  POST /v1/batch is not served by this tracker "
                                       "yet: tracker.batch_events_per_s not measured[/yellow]")

            progress.update(task, description="reading the conversions topic back")
            time.sleep(1.0)  # requests cut off by the generator's end may still be in flight
            found = asyncio.run(conversion_ids_on_topic(bootstrap, topics.conversions.name,
                                                        topics.conversions.partitions))
            progress.advance(task)

    lost, exact = 0, True
    for run in (r for r in runs if r.durable):
        n, run_exact = lost_in(run, found)
        lost += n
        exact = exact and run_exact
        if n:
            missing = [i for i in run.generated if i not in found]
            console.print(f"[red]{run.target}: {n} missing of {len(run.generated):,} sent, "
                          f"{run.acked:,} acknowledged, {run.errors} errors; e.g. "
                          f"{', '.join(missing[:8])}[/red]")
    acked = sum(r.acked for r in runs if r.durable)
    errors = sum(r.errors for r in runs if "batch" not in r.target)

    baseline_rps = statistics.median(b.rps for b, _ in pairs)
    single_rps = statistics.median(t.rps for _, t in pairs)
    # Each round's pair ran back to back: their ratio is immune to the machine's load
    # drifting between rounds, which the ratio of the two medians is not.
    ratio = statistics.median(t.rps / b.rps for b, t in pairs if b.rps)
    figures: dict[str, float | int] = {
        "tracker.baseline_rps": round(baseline_rps, 1),
        "tracker.baseline_p99_ms": round(statistics.median(b.p99_ms for b, _ in pairs), 2),
        "tracker.single_rps": round(single_rps, 1),
        "tracker.single_p99_ms": round(statistics.median(t.p99_ms for _, t in pairs), 2),
        "tracker.ratio": round(ratio, 3),
        "tracker.baseline_cpu_us": round(statistics.median(b.cpu_us for b, _ in pairs), 1),
        "tracker.single_cpu_us": round(statistics.median(t.cpu_us for _, t in pairs), 1),
        "tracker.acked_events": acked,
        "tracker.lost_events": lost,
    }
    if batch is not None:
        figures["tracker.batch_events_per_s"] = round(batch.acked / batch.seconds, 1)
    record(figures, command=COMMAND if len(sys.argv) < 2 else ".venv/bin/python -m bench tracker")

    console.print(f"generator: {generator.name}; {ROUNDS} rounds of {DURATION:g} s; "
                  f"round ratios: " + ", ".join(f"{t.rps / b.rps:.2f}" for b, t in pairs))
    ratio = figures["tracker.ratio"]
    console.print(f"ratio {ratio:.3f} (target ≥ {TARGET_RATIO}: "
                  f"{'met' if ratio >= TARGET_RATIO else 'missed'})")
    if batch is not None:
        per_s = figures["tracker.batch_events_per_s"]
        console.print(f"batch {per_s:,.0f} events/s (target ≥ {TARGET_BATCH:,}: "
                      f"{'met' if per_s >= TARGET_BATCH else 'missed'})")
    if errors:
        console.print(f"[yellow]{errors} single requests were not acknowledged (errors or "
                      "timeouts); they do not count as acknowledged[/yellow]")
    if lost:
        failed = True
        console.print(f"[red]{lost} acknowledged events are not on the topic"
                      f"{'' if exact else ' (upper bound: wrk cannot say which were acked)'}"
                      "[/red]")
    else:
        console.print(f"lost events: 0 of {acked:,} acknowledged")
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
