"""The ``cipher-background`` command (also ``python -m cipher.background``).

Errors a user can cause are one line on stderr: exit status 2 for a usage
mistake, 1 for a failure; never a traceback.
"""
import argparse
import os
import sys

from cipher.background.errors import BackgroundError


class _UserError(Exception):
    """A mistake on the command line that is reported in one line."""


def _demo(args):
    from cipher.background import demo
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    path = args.db
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    db = DB(FileStorage(path))
    try:
        worker, name = demo.simulated_request(db, args.user)
        print('Started %s as %s for %s' % (worker.name, args.user, name))
        worker.join(args.timeout)
        if worker.is_alive():
            raise _UserError('the worker did not finish within %ss'
                             % args.timeout)
        conn = db.open()
        try:
            document = conn.root()['site'][name]
            print('%s (%s) is %s; history: %s' % (
                name, document.title, document.state,
                ', '.join('%s by %s' % h for h in document.history)))
        finally:
            conn.close()
        print('Transaction history, newest last:')
        for record in list(db.storage.iterator())[-4:]:
            user = record.user.decode('utf-8').split(' ', 1)[-1]
            note = record.description.decode('utf-8').replace('\n', ' / ')
            print('  %-8s %s' % (user or '-', note))
    finally:
        db.close()
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog='cipher-background',
        description='Background work for Zope and ZODB applications.')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    demo = commands.add_parser(
        'demo', help='run the publication example on a FileStorage',
        description='Create a site with a local publisher and a draft '
        'document in a FileStorage (if missing), publish the document in '
        'a background worker started after the commit of a simulated '
        "request, and print the document's state and the transaction "
        'history.')
    demo.add_argument('--db', default=os.path.join('var', 'Data.fs'),
                      metavar='PATH',
                      help='the FileStorage file (default: %(default)s)')
    demo.add_argument('--user', default='editor',
                      help='the user of the simulated request '
                      '(default: %(default)s)')
    demo.add_argument('--timeout', type=float, default=60.0,
                      help=argparse.SUPPRESS)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Run the command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, 'run', None) is None:
        parser.print_usage(sys.stderr)
        print('cipher-background: error: name a command, e.g. demo',
              file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (_UserError, BackgroundError, OSError) as exc:
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 1
