"""Event-driven waits for pynetdicom's two reactor threads per association.

Both threads poll: a loop that found nothing to do sleeps 1 ms and looks again. A serial sender
(storescu, most scanners) pays those sleeps several times per instance: its request waits for the
DUL thread's next look at the socket, the decoded message for the association thread's next look
at the DIMSE queue, and our response for the DUL thread's next look at its send queue.

`attach` swaps the queues these loops poll for subclasses whose empty, non-blocking `get` waits
(at most `IDLE_WAIT`) for what would fill them: the socket turning readable or a primitive
queued for the DUL thread; a decoded message or a primitive for the user for the association
thread. The loops themselves are pynetdicom's, unchanged: every check they make still runs at
least every `IDLE_WAIT`, and an idle association now wakes 20 times a second instead of 1000.
This module knows queues and sockets only; which of pynetdicom's queues they are is
`edgeimg.serve.pynetdicom_adapter`'s business.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: longest a reactor loop waits for a wake-up before it runs its checks (timers, kill flag)
IDLE_WAIT = 0.05


class Waker:
    """A socket pair the DUL thread selects on beside the peer's socket."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        try:
            self.writer.send(b"\0")
        except OSError:
            pass  # the pair is full (a wake-up is pending anyway) or already closed

    def wait(self, peer: Any) -> None:
        """Until `peer` is readable, `wake()` is called, or IDLE_WAIT passes."""
        if peer is not None and getattr(peer, "pending", lambda: 0)():
            return  # TLS has decrypted bytes buffered that select cannot see
        sockets = [self.reader]
        if peer is not None and peer.fileno() >= 0:
            sockets.append(peer)
        try:
            select.select(sockets, [], [], IDLE_WAIT)
            while self.reader.recv(4096):
                pass
        except (OSError, ValueError):
            pass  # nothing to drain, or the peer's socket closed meanwhile

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class _WakingQueue(queue.Queue):
    """A queue whose `put` wakes the thread that polls it (`on_put`), and whose empty
    non-blocking `get` first waits for work (`wait_for_work`, at most IDLE_WAIT)."""

    def on_put(self) -> None:
        raise NotImplementedError

    def wait_for_work(self) -> None:
        """Return at once: the default for queues that pynetdicom reads only when full."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.on_put()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        try:
            return super().get(False)
        except queue.Empty:
            self.wait_for_work()
        return super().get(False)


class _ForDul(_WakingQueue):
    """What the DUL thread reads: a put wakes it from its wait on the peer's socket."""

    waker: Waker

    def on_put(self) -> None:
        self.waker.wake()


class _DulEvents(_ForDul):
    """The DUL loop's event queue: when empty, waits for the socket or a wake-up."""

    peer: Callable[[], Any]

    def wait_for_work(self) -> None:
        self.waker.wait(self.peer())


class _ForAssociation(_WakingQueue):
    """What the association thread reads: a put sets the event it waits on."""

    arrived: threading.Event

    def on_put(self) -> None:
        self.arrived.set()


class _Messages(_ForAssociation):
    """DIMSE's decoded messages: when empty, waits for one or for a primitive for the user
    (such as a release request, which the association loop checks next)."""

    for_user: queue.Queue

    def wait_for_work(self) -> None:
        self.arrived.clear()
        # Anything put before the clear is still in one of the queues: only then wait.
        if self.empty() and self.for_user.empty():
            self.arrived.wait(IDLE_WAIT)


def attach(
    dul_queues: tuple[queue.Queue, queue.Queue],
    user_queue: queue.Queue,
    messages: queue.Queue,
    peer: Callable[[], Any],
) -> Waker:
    """Make the queues wake their readers (contents kept); returns the DUL thread's waker.

    `dul_queues` are the DUL thread's event queue and its queue of primitives to send,
    `user_queue` its queue for the association thread, `messages` DIMSE's decoded messages;
    `peer()` is the socket the DUL thread reads, or None.
    """
    waker = Waker()
    weakref.finalize(waker, waker.reader.close)
    weakref.finalize(waker, waker.writer.close)
    arrived = threading.Event()
    events, to_provider = dul_queues
    for polled, kind in (
        (events, _DulEvents),
        (to_provider, _ForDul),
        (user_queue, _ForAssociation),
        (messages, _Messages),
    ):
        polled.__class__ = kind
        polled.waker = waker
        polled.arrived = arrived
    events.peer = peer
    messages.for_user = user_queue
    return waker
