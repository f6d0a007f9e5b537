"""What the ``cipher-background`` commands open, and how they say no
(private): databases named by zodburi URIs or FileStorage paths, worker
modules by name; a mistake a person must fix is a :class:`UsageError`
(exit status 2)."""
import argparse
import importlib
import os
import sys

from cipher.background.errors import CommandError


class UsageError(Exception):
    """A usage mistake reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError('%s (see %s --help)' % (message, self.prog))


def one_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_file_storage(path, option):
    """A usage error unless ``path`` is a FileStorage file, or nothing yet
    (checked before FileStorage makes its .lock, .tmp and .index files
    beside it)."""
    if not path:
        raise UsageError('%s needs a file name' % option)
    if not os.path.exists(path):
        return
    if not os.path.isfile(path):
        raise UsageError('%s %s is not a regular file' % (option, path))
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic and magic not in _FILE_STORAGE_MAGIC:
        raise UsageError('%s %s is not a FileStorage file (it does not '
                         'start with FS21 or FS30)' % (option, path))


#: The first bytes of a FileStorage file (ZODB 5 and 6 on Python 3, and
#: older files).
_FILE_STORAGE_MAGIC = (b'FS30', b'FS21')


def open_file_storage(path):
    from zc.lockfile import LockError
    from ZODB.FileStorage import FileStorage

    check_file_storage(path, '--db')
    made = _files_beside(path)
    try:
        return FileStorage(path)
    except LockError:
        raise CommandError('%s is in use by another process (a Zope '
                           'instance, a ZEO server or a worker): stop it, '
                           'or use another --db' % path)
    except Exception as exc:
        _remove_new(made)
        raise UsageError('cannot open %s as a FileStorage: %s: %s'
                         % (path, type(exc).__name__, one_line(exc)))


def _files_beside(path):
    """The files FileStorage makes beside ``path`` that are not there yet
    (to remove when opening fails)."""
    return [path + suffix for suffix in ('.lock', '.tmp', '.index')
            if not os.path.exists(path + suffix)]


def _remove_new(paths):
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def open_database(uri, connect_timeout=None):
    import zodburi
    from zc.lockfile import LockError
    from ZEO.Exceptions import ClientDisconnected
    from ZODB import DB

    if uri.startswith('zeo://') and connect_timeout is not None:
        uri = _with_wait_timeout(uri, connect_timeout)
    try:
        factory, db_kwargs = zodburi.resolve_uri(uri)
    except Exception as exc:
        raise UsageError('cannot use --zodb %r: %s; use a URI such as '
                         'file:///path/Data.fs or zeo://host:port'
                         % (uri, one_line(exc)))
    if uri.startswith('file://'):
        path = uri[len('file://'):].split('?', 1)[0]
        if not os.path.exists(path):
            raise UsageError('no database file at %s; check --zodb'
                             % path)
        check_file_storage(path, '--zodb')
        made = _files_beside(path)
    server = None
    if uri.startswith('zeo://'):
        server = uri[len('zeo://'):].split('?', 1)[0]
        print('cipher-background: connecting to the ZEO server at %s '
              '(waiting up to %s s: --connect-timeout)'
              % (server, connect_timeout), file=sys.stderr, flush=True)
    try:
        return DB(factory(), **db_kwargs)
    except ClientDisconnected as exc:
        raise CommandError('no ZEO server answered at %s within %s s (%s); '
                           'start it, or check --zodb'
                           % (server, connect_timeout, one_line(exc)))
    except Exception as exc:
        if uri.startswith('file://') and not isinstance(exc, LockError):
            _remove_new(made)
            raise UsageError('cannot open the database %s: %s: %s' % (
                uri.split('?', 1)[0], type(exc).__name__, one_line(exc)))
        raise CommandError('cannot open the database %s: %s'
                           % (uri.split('?', 1)[0], one_line(exc)))


def _with_wait_timeout(uri, seconds):
    """``uri`` with ZEO's ``wait_timeout`` set to ``seconds`` (whole
    seconds, as zodburi takes them), replacing any given in the URI."""
    from urllib.parse import parse_qsl
    from urllib.parse import urlencode
    base, _, query = uri.partition('?')
    params = [(key, value) for key, value in parse_qsl(query)
              if key != 'wait_timeout']
    params.append(('wait_timeout', str(seconds)))
    return base + '?' + urlencode(params)


def worker_class(spec):
    from cipher.background.thread import BackgroundWorkerThread

    module_name, _, class_name = spec.partition(':')
    if not module_name or not class_name:
        raise UsageError('--worker takes MODULE:CLASS, not %r' % spec)
    add_working_directory()
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        raise UsageError('cannot import the worker %s: %s: %s' % (
            spec, type(exc).__name__, one_line(exc)))
    if not (isinstance(cls, type) and issubclass(cls,
                                                 BackgroundWorkerThread)):
        raise UsageError('%s is not a BackgroundWorkerThread subclass'
                         % spec)
    return cls


def add_working_directory():
    """Put the working directory on sys.path, as ``celery`` and
    ``gunicorn`` do: a module of workers or jobs there is found without
    PYTHONPATH."""
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
