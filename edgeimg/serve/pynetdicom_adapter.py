"""The one place that touches pynetdicom's internals; everything else uses its public API.

edgeimg's listener needs more than pynetdicom's public API gives: a gate before the association
(`edgeimg.serve.preassociation`), PDU length checks before a body is buffered, a state machine that
survives peers breaking off early, event-driven reactor loops (`edgeimg.serve.reactor`), C-STORE
responses encoded without pydicom (`edgeimg.serve.responses`), and no per-PDU log formatting.
Each is a subclass or a class swap on pynetdicom's objects, never a patch of its modules.

These reach into names pynetdicom may change in any release, so pyproject.toml pins the
versions they were measured on, `ASSUMPTIONS` lists every such name, and
tests/test_pynetdicom_fence.py fails naming the one that moved (`contract_problems`).
"""

from __future__ import annotations

import errno
import inspect
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, _config, _handlers, evt, fsm
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from edgeimg import fence
from edgeimg.serve import reactor
from edgeimg.serve.eventlog import log
from edgeimg.serve.preassociation import (
    ABORT_INVALID_LENGTH,
    NON_PDATA_LIMIT,
    Pending,
    Refused,
    read_exactly,
    read_request,
    refuse,
)
from edgeimg.serve.responses import LAST_COMMAND_FRAGMENT, encode_store_response

A_RELEASE_RQ_RECEIVED = "Evt12"  # PS3.8 9.2: A-RELEASE-RQ PDU received on the transport
#: pynetdicom binds these to every association to describe each PDU and message to its logger.
#: We log nothing through it, yet they format their text regardless: about a millisecond of
#: a 512 x 512 CT instance's C-STORE, most of the difference from storescp's speed.
LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
)


class _GuardedSocket(AssociationSocket):
    """Checks each PDU header against the negotiated maximum before the body is buffered.

    pynetdicom reads the 6-byte header then `recv(length)` in one go, so a hostile length
    would make it buffer up to 4 GiB. Over the limit we send A-ABORT and drop the connection.
    Within it, the body is read straight into one buffer (`read_exactly`). The gate's
    A-ASSOCIATE-RQ (`first`) is replayed before anything is read from the socket.
    """

    _body_next = False
    first = b""

    @property
    def ready(self) -> bool:
        return bool(self.first) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        if self.first:
            data, self.first = bytearray(self.first[:nr_bytes]), self.first[nr_bytes:]
            return data
        data = read_exactly(self.socket, nr_bytes)
        if self._body_next:
            self._body_next = False
            return data
        if nr_bytes == 6 and len(data) == 6:
            pdu_type, _, length = struct.unpack(">BBL", data)
            limit = self.assoc.acceptor.maximum_length if pdu_type == 0x04 else NON_PDATA_LIMIT
            if limit and length > limit:
                self._refuse(pdu_type, length, limit)
            self._body_next = True
        return data

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        peer = self.assoc.requestor
        log("pdu_refused", pdu_type=pdu_type, length=length, limit=limit, host=peer.address)
        try:
            self.socket.sendall(ABORT_INVALID_LENGTH)
        except OSError:
            pass
        raise OSError(errno.EMSGSIZE, f"PDU of {length} bytes exceeds the maximum {limit}")


class _StateMachine(fsm.StateMachine):
    """pynetdicom's DUL state machine, safe against peers that break off early.

    * A peer that sends a PDU out of order while the association thread is still negotiating
      moves the DUL to Sta13 (or Sta1); pynetdicom then raises InvalidEventError for the AC or
      RJ that follows and the DUL thread dies. That late answer is dropped instead.
    * A connection that ends before the association is negotiated would leave the association
      thread waiting out the ACSE timeout, holding one of the --max-associations slots.
      Reaching Sta1 without a request wakes it at once (None reads as "no request came").
    * It notes an A-RELEASE-RQ as it arrives (`release_requested`): once our reply is out the
      peer may close the connection before the association thread reports the release, and
      the close must not read as a peer that broke off.
    """

    _requested = False
    release_requested = False

    def do_action(self, event: str) -> None:
        if self.current_state in ("Sta1", "Sta13") and (event, self.current_state) not in (
            fsm.TRANSITION_TABLE
        ):
            return
        if event == A_RELEASE_RQ_RECEIVED:
            self.release_requested = True
        super().do_action(event)
        if self.current_state == "Sta3":
            self._requested = True
        elif self.current_state == "Sta1" and not self._requested:
            self._requested = True
            self.dul.to_user_queue.put(None)


class _EventDrivenDUL(DULServiceProvider):
    waker: reactor.Waker

    def kill_dul(self) -> None:
        super().kill_dul()
        self.waker.wake()


def make_event_driven(assoc: Any) -> None:
    """Swap the polled queues of a not yet started acceptor association (contents kept)."""
    dul = assoc.dul
    dul.__class__ = _EventDrivenDUL
    dul._run_loop_delay = 0
    dul.waker = reactor.attach(
        dul_queues=(dul.event_queue, dul.to_provider_queue),
        user_queue=dul.to_user_queue,
        messages=assoc.dimse.msg_queue,
        peer=lambda: dul.socket.socket if dul.socket is not None else None,
    )


class FastStoreResponses(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending C-STORE responses encoded by us.

    The EVT_DIMSE_SENT notification is not raised for them; nothing in edgeimg binds it.
    """

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None:
            command = encode_store_response(primitive)
            limit = self.maximum_pdu_size
            if command is not None and (not limit or len(command) + 6 <= limit):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append(
                    (context_id, LAST_COMMAND_FRAGMENT + command)
                )
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


class _Handler(RequestHandler):
    def _create_association(self):
        assoc = super()._create_association()
        # Same layout, one method more: swap the class rather than re-creating the socket,
        # which would queue a second transport-connect event.
        assoc.dul.socket.__class__ = _GuardedSocket
        assoc.dul.socket.first = self.server.requests.pop(self.request, b"")
        assoc.dul.state_machine.__class__ = _StateMachine
        assoc.dimse.__class__ = FastStoreResponses
        make_event_driven(assoc)
        for event, handler in LOG_HANDLERS:
            assoc.unbind(event, handler)
        return assoc


class _Server(ThreadedAssociationServer):
    """Accepts without blocking, and lets a connection reach pynetdicom (and so take an
    association slot) only once its whole A-ASSOCIATE-RQ is in: before that it is pending
    (`edgeimg.serve.preassociation`), TLS handshake included, which runs in the connection's
    own thread.
    """

    daemon_threads = True
    block_on_close = False
    #: the listen backlog (socketserver's default is 5): a burst of connections past it has its
    #: SYNs dropped, and a real peer among them waits a second for its retry
    request_queue_size = socket.SOMAXCONN
    pending: Pending
    requests: dict[Any, bytes]

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        entry = self.pending.admit(request, client_address[0])
        thread = threading.Thread(
            target=self._gate,
            args=(request, entry, client_address),
            name="edgeimg-pending",
            daemon=True,
        )
        thread.start()

    def _gate(self, request: Any, entry: Any, client_address: Any) -> None:
        # The ARTIM timer is the reaper's (`Pending`); a shorter network timeout ends a stall.
        stall = self.ae.network_timeout
        request.settimeout(stall if stall and stall < self.pending.artim else None)
        try:
            if self.ssl_context is not None:
                # The handshake is ours, not the wrap's: a failed one must not close the
                # descriptor while `pending` still holds it.
                request = self.ssl_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                request.do_handshake()
            first = read_request(request)
        except (OSError, Refused) as error:
            self._drop(entry, request, error)
            return
        if not self.pending.leave(entry):
            self._drop(entry, request, Refused(entry.closed_because or "closed"))
            return
        request.settimeout(self.ae.network_timeout)
        self.requests[request] = first
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.requests.pop(request, None)  # taken by `_Handler` unless it failed first

    def _drop(self, entry: Any, request: Any, error: Exception) -> None:
        self.pending.leave(entry)
        if isinstance(error, Refused):
            refuse(request, error)
        reason = entry.closed_because or getattr(error, "reason", None)
        if reason is None and isinstance(error, ssl.SSLError):
            reason = f"TLS: {error.reason or error}"
        elif reason is None and isinstance(error, TimeoutError):
            reason = "timeout"
        if reason != "closed before an association request":
            self.pending.drops.dropped(entry.host, reason or str(error))
        self.shutdown_request(request)


def serve(ae: AE, address: tuple[str, int], pending: Pending, **options: Any) -> _Server:
    """`ae.make_server` with edgeimg's server and handler, registered where AE.shutdown() and
    AssociationServer.shutdown() expect it; the caller runs `serve_forever`."""
    server = ae.make_server(address, server_class=_Server, request_handler=_Handler, **options)
    server.pending, server.requests = pending, {}
    ae._servers.append(server)
    return server


def release_requested(assoc: Any) -> bool:
    """Whether the peer sent an A-RELEASE-RQ on this (server side) association."""
    return getattr(assoc.dul.state_machine, "release_requested", False)


def reject(assoc: Any, reason: int) -> None:
    """A-ASSOCIATE-RJ, rejected-permanent by the service user with `reason` (PS3.8 9.3.4)."""
    assoc.acse.send_reject(0x01, 0x01, reason)
    assoc.kill()  # as pynetdicom's own rejection does: lets the DUL send it first


def no_delay(assoc: Any) -> None:
    """Disable Nagle on an association's socket: DIMSE messages are small and latency-bound."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def stream_stored_files() -> None:
    """C-STORE file bytes as they are (documented as `_config.STORE_SEND_CHUNKED_DATASET`)
    instead of decoding and re-encoding them, which would change what the peer stores."""
    _config.STORE_SEND_CHUNKED_DATASET = True


def _has(owner: Any, *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = [name for name in names if not hasattr(owner, name)]
        return f"{owner.__name__} lacks {', '.join(missing)}" if missing else None

    return check


def _params(function: Any, *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        got = list(inspect.signature(function).parameters)
        missing = [name for name in names if name not in got]
        return f"{function.__qualname__}{tuple(got)} lacks {missing}" if missing else None

    return check


def _instance_attributes() -> str | None:
    assoc = Association(AE(), "acceptor")
    names = {
        "Association": (assoc, ("dul", "dimse", "acse", "requestor", "acceptor")),
        "DULServiceProvider": (
            assoc.dul,
            (
                "_run_loop_delay",
                "event_queue",
                "to_provider_queue",
                "to_user_queue",
                "socket",
                "state_machine",
            ),
        ),
        "DIMSEServiceProvider": (assoc.dimse, ("msg_queue", "dul")),
        "ACSE": (assoc.acse, ("send_reject",)),
        "StateMachine": (assoc.dul.state_machine, ("current_state", "dul")),
    }
    missing = [
        f"{owner}.{name}"
        for owner, (value, wanted) in names.items()
        for name in wanted
        if not hasattr(value, name)
    ]
    return f"instances lack {', '.join(missing)}" if missing else None


def _transitions() -> str | None:
    needed = {("Evt12", "Sta6"): "AR-2", ("Evt6", "Sta2"): "AE-6", ("Evt17", "Sta13"): "AR-5"}
    table = fsm.TRANSITION_TABLE
    moved = [f"{key} -> {action}" for key, action in needed.items() if table.get(key) != action]
    return f"fsm.TRANSITION_TABLE no longer has {', '.join(moved)}" if moved else None


def _servers_list() -> str | None:
    servers = getattr(AE(), "_servers", None)
    return None if isinstance(servers, list) else "AE()._servers is no longer a list"


#: every pynetdicom internal this module relies on, as (what, check returning a problem or None)
ASSUMPTIONS: tuple[fence.Assumption, ...] = (
    ("_handlers log handlers", _has(_handlers, *(h.__name__ for _, h in LOG_HANDLERS))),
    ("_config.STORE_SEND_CHUNKED_DATASET", _has(_config, "STORE_SEND_CHUNKED_DATASET")),
    ("fsm.StateMachine", _has(fsm.StateMachine, "do_action")),
    ("fsm.TRANSITION_TABLE entries", _transitions),
    ("DULServiceProvider methods", _has(DULServiceProvider, "kill_dul", "send_pdu")),
    ("association internals", _instance_attributes),
    (
        "DIMSEServiceProvider.send_msg",
        _params(DIMSEServiceProvider.send_msg, "primitive", "context_id"),
    ),
    ("DIMSEServiceProvider attributes", _has(DIMSEServiceProvider, "maximum_pdu_size")),
    ("AssociationSocket", _has(AssociationSocket, "recv", "ready", "send")),
    ("AssociationSocket.recv", _params(AssociationSocket.recv, "nr_bytes")),
    ("RequestHandler._create_association", _has(RequestHandler, "_create_association")),
    (
        "ThreadedAssociationServer",
        _has(
            ThreadedAssociationServer, "process_request_thread", "get_request", "shutdown_request"
        ),
    ),
    ("AE.make_server", _params(AE.make_server, "server_class", "kwargs")),
    ("ThreadedAssociationServer()", _params(ThreadedAssociationServer.__init__, "request_handler")),
    ("AE._servers", _servers_list),
    ("P_DATA", _has(P_DATA(), "presentation_data_value_list")),
)


def contract_problems() -> list[str]:
    """What moved in the installed pynetdicom, one line per broken assumption."""
    return fence.problems(ASSUMPTIONS)
