"""Connections without an A-ASSOCIATE-RQ take no association slot (edgeimg.serve.preassociation).

A real listener on a free port, raw sockets as the flood and the slow-loris peers, and real
associations (pynetdicom, and dcmtk's echoscu where installed) beside them.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.preassociation import DropLog, Pending
from edgeimg.serve.security import server_tls_context
from testsupport.peers import free_port, needs_dcmtk, poll, self_signed, start_serve, stop
from testsupport.rawdicom import VERIFICATION, Association, associate_rq, read_pdu

AET = "EDGE"
HOST = "127.0.0.1"
WAIT = 10.0  # generous: how long a test waits for something that must happen


@pytest.fixture
def serve(tmp_path):
    started: list[Listener] = []

    def start(**overrides) -> tuple[Listener, int]:
        values = dict(
            aet=AET,
            port=0,
            host=HOST,
            spool=tmp_path / "spool",
            min_free_mb=0,
            acse_timeout=5,
            dimse_timeout=5,
            network_timeout=30,
            artim=30,
        )
        values.update(overrides)
        listener = Listener(ServeConfig(**values))
        started.append(listener)
        return listener, listener.start()[1]

    yield start
    for listener in started:
        listener.stop(drain_timeout=2)
        listener.queue.close()


def _raw(port: int, source: str = HOST) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(WAIT)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    return sock


def _is_closed(sock: socket.socket, timeout: float = WAIT) -> bool:
    """True once the server has closed `sock` (within `timeout`), False if it stays open."""
    sock.settimeout(timeout)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _echo(port: int) -> bool:
    ae = AE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
    ae.add_requested_context("1.2.840.10008.1.1", ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title=AET)
    if not assoc.is_established:
        return False
    try:
        return assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def _trickle(port: int, stop: threading.Event) -> None:
    """A slow-loris peer: an A-ASSOCIATE-RQ one byte at a time, reconnecting when closed."""
    request = associate_rq()
    while not stop.is_set():
        try:
            with _raw(port) as sock:
                for byte in request[:-1]:
                    if stop.wait(0.05):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            continue


def test_real_peer_is_served_beside_a_flood_and_slow_loris_peers(serve):
    listener, port = serve(max_associations=2, pending_per_host=64)
    flood = [_raw(port) for _ in range(60)]
    stop = threading.Event()
    loris = [threading.Thread(target=_trickle, args=(port, stop)) for _ in range(4)]
    for thread in loris:
        thread.start()
    try:
        assert poll(lambda: listener.pending.count(HOST) >= 60, timeout=WAIT, every=0.02)
        for _ in range(5):
            assert _echo(port)  # each time a fresh association, none taken by the raw ones
        assert listener.pending.count(HOST) >= 60  # the flood is still there, still pending
    finally:
        stop.set()
        for thread in loris:
            thread.join()
        for sock in flood:
            sock.close()


@needs_dcmtk
def test_echoscu_is_served_beside_more_raw_connections_than_the_host_may_hold(serve):
    listener, port = serve(max_associations=1)
    flood = [_raw(port) for _ in range(listener.config.pending_per_host + 20)]
    try:
        result = subprocess.run(
            ["echoscu", "-aec", AET, HOST, str(port)], capture_output=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
    finally:
        for sock in flood:
            sock.close()


def test_idle_and_trickling_connections_are_closed_by_the_artim_timer(serve):
    listener, port = serve(artim=0.5)
    idle, trickling = _raw(port), _raw(port)
    request = associate_rq()
    with idle, trickling:
        started = time.monotonic()
        try:
            for byte in request[:-1]:  # still sending, but not a whole request in time
                trickling.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass  # closed while trickling
        assert _is_closed(idle) and _is_closed(trickling)
        assert time.monotonic() - started < WAIT
    assert listener.pending.closed["artim"] == 2
    assert _echo(port)


def test_the_host_bound_closes_the_oldest_raw_connections_not_slots(serve):
    listener, port = serve(max_associations=1, pending_per_host=4)
    sockets = [_raw(port) for _ in range(10)]
    try:
        assert all(_is_closed(sock) for sock in sockets[:6])  # the oldest six
        assert not any(_is_closed(sock, timeout=0.3) for sock in sockets[6:])
        assert listener.pending.count(HOST) == 4
        assert _echo(port)  # the one association slot was never touched
    finally:
        for sock in sockets:
            sock.close()


def test_the_total_bound_closes_the_oldest_of_the_busiest_host(serve):
    listener, port = serve(pending_per_host=3, pending_total=5)
    busy = [_raw(port, "127.0.0.2") for _ in range(3)]
    quiet = [_raw(port, "127.0.0.3") for _ in range(2)]
    assert poll(lambda: listener.pending.count() == 5, timeout=WAIT, every=0.02)
    newcomer = _raw(port, "127.0.0.3")
    try:
        assert _is_closed(busy[0])
        assert not any(_is_closed(sock, timeout=0.3) for sock in [*busy[1:], *quiet, newcomer])
        assert listener.pending.count("127.0.0.2") == 2
    finally:
        for sock in [*busy, *quiet, newcomer]:
            sock.close()


def test_a_request_sent_whole_reaches_pynetdicom_and_is_answered(serve):
    _, port = serve()
    with _raw(port) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC


def test_leave_says_whether_the_connection_was_closed_meanwhile():
    pending = Pending(artim=30, per_host=1, total=10)
    ours, theirs = socket.socketpair()
    try:
        with ours, theirs:
            first = pending.admit(ours, "h")
            second = pending.admit(theirs, "h")  # over the bound: the first is closed
            assert ours.recv(1) == b""
            assert not pending.leave(first)
            assert pending.leave(second) and pending.count() == 0
    finally:
        pending.stop()


def test_serve_takes_the_artim_from_its_config_file(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text("[serve]\nartim = 0.5\nmax-pending-per-host = 8\n")
    port = free_port()
    process = start_serve(
        "--aet",
        AET,
        "--host",
        HOST,
        "--config",
        str(config),
        "--spool",
        str(tmp_path / "spool"),
        port=port,
        cwd=tmp_path,
    )
    try:
        with _raw(port) as idle:
            assert _is_closed(idle)
        assert _echo(port)
    finally:
        stop(process)
    assert '"reason": "artim"' in (tmp_path / "serve.log").read_text()


def test_a_flood_of_drops_is_logged_as_counts_not_lines(capfd):
    drops = DropLog(every=0.2)
    for _ in range(4):
        drops.dropped("h", "bound")  # the first is written at once, three are held back
    drops.dropped("other", "bound")  # hosts and reasons are counted apart
    time.sleep(0.25)
    drops.flush()  # the reaper does this now and then
    drops.flush()  # nothing more was held back
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [(line["host"], line["count"]) for line in lines] == [("h", 1), ("other", 1), ("h", 3)]


def test_silent_tls_clients_are_closed_by_artim_while_a_tls_peer_associates(serve, tmp_path):
    key, cert = self_signed(tmp_path)
    listener, port = serve(tls=server_tls_context(cert, key), artim=1)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    silent = [_raw(port) for _ in range(5)]  # connect, never send a ClientHello
    try:
        with Association(port, [(VERIFICATION, ExplicitVRLittleEndian)], tls=context) as legit:
            assert legit.echo() == 0
        assert all(_is_closed(sock) for sock in silent)
        assert listener.pending.closed["artim"] == 5
    finally:
        for sock in silent:
            sock.close()
