"""Capture of a job's log records and job_output() writes, without any
change to sys.stdout, sys.stderr or the loggers' handlers."""
import contextlib
import io
import logging
import subprocess
import sys
import threading

import pytest

from cipher.background.errors import NotInJob
from cipher.background.output import captured
from cipher.background.output import job_output
from helpers import TIMEOUT


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
        self.seen = []  # each record's attributes as this handler got it

    def emit(self, record):
        self.records.append(record)
        self.seen.append(dict(vars(record)))


@pytest.fixture
def log(request):
    """A logger of this test, enabled for INFO, with its handler."""
    logger = logging.getLogger('test_output.' + request.node.name)
    logger.setLevel(logging.INFO)
    handler = ListHandler()
    logger.addHandler(handler)
    logger.handler = handler
    yield logger
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


@pytest.fixture
def saved_factory():
    """Restore the log record factory in effect before the test."""
    factory = logging.getLogRecordFactory()
    yield factory
    logging.setLogRecordFactory(factory)


def run_threads(*targets):
    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,))
               for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), 'threads hung'
    assert not errors, errors


def run_python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_a_record_logged_inside_a_capture_reaches_the_sink(log):
    out = []
    with captured(out.append):
        log.info('checking links of %s', 'Annual report')
    log.info('after the capture')
    assert out == ['INFO %s checking links of Annual report\n' % log.name]
    assert len(log.handler.records) == 2  # and still handled as usual


def test_a_logged_exception_brings_its_traceback(log):
    out = []
    with captured(out.append):
        try:
            raise ValueError('the second half failed')
        except ValueError:
            log.exception('job failed')
    text = ''.join(out)
    assert text.startswith('ERROR %s job failed\nTraceback' % log.name)
    assert text.endswith('ValueError: the second half failed\n')
    seen = log.handler.seen[0]  # the record reached handlers unformatted
    assert seen['exc_text'] is None and 'message' not in seen


def test_a_record_of_a_logger_disabled_for_its_level_is_not_captured(log):
    log.setLevel(logging.WARNING)
    out = []
    with captured(out.append):
        log.info('not enabled')
        log.warning('enabled')
    assert out == ['WARNING %s enabled\n' % log.name]


def test_records_of_another_thread_do_not_reach_this_threads_sink(log):
    both_capturing = threading.Barrier(2, timeout=TIMEOUT)
    both_logged = threading.Barrier(2, timeout=TIMEOUT)
    outputs = {'a': [], 'b': []}

    def job(name):
        with captured(outputs[name].append):
            both_capturing.wait()
            log.info('from %s', name)
            both_logged.wait()
            log.info('%s again', name)

    run_threads(lambda: job('a'), lambda: job('b'))
    assert outputs == {
        'a': ['INFO %s from a\n' % log.name, 'INFO %s a again\n' % log.name],
        'b': ['INFO %s from b\n' % log.name, 'INFO %s b again\n' % log.name]}
    assert len(log.handler.records) == 4


def test_a_capture_leaves_the_streams_and_the_root_handlers_alone(log):
    stdout, stderr = sys.stdout, sys.stderr
    root_handlers = list(logging.getLogger().handlers)
    with captured(lambda text: None):
        print('a print inside')
        log.warning('a record inside')
        assert sys.stdout is stdout and sys.stderr is stderr
        assert logging.getLogger().handlers == root_handlers
    assert sys.stdout is stdout
    assert sys.stderr is stderr
    assert logging.getLogger().handlers == root_handlers


def test_last_resort_still_reports_errors_after_a_capture():
    result = run_python(
        'import logging, sys\n'
        'from cipher.background.output import captured\n'
        'out = []\n'
        'with captured(out.append):\n'
        '    logging.getLogger("x").error("the disk is on fire")\n'
        'logging.getLogger("x").error("the roof is on fire")\n'
        'sys.stdout.write("".join(out))\n')
    assert result.returncode == 0, result.stderr
    assert 'the disk is on fire' in result.stderr
    assert 'the roof is on fire' in result.stderr
    assert result.stdout == 'ERROR x the disk is on fire\n'


def test_basic_config_works_after_a_capture():
    result = run_python(
        'import logging, sys\n'
        'from cipher.background.output import captured\n'
        'with captured(lambda text: None):\n'
        '    pass\n'
        'logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n'
        'logging.getLogger("x").info("hello")\n')
    assert result.returncode == 0, result.stderr
    assert 'INFO:x:hello' in result.stdout


def test_job_output_skips_another_threads_redirect_stdout():
    redirected = threading.Event()
    written = threading.Event()
    buf = io.StringIO()
    out = []

    def other_thread():
        with contextlib.redirect_stdout(buf):
            redirected.set()
            assert written.wait(TIMEOUT)

    def job():
        with captured(out.append):
            assert redirected.wait(TIMEOUT)
            try:
                print('step 2 of 5', file=job_output())
            finally:
                written.set()

    run_threads(other_thread, job)
    assert ''.join(out) == 'step 2 of 5\n'
    assert buf.getvalue() == ''


def test_job_output_is_a_writable_text_stream():
    out = []
    with captured(out.append):
        stream = job_output()
        assert isinstance(stream, io.TextIOBase)
        assert stream.writable()
        assert stream.write('abc') == 3
        assert stream.write('') == 0
        stream.flush()
        with pytest.raises(TypeError):
            stream.write(b'bytes')
    assert out == ['abc']


def test_a_nested_capture_restores_the_outer_sink(log):
    outer, inner = [], []
    with captured(outer.append):
        log.info('outer 1')
        with captured(inner.append):
            log.info('inner')
            print('inner print', file=job_output())
        log.info('outer 2')
        print('outer print', file=job_output())
    assert inner == ['INFO %s inner\n' % log.name, 'inner print', '\n']
    assert outer == ['INFO %s outer 1\n' % log.name,
                     'INFO %s outer 2\n' % log.name, 'outer print', '\n']


def test_job_output_outside_a_capture_raises_not_in_job():
    with pytest.raises(NotInJob) as raised:
        job_output()
    assert 'only inside a running job' in str(raised.value)
    assert 'print(..., file=job_output())' in str(raised.value)


def test_a_job_output_stream_refuses_writes_after_its_job_ended():
    out = []
    with captured(out.append):
        stream = job_output()
    with pytest.raises(NotInJob) as raised:
        stream.write('too late')
    assert 'has ended' in str(raised.value)
    assert out == []


def test_a_failing_sink_does_not_break_the_logging_call(log):
    def sink(text):
        raise OSError('the job store is gone')

    with captured(sink):
        assert log.warning('still logged') is None  # returned normally
    assert [r.getMessage() for r in log.handler.records] == ['still logged']


def test_what_the_sink_logs_is_not_fed_back_into_it(log):
    out = []

    def sink(text):
        out.append(text)
        log.info('the sink wrote %d characters', len(text))

    with captured(sink):
        log.info('once')
    assert out == ['INFO %s once\n' % log.name]
    assert len(log.handler.records) == 2


def test_a_blank_record_of_make_log_record_is_not_captured():
    out = []
    with captured(out.append):
        record = logging.makeLogRecord({'name': 'x', 'msg': 'from a socket'})
    assert record.getMessage() == 'from a socket'
    assert out == []


def test_a_factory_set_after_ours_is_wrapped_and_kept(log, saved_factory):
    with captured(lambda text: None):  # ours is installed now
        pass
    ours = logging.getLogRecordFactory()

    def tagging_factory(*args, **kwargs):
        record = ours(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagging_factory)
    out = []
    with captured(out.append):
        log.info('tagged and captured')
    assert out == ['INFO %s tagged and captured\n' % log.name]  # just once
    assert log.handler.records[0].tagged is True
    assert logging.getLogRecordFactory() is not tagging_factory  # wrapped
