"""The Zope host's tests (tests/zope_host), in a process of their own: a
Zope instance starts once per process and changes process-wide state (its
security policy, its components) that the rest of the suite must not
see."""
import os
import subprocess
import sys

from conftest import ZOPE_TESTS
from helpers import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_zope_host_in_a_real_zope_instance():
    env = dict(subprocess_env(), **{ZOPE_TESTS: '1'})
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         os.path.join(HERE, 'zope_host')],
        cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ' passed' in done.stdout and 'failed' not in done.stdout
