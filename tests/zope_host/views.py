"""Views of the test instance that start background work, and what that
work saw, kept in RESULTS by key."""
from _thread import get_ident

from AccessControl import getSecurityManager
from Acquisition import aq_inner
from Acquisition import aq_parent
from five.localsitemanager import make_objectmanager_site
from OFS.Folder import manage_addFolder
from OFS.interfaces import IApplication
from Products.Five.browser import BrowserView
from zope.component import hooks
from zope.globalrequest import getRequest

from cipher.background import BackgroundWorkerThread
from cipher.background import enqueue
from cipher.background import jobs

RESULTS = {}


def probe(doc, key):
    """What a unit or job sees of its user, site and objects."""
    site = hooks.getSite()
    manager = getSecurityManager()
    user = manager.getUser()
    RESULTS[key] = dict(
        user=user.getId(),
        manage=bool(manager.checkPermission('View management screens',
                                            site)),
        site_in_app=IApplication.providedBy(aq_parent(aq_inner(site))),
        site_path=site.getPhysicalPath(),
        site_url=site.absolute_url(),
        doc_url=doc.absolute_url(),
        thread=get_ident(),
        request_is_the_units=getRequest() is site.REQUEST,
        request_user=getRequest()['AUTHENTICATED_USER'].getId())
    doc.touched_by = user.getId()


class ProbeWorker(BackgroundWorkerThread):
    """One unit: probe(site.docs, key); then ends."""

    def __init__(self, *args, key='worker', **kwargs):
        super().__init__(*args, **kwargs)
        self.key = key
        self.units = 1

    def scheduleNextWork(self):
        self.units -= 1
        return self.units >= 0

    def doWork(self):
        site = hooks.getSite()
        probe(site.docs if 'docs' in site.objectIds() else site, self.key)


class StartJob(BrowserView):
    def __call__(self):
        return jobs.perform(probe, self.context.docs, self.request['key'])


class EnqueueJob(BrowserView):
    """A durable job, stored in the request's transaction."""

    def __call__(self):
        return enqueue(probe, self.context.docs, self.request['key'])


class StartWorker(BrowserView):
    def __call__(self):
        key = self.request['key']
        worker = RESULTS['worker ' + key] = ProbeWorker.forSite(
            self.context, key=key)
        worker.startAfterCommit()
        return 'started'


class MakeSiteAndWorker(BrowserView):
    """Makes a folder, makes it a site, starts a worker for it: all in
    one request."""

    def __call__(self):
        name = self.request['name']
        manage_addFolder(self.context, name)
        folder = self.context[name]
        make_objectmanager_site(folder)
        worker = RESULTS['worker ' + name] = ProbeWorker.forSite(
            folder, key=name)
        worker.startAfterCommit()
        return 'started'
