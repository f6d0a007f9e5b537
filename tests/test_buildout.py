"""buildout.cfg works: zc.buildout on a fresh copy of the project, then
the generated bin/cipher-background."""
import os
import shutil
import subprocess
import sys

from helpers import TIMEOUT

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_buildout_generates_working_scripts(tmp_path):
    copy = tmp_path / 'project'
    copy.mkdir()
    for name in ('setup.py', 'README.rst', 'CHANGES.rst', 'MANIFEST.in',
                 'buildout.cfg'):
        shutil.copy(os.path.join(PROJECT, name), str(copy))
    shutil.copytree(os.path.join(PROJECT, 'src'), str(copy / 'src'),
                    ignore=shutil.ignore_patterns('*.egg-info',
                                                  '__pycache__'))
    buildout = os.path.join(os.path.dirname(sys.executable), 'buildout')
    # Offline: the eggs come from the environment the tests run in.
    done = subprocess.run([buildout, '-o'], cwd=str(copy),
                          capture_output=True, text=True,
                          timeout=TIMEOUT * 5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Generated script '%s'" % (copy / 'bin' / 'cipher-background') \
        in done.stdout
    assert (copy / 'bin' / 'test').exists()
    demo = subprocess.run([str(copy / 'bin' / 'cipher-background'), 'demo'],
                          cwd=str(copy), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert demo.returncode == 0, demo.stderr
    assert 'doc-1 (Report 1) is PUBLISHED' in demo.stdout
    assert (copy / 'var' / 'Data.fs').exists()
