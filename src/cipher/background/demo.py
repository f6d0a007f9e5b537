"""A tiny publication workflow: the example behind the demo command and
the README.

A site (a folder with a local site manager) holds documents and two local
utilities: an authentication utility that knows the site's users, and a
publisher that moves a document from DRAFT to PUBLISHED and records who
did it.  :func:`publish_job` (a one-shot job) and :class:`PublishWorker`
(a worker thread) publish documents in the background as the user who
asked for it.
"""
import time

import transaction
from persistent import Persistent
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.component import getUtility
from zope.component.hooks import getSite
from zope.container.contained import Contained
from zope.interface import Interface
from zope.interface import implementer
from zope.security.interfaces import IPrincipal
from zope.security.management import getInteraction
from zope.site.folder import Folder
from zope.site.site import LocalSiteManager

from cipher.background.context import Participation
from cipher.background.contextmanagers import ZodbConnection
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.contextmanagers import ZopeTransaction
from cipher.background.jobs import perform
from cipher.background.jobs import set_progress
from cipher.background.thread import BackgroundWorkerThread

DRAFT = 'DRAFT'
PUBLISHED = 'PUBLISHED'


class Document(Contained, Persistent):
    """A document with a workflow state and a history of (state, user)."""

    def __init__(self, title):
        self.title = title
        self.state = DRAFT
        self.history = PersistentList()


class IPublisher(Interface):
    """Publishes documents."""

    def publish(document):
        """Move ``document`` to PUBLISHED, recording the current user."""


@implementer(IPublisher)
class Publisher(Contained, Persistent):
    """The site's publisher (a local utility)."""

    def publish(self, document):
        principals = [p.principal.id
                      for p in getInteraction().participations]
        document.state = PUBLISHED
        document.history.append((PUBLISHED, ', '.join(principals)))


@implementer(IPrincipal)
class Principal:
    """A user of the demo site."""

    def __init__(self, id, title=''):
        self.id = id
        self.title = title or id
        self.description = ''

    def __repr__(self):
        return '<Principal %r>' % self.id


@implementer(IAuthentication)
class SiteAuthentication(Contained, Persistent):
    """A local authentication utility knowing a fixed set of user ids."""

    def __init__(self, *user_ids):
        self.users = PersistentMapping((uid, uid.title()) for uid in user_ids)

    def getPrincipal(self, id):
        if id not in self.users:
            raise PrincipalLookupError(id)
        return Principal(id, self.users[id])

    def authenticate(self, request):
        return None

    def unauthenticatedPrincipal(self):
        return None

    def unauthorized(self, id, request):
        pass


def make_site(root, name='site', users=('editor',)):
    """Create a site in ``root`` (a mapping) with a publisher, an
    authentication utility knowing ``users`` and a document 'doc' in DRAFT;
    return the site.  The caller commits."""
    site = Folder()
    root[name] = site
    site.__name__ = name
    site.setSiteManager(LocalSiteManager(site))
    sm = site.getSiteManager()
    default = sm['default']
    default['publisher'] = Publisher()
    sm.registerUtility(default['publisher'], IPublisher)
    default['authentication'] = SiteAuthentication(*users)
    sm.registerUtility(default['authentication'], IAuthentication)
    site['doc'] = Document('Annual report')
    return site


class PublishWorker(BackgroundWorkerThread):
    """Publishes the named documents of its site, one unit each."""

    description = 'publisher for %(site_name)s'
    work_transaction_note = 'Publish a document (%(thread_name)s)'

    def __init__(self, *args, names=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = list(names)

    def scheduleNextWork(self):
        return bool(self.pending) and not self.stopped

    def doWork(self):
        document = getSite()[self.pending[0]]
        getUtility(IPublisher).publish(document)
        transaction.get().note('Published %r' % document.title)

    def doCleanup(self):
        # Done whether doWork succeeded or not: a document that cannot be
        # published is not tried forever.
        self.pending.pop(0)


class DraftPublisher(BackgroundWorkerThread):
    """Publishes its site's drafts, one a unit, and looks for new ones
    every ``poll_seconds`` until stopped: a worker for the worker command
    (``--worker cipher.background.demo:DraftPublisher``)."""

    description = 'draft publisher for %(site_name)s'
    work_transaction_note = 'Publish a draft (%(thread_name)s)'
    poll_seconds = 1.0
    found_one = True

    def scheduleNextWork(self):
        if self.found_one:
            return not self.stopped
        return self.wait(self.poll_seconds)  # False once stopped

    def doWork(self):
        drafts = [document for name, document in sorted(getSite().items())
                  if isinstance(document, Document)
                  and document.state == DRAFT]
        self.found_one = bool(drafts)
        if drafts:
            getUtility(IPublisher).publish(drafts[0])
            transaction.get().note('Published %r' % drafts[0].title)


#: The steps of the demo's publication job, with their share of the work.
PUBLICATION_STEPS = [('checking links', 25), ('rendering', 50),
                     ('indexing', 75), ('publishing', 100)]


def publish_job(document, step_seconds=0.25):
    """A one-shot job: publish ``document`` in a few visible steps."""
    for step, percent in PUBLICATION_STEPS:
        set_progress(percent, step)
        time.sleep(step_seconds)  # stands in for real work
    getUtility(IPublisher).publish(document)
    return document.state


def simulated_request(db, user_id, site_name='site', step_seconds=0.25):
    """Act like a view: as ``user_id`` on the site, add a draft document
    and perform the publication job for it after the commit.  Creates the
    site first if the database has none.  Returns the job id and the
    document's name."""
    with ZodbConnection(db) as conn:
        root = conn.root()
        if site_name not in root:
            with ZopeTransaction(user='system', note='Create the demo site'):
                make_site(root, site_name, users=(user_id,))
        site = root[site_name]
        with ZopeSite(site):
            principal = getUtility(IAuthentication).getPrincipal(user_id)
            with ZopeInteraction(Participation(principal)):
                with ZopeTransaction(user=user_id, note='Add a draft'):
                    number = len(site)
                    name = 'doc-%d' % number
                    site[name] = Document('Report %d' % number)
                    job_id = perform(publish_job, site[name],
                                     step_seconds=step_seconds)
    return job_id, name
