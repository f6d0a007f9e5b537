"""Jobs for bench_queue.py, importable by name by runner processes."""
import time


def started_at():
    """The wall-clock time the job started (the clock of this machine,
    shared by the processes of a benchmark)."""
    return time.time()


def noop():
    pass
