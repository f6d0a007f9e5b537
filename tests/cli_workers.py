"""Worker classes the command-line tests run in a subprocess."""
import os
import time

from zope.component import hooks

from cipher.background.thread import BackgroundWorkerThread


class PairWriter(BackgroundWorkerThread):
    """Adds 1 to root['a'] and root['b'] in each unit, until stopped."""

    def scheduleNextWork(self):
        return self.wait(0.01)

    def doWork(self):
        root = hooks.getSite()._p_jar.root()
        root['a'] = root.get('a', 0) + 1
        root['b'] = root.get('b', 0) + 1


class ThreeUnits(PairWriter):
    """Does three units, then ends by itself."""

    units = 0

    def scheduleNextWork(self):
        self.units += 1
        return self.units <= 3


class Crasher(PairWriter):
    """Its scheduling fails: the worker ends 'crashed'."""

    def scheduleNextWork(self):
        raise RuntimeError('the schedule is broken')


class Stuck(PairWriter):
    """One unit that creates $CIPHER_TEST_MARKER, then runs on until
    $CIPHER_TEST_RELEASE exists (a unit longer than any grace time)."""

    units = 0

    def scheduleNextWork(self):
        self.units += 1
        return self.units == 1 or self.wait(60)

    def doWork(self):
        open(os.environ['CIPHER_TEST_MARKER'], 'w').close()
        while not os.path.exists(os.environ['CIPHER_TEST_RELEASE']):
            time.sleep(0.01)  # released by a file from another process


class BadInit(PairWriter):
    """Its constructor fails."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError('cannot be made')


class ExitingInit(PairWriter):
    """Its constructor exits the process."""

    def __init__(self, *args, **kwargs):
        raise SystemExit(0)


NotAWorker = object
