"""Helpers for the tests of applications that use cipher.background."""
import contextlib
import io
import logging

from cipher.background.jobs import set_scheduler
from cipher.background.scheduler import ImmediateScheduler


def setUpLogging(logger, level=logging.DEBUG):
    """Capture what ``logger`` (a Logger or its name) logs; return the
    buffer (a StringIO) it is written to.

    The logger stops propagating to its parents until tearDownLogging().
    """
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler._added_by_tests_ = True
    handler._old_propagate_ = logger.propagate
    handler._old_level_ = logger.level
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(level)
    return buf


def tearDownLogging(logger):
    """Undo setUpLogging() on ``logger`` (a Logger or its name)."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    for handler in list(logger.handlers):
        if getattr(handler, '_added_by_tests_', False):
            logger.removeHandler(handler)
            logger.propagate = handler._old_propagate_
            logger.setLevel(handler._old_level_)
            break


@contextlib.contextmanager
def immediate():
    """Run jobs synchronously in the block: each job runs when the
    caller's transaction commits (at once for ``after_commit=False``), in
    a fresh thread the caller waits for, so a test can check its outcome
    right after ``transaction.commit()`` with no waiting, and the job
    never sees the caller's site, interaction or transaction."""
    previous = set_scheduler(ImmediateScheduler())
    try:
        yield
    finally:
        set_scheduler(previous)
