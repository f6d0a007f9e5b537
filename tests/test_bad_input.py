"""Bad input across the public API: a clear exception that says what to
do, and nothing written to the database or the run directory.

Each row of BAD_INPUT is one mistake a user can make: the call, the
exception it must raise and words its message must contain.  Every call
gets a database with a stored site and an empty run directory, and both
are checked to be untouched afterwards.
"""
import contextlib
import io
import os
import string

import pytest
import transaction
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from persistent import Persistent
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.MappingStorage import MappingStorage
from zope.site.folder import Folder

from cipher.background import BackgroundScheduler
from cipher.background import BackgroundWorkerThread
from cipher.background import PeriodicBackgroundWorkerThread
from cipher.background import RetryPolicy
from cipher.background import jobs
from cipher.background import process
from cipher.background import task
from cipher.background.cli import main as cli_main
from cipher.background import MemoryJobStore
from cipher.background import UnitOfWork
from cipher.background import stop_all
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BackgroundError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import NotInJob
from cipher.background.errors import ObjectNotStored
from cipher.background.errors import PrincipalRequired
from cipher.background.errors import SchedulerShutDown
from cipher.background.errors import ThreadBusy
from helpers import add_site


class CommandLineFailed(Exception):
    """The command line exited non-zero; the message is the exit status
    and what it printed on stderr."""


class Env:
    """What a bad call gets: a database with a stored site, an open
    connection on it, and an empty run directory."""

    def __init__(self, db, conn, rundir, tmp_path):
        self.db = db
        self.conn = conn
        self.rundir = rundir
        self.tmp_path = tmp_path
        self.site = conn.root()['site']
        self.site_oid = self.site._p_oid

    def worker(self, cls=BackgroundWorkerThread, **overrides):
        args = dict(site_db=self.db, site_oid=self.site_oid,
                    site_name='site', user_name='editor')
        args.update(overrides)
        return cls(**args)

    def cli(self, *argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
        if code:
            raise CommandLineFailed('exit %d: %s' % (code, err.getvalue()))
        return code

    def start_twice(self):
        worker = self.worker()
        worker.start()
        try:
            worker.start()
        finally:
            worker.stop(60)

    def busy_runOnce(self):
        self.conn.root()['pending'] = 'mine'  # aborted by the fixture
        self.worker().runOnce()

    def stopped_scheduler(self):
        scheduler = BackgroundScheduler(max_workers=1)
        scheduler.shutdown()
        return scheduler


def _noop():
    pass


class _Badly(BackgroundWorkerThread):
    description = 'worker for %(site)s'


class _BadNote(BackgroundWorkerThread):
    work_transaction_note = '%(thread_name)s at 100%'


class _Stored(Persistent):
    def method(self):
        pass


BAD_INPUT = [
    # -- worker construction --
    ('worker site_oid None', lambda e: e.worker(site_oid=None),
     ConfigurationError, '8-byte ZODB OID'),
    ('worker site_oid too short', lambda e: e.worker(site_oid=b'\0\0\1'),
     ConfigurationError, 'use BackgroundWorkerThread.forSite'),
    ('worker site_oid as text', lambda e: e.worker(site_oid='0x01'),
     ConfigurationError, '8-byte ZODB OID'),
    ('worker user_name not text', lambda e: e.worker(user_name=42),
     ConfigurationError, 'principal id (a str)'),
    ('worker site_db not a database', lambda e: e.worker(site_db='Data.fs'),
     ConfigurationError, 'expected a ZODB database'),
    ('worker retry_policy not a policy',
     lambda e: e.worker(retry_policy=3), ConfigurationError,
     'RetryPolicy(attempts=10)'),
    ('worker description template', lambda e: e.worker(cls=_Badly),
     ConfigurationError, '%(site_name)s'),
    ('worker note template', lambda e: e.worker(cls=_BadNote),
     ConfigurationError, '%% for a percent sign'),
    ('periodic interval zero',
     lambda e: e.worker(cls=PeriodicBackgroundWorkerThread, interval=0),
     ConfigurationError, 'positive number of seconds'),
    ('periodic interval text',
     lambda e: e.worker(cls=PeriodicBackgroundWorkerThread, interval='5'),
     ConfigurationError, 'pass interval='),
    ('periodic interval missing',
     lambda e: e.worker(cls=PeriodicBackgroundWorkerThread),
     ConfigurationError, 'set it as a class attribute'),
    ('worker started twice', lambda e: e.start_twice(),
     AlreadyStarted, 'create a new worker'),
    # -- forSite --
    ('forSite unsaved folder',
     lambda e: BackgroundWorkerThread.forSite(Folder()),
     ConfigurationError, 'add it to a stored object'),
    ('forSite a string', lambda e: BackgroundWorkerThread.forSite('/site'),
     ConfigurationError, 'not stored in a ZODB database'),
    ('forSite not a site',
     lambda e: BackgroundWorkerThread.forSite(e.site['doc']),
     NotASite, 'setSiteManager('),
    ('forSite user_name not text',
     lambda e: BackgroundWorkerThread.forSite(e.site, user_name=['admin']),
     ConfigurationError, 'principal id (a str)'),
    # -- retry policy --
    ('retry attempts zero', lambda e: RetryPolicy(attempts=0),
     ConfigurationError, 'use 1 to never retry'),
    ('retry setting misspelt', lambda e: RetryPolicy(atempts=3),
     ConfigurationError, 'use one of attempts'),
    ('retry negative delay', lambda e: RetryPolicy(base_delay=-1),
     ConfigurationError, 'number of seconds >= 0'),
    # -- perform() and submit() --
    ('perform not callable', lambda e: jobs.perform('publish'),
     TypeError, 'pass the function itself'),
    ('perform a result', lambda e: jobs.perform(_noop()),
     TypeError, 'not its result'),
    ('submit args a string',
     lambda e: jobs.submit(_noop, 'abc', db=e.db, site=e.site),
     TypeError, 'args must be a tuple or list'),
    ('submit kwargs a list',
     lambda e: jobs.submit(_noop, (), [1], db=e.db, site=e.site),
     TypeError, 'kwargs must be a dict'),
    ('perform a persistent method',
     lambda e: jobs.perform(e.conn.root()['stored'].method),
     TypeError, 'pass a plain function'),
    ('perform with no database', lambda e: jobs.perform(_noop),
     ConfigurationError, 'pass db='),
    ('submit db not a database',
     lambda e: jobs.submit(_noop, db='zeo://localhost'),
     ConfigurationError, 'expected a ZODB database'),
    ('perform an object of another database',
     lambda e: jobs.submit(_noop, (_other_database_object(),), db=e.db,
                           site=e.site, user='editor'),
     ConfigurationError, 'objects of that database only'),
    ('submit an object never stored',
     lambda e: jobs.submit(_noop, (PersistentMapping(),), db=e.db,
                           site=e.site, after_commit=False, user='editor'),
     ObjectNotStored, 'add it to the database'),
    ('submit retry_policy not a policy',
     lambda e: jobs.submit(_noop, db=e.db, site=e.site, retry_policy='x',
                           user='editor'),
     ConfigurationError, 'IRetryPolicy'),
    ('submit user not text',
     lambda e: jobs.submit(_noop, db=e.db, site=e.site, user=42),
     ArgumentTypeError, 'principal id (a str)'),
    ('submit note not text',
     lambda e: jobs.submit(_noop, db=e.db, site=e.site, user='editor',
                           note=42),
     ArgumentTypeError, 'note must be a str'),
    ('submit without a user on a checked site',
     lambda e: jobs.submit(_noop, site=e.site),
     PrincipalRequired, 'cipher.background.SYSTEM'),
    ('submit a site that is a path',
     lambda e: jobs.submit(_noop, db=e.db, site='/site', user='editor'),
     NotASite, 'not a site'),
    ('wait with a text timeout',
     lambda e: jobs.wait('0' * 32, timeout='5'),
     ArgumentTypeError, 'timeout'),
    ('job store output limit infinite',
     lambda e: MemoryJobStore(output_limit=float('inf')),
     ConfigurationError, 'output_limit'),
    ('retry attempts a bool', lambda e: RetryPolicy(attempts=True),
     ConfigurationError, 'attempts'),
    ('periodic interval infinite',
     lambda e: e.worker(cls=PeriodicBackgroundWorkerThread,
                        interval=float('inf')),
     ConfigurationError, 'interval'),
    ('stop_all with a text timeout', lambda e: stop_all('x'),
     ArgumentTypeError, 'timeout'),
    ('startAfterCommit with no manager',
     lambda e: e.worker().startAfterCommit(5),
     ArgumentTypeError, 'transaction manager'),
    ('submit to a scheduler that is none',
     lambda e: jobs.submit(_noop, site=e.site, user='editor', scheduler=5),
     ArgumentTypeError, 'BackgroundScheduler()'),
    ('set_scheduler not a scheduler', lambda e: jobs.set_scheduler(5),
     ArgumentTypeError, 'with start()'),
    ('get_progress of a list', lambda e: jobs.get_progress([]),
     ArgumentTypeError, 'job id'),
    ('unit of work runs a number',
     lambda e: UnitOfWork(e.db, e.site_oid, 'editor').run(5),
     ArgumentTypeError, 'expected a callable'),
    ('submit an empty user',
     lambda e: jobs.submit(_noop, site=e.site, user=''),
     ConfigurationError, "not ''"),
    ('submit after_commit text',
     lambda e: jobs.submit(_noop, site=e.site, user='editor',
                           after_commit='no'),
     ArgumentTypeError, 'True or False'),
    ('runOnce in a busy thread',
     lambda e: e.busy_runOnce(),
     ThreadBusy, 'commit or abort the transaction'),
    ('set_progress outside a job', lambda e: jobs.set_progress(50),
     NotInJob, 'only inside a running job'),
    ('submit to a stopped scheduler',
     lambda e: jobs.submit(_noop, db=e.db, site=e.site, after_commit=False,
                           scheduler=e.stopped_scheduler(), user='editor'),
     SchedulerShutDown, 'shut down'),
    # -- the scheduler --
    ('scheduler max_workers zero', lambda e: BackgroundScheduler(0),
     ConfigurationError, 'whole number >= 1'),
    ('scheduler max_workers text', lambda e: BackgroundScheduler('4'),
     ConfigurationError, 'whole number >= 1'),
    ('scheduler keep_finished negative',
     lambda e: BackgroundScheduler(keep_finished=-1),
     ConfigurationError, 'whole number >= 0'),
    ('scheduler start not callable',
     lambda e: e.stopped_scheduler().start(None),
     TypeError, 'expected a callable'),
    ('task without a scheduler', lambda e: task(_noop),
     TypeError, 'write @task(scheduler)'),
    # -- named processes --
    ('process name with a slash',
     lambda e: process.run_in_background('../etc', ['true'], e.rundir),
     ConfigurationError, 'letters, digits, dots'),
    ('process name empty',
     lambda e: process.run_in_background('', ['true'], e.rundir),
     ConfigurationError, 'usable as a file name'),
    ('process name too long',
     lambda e: process.run_in_background('a' * 101, ['true'], e.rundir),
     ConfigurationError, '1-100'),
    ('process command a string',
     lambda e: process.run_in_background('ok', 'sleep 1', e.rundir),
     ConfigurationError, 'non-empty list of strings'),
    ('process command empty',
     lambda e: process.run_in_background('ok', [], e.rundir),
     ConfigurationError, 'non-empty list of strings'),
    ('process command not found',
     lambda e: process.run_in_background(
         'ok', ['no-such-command-anywhere'], e.rundir),
     ConfigurationError, 'check PATH'),
    ('process argument not text',
     lambda e: process.run_in_background('ok', ['sleep', 1], e.rundir),
     ConfigurationError, 'non-empty list of strings'),
    ('kill a bad name', lambda e: process.kill('a b', rundir=e.rundir),
     ConfigurationError, 'usable as a file name'),
    ('is_running no name', lambda e: process.is_running(None, e.rundir),
     ConfigurationError, 'usable as a file name'),
    # -- the command line --
    ('cli no command', lambda e: e.cli(),
     CommandLineFailed, 'exit 2: cipher-background: error: name a command'),
    ('cli unknown command', lambda e: e.cli('launch'),
     CommandLineFailed, 'exit 2'),
    ('cli threads zero',
     lambda e: e.cli('worker', '--zodb', 'memory://', '--site', '/site',
                     '--worker', 'cli_workers:ThreeUnits', '--threads', '0'),
     CommandLineFailed, '--threads must be at least 1'),
    ('cli worker spec',
     lambda e: e.cli('worker', '--zodb', 'memory://', '--site', '/site',
                     '--worker', 'cli_workers.ThreeUnits'),
     CommandLineFailed, 'exit 2: cipher-background: error: --worker takes'),
    ('cli worker not a worker',
     lambda e: e.cli('worker', '--zodb', 'memory://', '--site', '/site',
                     '--worker', 'cli_workers:NotAWorker'),
     CommandLineFailed, 'not a BackgroundWorkerThread subclass'),
    ('cli no database file',
     lambda e: e.cli('worker', '--zodb',
                     'file://%s' % (e.tmp_path / 'missing.fs'),
                     '--site', '/site', '--worker', 'cli_workers:ThreeUnits'),
     CommandLineFailed, 'no database file at'),
    ('cli bad database URI',
     lambda e: e.cli('worker', '--zodb', 'nonsense://x', '--site', '/site',
                     '--worker', 'cli_workers:ThreeUnits'),
     CommandLineFailed, 'use a URI such as'),
    ('cli start without a command',
     lambda e: e.cli('start', '--rundir', e.rundir, 'name'),
     CommandLineFailed, 'start NAME -- COMMAND'),
    ('cli start a bad name',
     lambda e: e.cli('start', '--rundir', e.rundir, '../x', '--', 'true'),
     CommandLineFailed, 'exit 2: cipher-background: error: process name'),
    ('cli stop a bad name',
     lambda e: e.cli('stop', '--rundir', e.rundir, '../x'),
     CommandLineFailed, 'usable as a file name'),
]


def _other_database_object():
    db = DB(MappingStorage())
    conn = db.open()
    conn.root()['x'] = obj = PersistentMapping()
    transaction.commit()
    return obj   # still reachable: its connection stays open for the call


@pytest.fixture
def env(file_db, tmp_path):
    add_site(file_db)
    conn = file_db.open()
    conn.root()['stored'] = _Stored()
    transaction.commit()
    rundir = str(tmp_path / 'run')
    before = file_db.lastTransaction()
    yield Env(file_db, conn, rundir, tmp_path)
    transaction.abort()
    conn.close()
    assert file_db.lastTransaction() == before, 'a bad call committed'
    assert not os.path.exists(rundir) or os.listdir(rundir) == [], \
        'a bad call wrote to the run directory'


def test_the_table_is_long_enough():
    assert len(BAD_INPUT) >= 30


@pytest.mark.parametrize('call,error,words',
                         [row[1:] for row in BAD_INPUT],
                         ids=[row[0] for row in BAD_INPUT])
def test_bad_input_is_refused_clearly_and_writes_nothing(env, call, error,
                                                         words):
    with pytest.raises(error) as raised:
        call(env)
        transaction.commit()  # a job queued despite the mistake would run
    assert words in str(raised.value)
    if issubclass(error, BackgroundError):
        assert len(str(raised.value)) > 30  # says what to do, not just no


# -- property-based --

_NAME_CHARS = string.ascii_letters + string.digits + '._-'


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=120))
@example('indexer\n')  # re.match with '$' once let a trailing newline in
def test_process_names_are_accepted_only_when_safe_as_file_names(name):
    """Any text is either a safe file name or refused before anything is
    written: never a path outside the run directory."""
    rundir = '/nonexistent/cipher-background-run'  # never created
    safe = (1 <= len(name) <= 100 and name[0] in _NAME_CHARS[:62]
            and all(c in _NAME_CHARS for c in name))
    if safe:
        assert process.is_running(name, rundir) is False
    else:
        with pytest.raises(ConfigurationError, match='usable as a file'):
            process.is_running(name, rundir)
    assert not os.path.exists(rundir)


_plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope='module')
def immediate_site():
    """A database with a site, shared by the examples of one test."""
    db = DB(MappingStorage())
    add_site(db)
    conn = db.open()
    yield conn.root()['site']
    transaction.abort()
    conn.close()
    db.close()


def _echo(*args, **kwargs):
    return [list(args), kwargs]


@settings(max_examples=60, deadline=None)
@given(args=st.lists(_plain_values, max_size=4),
       kwargs=st.dictionaries(
           st.text(min_size=1, max_size=8).filter(str.isidentifier),
           _plain_values, max_size=4))
def test_any_plain_job_arguments_reach_the_callable_unchanged(
        immediate_site, args, kwargs):
    from cipher.background.testing import immediate
    with immediate():
        job_id = jobs.submit(_echo, args, kwargs, site=immediate_site,
                             user='editor')
        transaction.commit()
    status = jobs.get_status(job_id)
    assert status.state == 'succeeded', status.error
    assert status.result == [args, kwargs]
