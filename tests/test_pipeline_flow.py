"""How `run`'s pipeline shares the machine: bounded decode readahead, the engine's thread
budget beside the pool, and workers that fork ready to write."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Executor, Future
from pathlib import Path

from edgeimg.backends.base import physical_cores
from edgeimg.backends.onnxruntime import session_options
from edgeimg.backends.openvino import compile_config
from edgeimg.backends.threads import sharing_cores, thread_budget
from edgeimg.pipeline.decode import DECODE_CHUNK, in_chunks


class CountingPool(Executor):
    """Runs each task at once, and records how many results were waiting to be taken."""

    def __init__(self) -> None:
        self.futures: list[Future] = []
        self.most_in_flight = 0

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        self.futures.append(future)
        in_flight = sum(not getattr(f, "taken", False) for f in self.futures)
        self.most_in_flight = max(self.most_in_flight, in_flight)
        original = future.result

        def result(timeout=None, _future=future, _original=original):
            _future.taken = True
            return _original(timeout)

        future.result = result
        return future


def test_readahead_bounds_the_chunks_in_flight_and_keeps_order():
    paths = [Path(f"{n:03}.dcm") for n in range(10 * DECODE_CHUNK + 3)]
    pool = CountingPool()
    assert list(in_chunks(str, paths, pool, ahead=3)) == [str(path) for path in paths]
    assert pool.most_in_flight == 3
    unbounded = CountingPool()
    assert list(in_chunks(str, paths, unbounded)) == [str(path) for path in paths]
    assert unbounded.most_in_flight == 11


def test_engines_use_every_core_and_spin_unless_the_caller_shares_them(tmp_path):
    assert thread_budget().threads == physical_cores() and thread_budget().spin
    options = session_options(tmp_path / "out.onnx")
    assert options.intra_op_num_threads == physical_cores()
    assert _spinning(options) != "0"
    with sharing_cores(1):
        assert thread_budget().threads == 1 and not thread_budget().spin
        options = session_options(tmp_path / "out.onnx")
        assert options.intra_op_num_threads == 1
        assert _spinning(options) == "0"
        assert compile_config("fp32")["INFERENCE_NUM_THREADS"] == 1
    with sharing_cores(None):
        assert thread_budget().spin
    assert compile_config("fp32")["INFERENCE_NUM_THREADS"] == physical_cores()


def test_a_budget_above_the_cores_is_the_cores():
    with sharing_cores(physical_cores() + 4):
        assert thread_budget().threads == physical_cores()


def _spinning(options) -> str | None:
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, spinning
        return None


#: run in a fresh interpreter, whose forkserver is started by `decoder_pool` and nothing else
_WORKER_HAS_HIGHDICOM = """
from edgeimg.pipeline import decoder_pool
if __name__ == "__main__":
    pool = decoder_pool(1)
    print(pool.submit(eval, "'edgeimg.pipeline.warm' in __import__('sys').modules").result())
    pool.shutdown()
"""


def test_workers_fork_from_a_server_that_preloaded_the_writers(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(_WORKER_HAS_HIGHDICOM)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_a_decoded_file_carries_its_header_as_bytes_until_read(tmp_path):
    import pickle

    import numpy as np
    from pydicom.dataset import Dataset

    from edgeimg.pipeline import Decoded, for_writing

    header = Dataset()
    header.SOPInstanceUID = "1.2.3.4"
    header.PatientID = "ID-1"
    decoded = Decoded(tmp_path / "a.dcm", header, np.ones((1, 1, 4, 4), np.float32), 4, 4)
    received = pickle.loads(pickle.dumps(decoded))
    assert "header" not in received.__dict__ and received.sop_instance_uid == "1.2.3.4"
    (sent,) = pickle.loads(pickle.dumps(for_writing([received])))
    assert sent.inputs.size == 0 and received.inputs.shape == (1, 1, 4, 4)
    assert sent.header == header and received.header == header and sent.size == (4, 4)
    replaced = Dataset()
    replaced.SOPInstanceUID = "5.6"
    received.header = replaced
    assert pickle.loads(pickle.dumps(received)).header == replaced
    assert received.sop_instance_uid == "5.6"
