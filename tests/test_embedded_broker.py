"""The embedded broker's start: it is ready only when its own process listens on its port.
A port picked free can be taken before the broker binds it (another test worker's broker
restarting there); then the start fails, and on_free_port takes another port. It runs on one
tokio worker thread unless the environment says otherwise."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from referral_devstack.broker import EmbeddedBroker, broker_env
from referral_devstack.net import PortTaken, free_port, port_open


@pytest.fixture
def someone_elses_listener() -> Iterator[socket.socket]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", free_port()))
    holder.listen()
    yield holder
    holder.close()


def test_a_broker_whose_port_is_taken_does_not_pass_for_started(
        someone_elses_listener: socket.socket) -> None:
    port = someone_elses_listener.getsockname()[1]
    with pytest.raises(PortTaken, match=f"127.0.0.1:{port}"):
        EmbeddedBroker(port).start(timeout=10)


def test_on_free_port_starts_a_broker_of_its_own() -> None:
    broker = EmbeddedBroker.on_free_port()
    try:
        assert port_open(broker.host, broker.port)
    finally:
        broker.stop()
    assert not port_open(broker.host, broker.port)


def test_the_broker_runs_on_one_worker_thread_unless_told_otherwise() -> None:
    assert broker_env({"PATH": "/bin"}) == {"PATH": "/bin", "TOKIO_WORKER_THREADS": "1"}
    assert broker_env({"TOKIO_WORKER_THREADS": "4"})["TOKIO_WORKER_THREADS"] == "4"
    broker = EmbeddedBroker.on_free_port()
    try:
        with open(f"/proc/{broker.pid}/environ", "rb") as environ:
            assert b"TOKIO_WORKER_THREADS=1" in environ.read().split(b"\0")
    finally:
        broker.stop()
