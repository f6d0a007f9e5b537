"""cipher.background: background work for Zope and ZODB applications.

The public names, re-exported from the modules that own them.
"""
from cipher.background.context import UnitOfWork
from cipher.background.context import current_connection
from cipher.background.context import current_user_id
from cipher.background.context import renew_transaction
from cipher.background.contextmanagers import ZodbConnection
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.contextmanagers import ZopeTransaction
from cipher.background.durable import DurableJobs
from cipher.background.durable import enqueue
from cipher.background.durable import enqueue_call
from cipher.background.durable import register_database
from cipher.background.durable import schedule
from cipher.background.durable import unschedule
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BadProcessFile
from cipher.background.errors import CommandError
from cipher.background.errors import DatabaseClosed
from cipher.background.errors import JobCancelled
from cipher.background.errors import NotInJob
from cipher.background.errors import NotInUnit
from cipher.background.errors import ObjectNotStored
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import ProcessStartError
from cipher.background.errors import SchedulerShutDown
from cipher.background.errors import WaitTimeout
from cipher.background.jobs import cancel
from cipher.background.jobs import check_cancelled
from cipher.background.jobs import current_job
from cipher.background.jobs import get_job_store
from cipher.background.jobs import get_progress
from cipher.background.jobs import get_scheduler
from cipher.background.jobs import get_status
from cipher.background.jobs import perform
from cipher.background.jobs import set_job_store
from cipher.background.jobs import set_progress
from cipher.background.jobs import set_scheduler
from cipher.background.jobs import submit
from cipher.background.jobs import wait
from cipher.background.jobs import wait_for
from cipher.background.jobstore import JobStatus
from cipher.background.jobstore import MemoryJobStore
from cipher.background.output import job_output
from cipher.background.periodic import PeriodicBackgroundWorkerThread
from cipher.background.queuerunner import QueueRunner
from cipher.background.errors import BackgroundError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.host import ZopeSecurityHost
from cipher.background.host import get_host
from cipher.background.host import set_host
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import PrincipalRequired
from cipher.background.errors import RetriesExhausted
from cipher.background.errors import SiteNotFound
from cipher.background.errors import ThreadBusy
from cipher.background.errors import UnitTransactionEnded
from cipher.background.retry import RetryPolicy
from cipher.background.security import SYSTEM
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import BlockingScheduler
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.scheduler import Task
from cipher.background.scheduler import task
from cipher.background.thread import BackgroundWorkerThread
from cipher.background.shutdown import stop_all
from cipher.background.thread import workers
from cipher.background.workerstatus import WorkerStatus


__all__ = [
    # worker threads
    'BackgroundWorkerThread',
    'PeriodicBackgroundWorkerThread',
    'WorkerStatus',
    'workers',
    'stop_all',
    # one-shot jobs
    'perform',
    'submit',
    'get_status',
    'get_progress',
    'wait',
    'cancel',
    'set_progress',
    'check_cancelled',
    'current_job',
    'wait_for',
    'job_output',
    'JobStatus',
    'MemoryJobStore',
    # durable jobs, stored in the database
    'enqueue',
    'enqueue_call',
    'QueueRunner',
    'DurableJobs',
    'register_database',
    'schedule',
    'unschedule',
    'get_job_store',
    'set_job_store',
    'get_scheduler',
    'set_scheduler',
    # thread-pool schedulers
    'BackgroundScheduler',
    'BlockingScheduler',
    'ImmediateScheduler',
    'Task',
    'task',
    # the unit of work and its parts
    'SYSTEM',
    'UnitOfWork',
    'current_connection',
    'current_user_id',
    'renew_transaction',
    'RetryPolicy',
    'ZodbConnection',
    'ZopeInteraction',
    'ZopeSite',
    'ZopeTransaction',
    # the host seam
    'get_host',
    'set_host',
    'ZopeSecurityHost',
    # errors
    'BackgroundError',
    'ConfigurationError',
    'ArgumentTypeError',
    'NotASite',
    'AlreadyStarted',
    'BadProcessFile',
    'CommandError',
    'DatabaseClosed',
    'Interrupted',
    'JobCancelled',
    'NotInUnit',
    'NotInJob',
    'ObjectNotStored',
    'OutcomeUnknown',
    'PrincipalNotFound',
    'PrincipalRequired',
    'ProcessStartError',
    'RetriesExhausted',
    'SchedulerShutDown',
    'SiteNotFound',
    'ThreadBusy',
    'UnitTransactionEnded',
    'WaitTimeout',
]
