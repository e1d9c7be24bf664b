"""The listener's durable queue (SQLite, WAL, synchronous=FULL).

Rows are committed before a C-STORE success is sent, and every state a crash can interrupt
(`running`) is turned back into `pending` on start, so kill -9 loses nothing acknowledged.
The database and its migration (`database`), instances and series (`instances`), jobs and
forwards (`jobs`) and the summaries (`summaries`) are one `Queue` to the rest of serve.
"""

from edgeimg.serve.queue.database import SERIES_STATES
from edgeimg.serve.queue.instances import GroupCommit, Instance, Instances
from edgeimg.serve.queue.jobs import Jobs
from edgeimg.serve.queue.summaries import Summaries

__all__ = ["SERIES_STATES", "GroupCommit", "Instance", "Queue"]


class Queue(Instances, Jobs, Summaries):
    """Thread-safe access to the queue database: one connection per thread."""
