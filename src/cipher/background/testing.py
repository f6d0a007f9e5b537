"""Helpers for the tests of applications that use cipher.background."""
import io
import logging


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
