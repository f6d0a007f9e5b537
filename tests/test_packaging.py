"""The distributions: ``python -m build`` makes an sdist and a wheel with
the metadata of pyproject.toml, and both install into a clean virtualenv
and run the demo."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from helpers import TIMEOUT

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Building (in an isolated environment) and installing take minutes.
SLOW = 600

pytestmark = pytest.mark.timeout(3 * SLOW)


def clean_env():
    return {key: value for key, value in os.environ.items()
            if key not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}


def sh(*args, cwd, timeout=SLOW, status=0):
    done = subprocess.run([str(a) for a in args], cwd=str(cwd),
                          env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == status, '%s\n%s\n%s' % (
        ' '.join(map(str, args)), done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    """The sdist and the wheel, built from a copy of the project."""
    copy = tmp_path_factory.mktemp('packaging') / 'project'
    shutil.copytree(PROJECT, str(copy), ignore=shutil.ignore_patterns(
        '.git', '.venv', '*.egg-info', '__pycache__', 'build', 'dist',
        'var', 'bin', 'eggs', 'parts', 'develop-eggs', '.pytest_cache',
        '.hypothesis'))
    out = copy / 'dist'
    # The PYTHONPATH conftest.py sets lets this Python run build.
    done = subprocess.run([sys.executable, '-m', 'build', '--outdir',
                           str(out), str(copy)], capture_output=True,
                          text=True, timeout=SLOW)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sdist, = out.glob('*.tar.gz')
    wheel, = out.glob('*.whl')
    return sdist, wheel


def test_the_wheel_carries_the_metadata_and_the_zcml(dists):
    _, wheel = dists
    with zipfile.ZipFile(str(wheel)) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith('.dist-info/METADATA'))
        metadata = archive.read(info).decode()
    assert 'cipher/background/configure.zcml' in names
    assert 'cipher/background/zope.zcml' in names
    # The monitor's pages load nothing from elsewhere: their files ship.
    assert 'cipher/background/monitor_static/monitor.js' in names
    assert 'cipher/background/monitor_static/monitor.css' in names
    assert any(n.endswith('licenses/LICENSE.txt') for n in names)
    for line in ['License-Expression: ZPL-2.1',
                 'Project-URL: Source, https://github.com/zopefoundation/'
                 'cipher.background',
                 'Author-email: Zope Foundation and Contributors '
                 '<zope-dev@zope.dev>',
                 'Classifier: Framework :: Zope :: 6',
                 'Classifier: Framework :: Plone',
                 'Classifier: Framework :: Pyramid',
                 'Classifier: Programming Language :: Python :: 3.11',
                 'Requires-Dist: zope.site; extra == "demo"',
                 'Requires-Dist: pytest>=7; extra == "test"']:
        assert line in metadata.splitlines(), line
    assert 'Quick start' in metadata  # the README is the description
    entry_points = archive_text(wheel, 'entry_points.txt')
    assert 'cipher-background = cipher.background.cli:main' in entry_points


def archive_text(wheel, suffix):
    with zipfile.ZipFile(str(wheel)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(suffix))
        return archive.read(name).decode()


def test_the_sdist_holds_what_builds_and_tests_the_project(dists):
    sdist, _ = dists
    with tarfile.open(str(sdist)) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames()
                 if '/' in name}
    for name in ['pyproject.toml', 'setup.py', 'README.rst', 'CHANGES.rst',
                 'LICENSE.txt', 'buildout.cfg', 'buildout-zeo.cfg',
                 '.ci/run', 'src/cipher/background/configure.zcml',
                 'tests/conftest.py', 'benchmarks/run.py']:
        assert name in names, name


def test_both_install_into_a_clean_venv_and_run_the_demo(dists, tmp_path):
    sdist, wheel = dists
    sh(sys.executable, '-m', 'venv', 'venv', cwd=tmp_path)
    pip, command = tmp_path / 'venv/bin/pip', tmp_path / 'venv/bin/cipher-background'
    # Without its extra, the demo says what to install.
    sh(pip, 'install', '-q', wheel, cwd=tmp_path)
    refused = sh(command, 'demo', cwd=tmp_path, timeout=TIMEOUT, status=1)
    assert "pip install 'cipher.background[demo]'" in refused.stderr
    sh(pip, 'install', '-q', '%s[demo]' % wheel, cwd=tmp_path)
    first = sh(command, 'demo', cwd=tmp_path, timeout=TIMEOUT)
    assert 'doc-1 (Report 1) is PUBLISHED' in first.stdout
    sh(pip, 'install', '-q', '--force-reinstall', '--no-deps', sdist,
       cwd=tmp_path)
    second = sh(command, 'demo', cwd=tmp_path, timeout=TIMEOUT)
    assert 'doc-2 (Report 2) is PUBLISHED' in second.stdout
