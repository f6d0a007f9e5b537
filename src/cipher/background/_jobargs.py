"""Persistent objects in a job's arguments and result, by reference.

A job runs in a connection of its own, so the persistent objects of the
caller's connection cannot cross over: they would be written through the
caller's connection, by the wrong user, outside the job's transaction.
:func:`to_refs` replaces each persistent object in the arguments (at any
depth of lists, tuples, sets, frozensets and dicts) by a :class:`Ref`,
whose OID is known at the latest when the caller's transaction commits;
:func:`from_refs` loads them again in the job's connection.  A result is
handed back with :func:`result_oids`: persistent objects become OIDs.
"""
from persistent import Persistent
from ZODB.POSException import POSKeyError

from cipher.background.errors import ConfigurationError
from cipher.background.errors import ObjectNotStored


class Ref:
    """A persistent object, passed by OID (known at the latest at the
    caller's commit) and loaded again in the job's own connection."""

    __slots__ = ('obj', 'oid', 'hint')

    def __init__(self, obj, hint=None):
        self.obj = obj
        self.oid = None
        self.hint = hint  # where the host located it in the caller

    def resolve(self):
        self.oid = self.obj._p_oid
        if self.oid is None:
            raise ObjectNotStored(
                'the persistent argument %r never reached the database '
                '(no OID at dispatch); add it to the database in the '
                "caller's transaction, or pass it after that commits"
                % (self.obj,))
        self.obj = None  # never keep the caller's object past dispatch

    def load(self, connection, host):
        """The object in ``connection``, as ``host`` (an IHost) loads
        objects for user code."""
        try:
            return host.load(connection, self.oid, self.hint)
        except (POSKeyError, KeyError):
            raise ObjectNotStored(
                'the persistent argument with OID %r is not in the database '
                '(it was removed, or its transaction never committed)'
                % (self.oid,)) from None


_SEQUENCES = (list, tuple, set, frozenset)


def to_refs(value, leaf):
    """``value`` with every persistent object replaced by ``leaf(obj)``, at
    any depth of lists, tuples, sets, frozensets and dicts (exact types:
    a subclass is passed as it is).  A container with nothing to replace
    is passed as the very same object."""
    if isinstance(value, Persistent):
        return leaf(value)
    kind = type(value)
    if kind is dict:
        for key in value:
            if isinstance(key, Persistent):
                raise ConfigurationError(
                    'a persistent object (%r) is a dict key in the '
                    "arguments of a job; it cannot cross to the job's "
                    'connection: use its OID as the key' % (key,))
    return _rebuilt(value, kind, lambda item: to_refs(item, leaf))


def from_refs(value, leaf):
    """The inverse of :func:`to_refs`: ``leaf(ref)`` for every Ref."""
    kind = type(value)
    if kind is Ref:
        return leaf(value)
    return _rebuilt(value, kind, lambda item: from_refs(item, leaf))


def _rebuilt(value, kind, convert):
    if not value or not (kind in _SEQUENCES or kind is dict):
        return value
    if kind in _SEQUENCES:
        items = [convert(item) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return kind(items)
    if kind is dict:
        items = {key: convert(item) for key, item in value.items()}
        if all(items[key] is item for key, item in value.items()):
            return value
        return items
    return value


def result_oids(result):
    """The documented rule for results: a persistent object in a job's
    result (at any depth of lists, tuples, sets and dicts) is replaced by
    its OID, so the caller never holds objects of the job's connection."""
    return to_refs(result, lambda obj: obj._p_oid)


def collect_refs(args, kwargs):
    """The Refs among ``args`` and ``kwargs`` (as :func:`to_refs` left
    them), to be resolved when the job is dispatched."""
    refs = []
    from_refs((args, kwargs), lambda ref: refs.append(ref) or ref)
    return refs
