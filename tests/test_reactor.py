"""pynetdicom's reactor loops wake on events instead of polling (edgeimg.serve.reactor)."""

from __future__ import annotations

import gc
import os
import queue
import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from edgeimg.serve import reactor
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.pynetdicom_adapter import make_event_driven

LONG = 30.0  # the idle wait in these tests: far longer than any of them takes


@pytest.fixture
def assoc(monkeypatch):
    monkeypatch.setattr(reactor, "IDLE_WAIT", LONG)
    assoc = Association(AE(), "acceptor")
    make_event_driven(assoc)
    return assoc


def _later(action, delay: float = 0.05) -> threading.Event:
    """Run `action` from another thread shortly; the event says it has begun."""
    begun = threading.Event()

    def run() -> None:
        begun.set()
        action()

    threading.Timer(delay, run).start()
    return begun


def test_decoded_message_wakes_the_association_loop(assoc):
    _later(lambda: assoc.dimse.msg_queue.put((1, "message")))
    assert assoc.dimse.get_msg(block=False) == (1, "message")


def test_primitive_for_the_user_ends_the_association_loops_wait(assoc):
    begun = _later(lambda: assoc.dul.to_user_queue.put("release request"))
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert begun.is_set()


def test_primitive_already_waiting_for_the_user_is_not_waited_out(assoc):
    assoc.dul.to_user_queue.put("release request")
    done = threading.Thread(target=assoc.dimse.get_msg, kwargs={"block": False})
    done.start()
    done.join(timeout=LONG / 3)
    assert not done.is_alive()


@pytest.mark.parametrize("wake", ["primitive queued", "socket readable", "killed"])
def test_dul_loop_wakes_for(assoc, wake):
    ours, peer = socket.socketpair()
    with ours, peer:
        assoc.dul.socket = AssociationSocket(assoc, client_socket=ours)
        assoc.dul.event_queue.queue.clear()  # the transport-connect event the socket queued
        assoc.dul.waker.wait(None)  # and the wake-up it sent
        actions = {
            "primitive queued": lambda: assoc.dul.to_provider_queue.put("response"),
            "socket readable": lambda: peer.send(b"\x04"),
            "killed": assoc.dul.kill_dul,
        }
        begun = _later(actions[wake])
        with pytest.raises(queue.Empty):
            assoc.dul.event_queue.get(block=False)
        assert begun.is_set()
    assoc.dul.event_queue.put("Evt3")
    assert assoc.dul.event_queue.get(block=False) == "Evt3"


def test_blocking_gets_are_pynetdicoms_own(assoc):
    assoc.dimse.msg_queue.put((3, "m"))
    assert assoc.dimse.msg_queue.get(block=True, timeout=1) == (3, "m")
    with pytest.raises(queue.Empty):
        assoc.dul.to_user_queue.get(block=True, timeout=0.01)


def test_associations_leave_no_descriptors_behind(tmp_path):
    """Each association's wake-up socket pair goes with it: a long-running server must not
    run out of file descriptors."""
    listener = Listener(
        ServeConfig(aet="EDGE", port=0, host="127.0.0.1", spool=tmp_path, min_free_mb=0)
    )
    port = listener.start()[1]
    ae = AE(ae_title="SCU")
    ae.add_requested_context("1.2.840.10008.1.1")

    def echo() -> None:
        assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
        assert assoc.send_c_echo().Status == 0
        assoc.release()

    def descriptors() -> int:
        time.sleep(0.2)
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    try:
        echo()
        before = descriptors()
        for _ in range(60):
            echo()
        assert descriptors() <= before + 4
    finally:
        listener.stop()
