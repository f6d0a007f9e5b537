"""The start-up worker of the runwsgi instance in test_runwsgi.py: one
unit that is in progress when the server is told to stop, and finishes."""
import os

import transaction
from five.localsitemanager import make_objectmanager_site
from OFS.Folder import manage_addFolder

from cipher.background import SYSTEM
from cipher.background import BackgroundWorkerThread
from cipher.background.host import get_host


class Holding(BackgroundWorkerThread):

    units = 1

    def scheduleNextWork(self):
        self.units -= 1
        return self.units >= 0

    def doWork(self):
        from zope.component import hooks
        with open(os.environ['CIPHER_TEST_MARKER'], 'w') as marker:
            marker.write('unit in progress\n')
        self._stop_event.wait(120)  # until the server is told to stop
        hooks.getSite().finished = True


def factory(db):
    """Make /bgsite a site if it is not one yet; a Holding worker on it."""
    manager = transaction.TransactionManager()
    connection = db.open(manager)
    try:
        app = connection.root()['Application']
        if 'bgsite' not in app.objectIds():
            manage_addFolder(app, 'bgsite')
            make_objectmanager_site(app.bgsite)
            manager.commit()
        site = get_host().find_site(connection, '/bgsite')
        return [Holding.forSite(site, SYSTEM)]
    finally:
        manager.abort()
        connection.close()
