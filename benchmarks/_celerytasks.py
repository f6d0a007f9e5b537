"""The Celery baseline of bench_queue.py: an app on the redis-server
named by $BENCH_REDIS_URL, delivering a task again after
$BENCH_VISIBILITY_TIMEOUT seconds (Celery's default: an hour) when the
worker that took it died before acknowledging it (``acks_late``)."""
import os

from celery import Celery

import _queuejobs

app = Celery('bench', broker=os.environ.get('BENCH_REDIS_URL'),
             backend=os.environ.get('BENCH_REDIS_URL'))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={'visibility_timeout': float(
        os.environ.get('BENCH_VISIBILITY_TIMEOUT', 3600))},
)

started_at = app.task(name='bench.started_at')(_queuejobs.started_at)
noop = app.task(name='bench.noop')(_queuejobs.noop)
mark_then_sleep = app.task(name='bench.mark_then_sleep')(
    _queuejobs.mark_then_sleep)
