"""Module-level jobs for the durable-queue tests (a durable job is run by
its importable name, in this process or in a `cipher-background jobs`
process)."""
import threading

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from zope.component.hooks import getSite
from zope.security.management import getInteraction

from cipher.background import check_cancelled
from cipher.background import current_connection
from cipher.background import set_progress

started = threading.Event()


class Counter(Persistent):
    value = 0

    def add(self, amount=1):
        self.value += amount
        return self.value


class Plain:
    def run(self):
        pass


def count(name):
    """Add 1 to the counter ``name`` in the root's 'counters' tree: a
    counter per job shows whether it ran once, twice or never."""
    root = current_connection().root()
    counters = root.setdefault('counters', OOBTree())
    counter = counters.get(name)
    if counter is None:
        counter = counters[name] = Counter()
    return counter.add()


def who_and_where(document):
    """The principal, the site and the document's title, as the job saw
    them."""
    principals = [p.principal.id for p in getInteraction().participations]
    return principals, getSite().__name__, document.title


def fail(message):
    raise RuntimeError(message)


def wait_for_cancel():
    """Report progress until cancelled (JobCancelled ends it)."""
    started.set()
    for step in range(100000):
        set_progress(step % 100)
        check_cancelled()
        threading.Event().wait(0.01)  # a job's own pace
    return 'never cancelled'


def returns_unpicklable():
    return threading.Lock()


def slow_count(name, seconds=0.05):
    """count(), after ``seconds`` of work: long enough to be killed in."""
    threading.Event().wait(seconds)
    return count(name)


def count_this_job():
    """count() under the running job's own id."""
    from cipher.background import current_job
    return count(current_job().id)


release = threading.Event()
calls = []


def exits():
    raise SystemExit(3)


def ignores_cancel():
    """Counts, then waits to be released, never checking for a cancel."""
    calls.append('ran')
    count('ignored')
    started.set()
    release.wait(60)


def noop():
    pass


def generator():
    yield 1


async def coroutine():
    return 1


def main_instance():
    """An object whose class lives in __main__ (as in a script)."""
    cls = type('Script', (), {'__module__': '__main__'})
    import __main__
    __main__.Script = cls
    return cls()


def held(name):
    """count(), once the test sets ``release`` (it was told by
    ``started``): a job as long as the test wants."""
    started.set()
    release.wait(60)
    return count(name)


lease_threads = []


def note_lease_threads():
    """Keep the threads that keep leases while this job runs (in
    ``lease_threads``) and return how many there are."""
    keepers = [thread for thread in threading.enumerate()
               if thread.name.startswith('cipher.background lease')]
    lease_threads.extend(keepers)
    return len(keepers)
