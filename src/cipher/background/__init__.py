"""cipher.background: background work for Zope and ZODB applications.

The public names, re-exported from the modules that own them.
"""
from cipher.background.context import UnitOfWork
from cipher.background.contextmanagers import ZodbConnection
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.contextmanagers import ZopeTransaction
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import BackgroundError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import RetriesExhausted
from cipher.background.errors import SiteNotFound
from cipher.background.retry import RetryPolicy
from cipher.background.thread import BackgroundWorkerThread
from cipher.background.thread import PeriodicBackgroundWorkerThread
from cipher.background.thread import WorkerStatus
from cipher.background.thread import stop_all
from cipher.background.thread import workers


__all__ = [
    # worker threads
    'BackgroundWorkerThread',
    'PeriodicBackgroundWorkerThread',
    'WorkerStatus',
    'workers',
    'stop_all',
    # the unit of work and its parts
    'UnitOfWork',
    'RetryPolicy',
    'ZodbConnection',
    'ZopeInteraction',
    'ZopeSite',
    'ZopeTransaction',
    # errors
    'BackgroundError',
    'ConfigurationError',
    'AlreadyStarted',
    'Interrupted',
    'NotASite',
    'PrincipalNotFound',
    'RetriesExhausted',
    'SiteNotFound',
]
