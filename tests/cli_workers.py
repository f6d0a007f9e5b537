"""Worker classes the command-line tests run in a subprocess."""
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


NotAWorker = object
