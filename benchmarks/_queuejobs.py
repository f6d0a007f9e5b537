"""Jobs for bench_queue.py, importable by name by runner processes."""
import os
import threading
import time

#: Set when started_at() runs in this process: a measuring thread of the
#: same process waits on it rather than on a result store, whose reads
#: would take the interpreter from the job's thread while it starts.
started = threading.Event()


def started_at():
    """The wall-clock time the job started (the clock of this machine,
    shared by the processes of a benchmark)."""
    now = time.time()
    started.set()
    return now


def noop():
    pass


def mark_then_sleep(folder):
    """Write the time this attempt started to a file of ``folder`` named
    after this process; the first attempt then sleeps (to be killed), a
    later one returns."""
    first = not os.listdir(folder)
    with open(os.path.join(folder, str(os.getpid())), 'w') as f:
        f.write(repr(time.time()))
    if first:
        time.sleep(120)
