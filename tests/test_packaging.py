"""The distributions: ``python -m build`` makes an sdist and a wheel with
the metadata of pyproject.toml, and both install into a clean virtualenv
and run the demo."""
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from helpers import TIMEOUT
import prebuild

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Building (in an isolated environment) and installing take minutes.
SLOW = 600

pytestmark = pytest.mark.timeout(3 * SLOW)


def clean_env():
    return {key: value for key, value in os.environ.items()
            if key not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}


def sh(commands, *args, cwd, timeout=SLOW, status=0, env=None):
    """Run ``args``; fail unless it exits with ``status``."""
    args = [str(arg) for arg in args]
    returncode, stdout, stderr = commands.run(
        args, cwd, clean_env() if env is None else env, timeout)
    assert returncode == status, '%s\n%s\n%s' % (
        ' '.join(args), stdout[-3000:], stderr[-3000:])
    return subprocess.CompletedProcess(args, returncode, stdout, stderr)


def build_and_install(commands, folder):
    """The sdist and the wheel, built from a copy of the project; then,
    in a clean virtualenv, the wheel installed without and with its demo
    extra and the sdist over it, the demo run after each step."""
    folder = pathlib.Path(folder)
    copy = folder / 'project'
    shutil.copytree(PROJECT, str(copy), ignore=shutil.ignore_patterns(
        '.git', '.venv', '*.egg-info', '__pycache__', 'build', 'dist',
        'var', 'bin', 'eggs', 'parts', 'develop-eggs', '.pytest_cache',
        '.hypothesis', 'test-artifacts'))
    out = copy / 'dist'
    # The PYTHONPATH conftest.py sets lets this Python run build.
    sh(commands, sys.executable, '-m', 'build', '--outdir', out, copy,
       cwd=folder, env=dict(os.environ))
    sdist, = out.glob('*.tar.gz')
    wheel, = out.glob('*.whl')
    sh(commands, sys.executable, '-m', 'venv', 'venv', cwd=folder)
    pip = folder / 'venv/bin/pip'
    command = folder / 'venv/bin/cipher-background'
    sh(commands, pip, 'install', '-q', wheel, cwd=folder)
    demos = {}
    demos['without the extra'] = sh(commands, command, 'demo', cwd=folder,
                                    timeout=TIMEOUT, status=1)
    sh(commands, pip, 'install', '-q', '%s[demo]' % wheel, cwd=folder)
    demos['wheel'] = sh(commands, command, 'demo', cwd=folder,
                        timeout=TIMEOUT)
    sh(commands, pip, 'install', '-q', '--force-reinstall', '--no-deps',
       sdist, cwd=folder)
    demos['sdist'] = sh(commands, command, 'demo', cwd=folder,
                        timeout=TIMEOUT)
    return sdist, wheel, demos


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(sdist, wheel, the demo's runs) (conftest.py starts this as the
    session begins when these tests are selected)."""
    return prebuild.result('packaging', build_and_install,
                           str(tmp_path_factory.mktemp('packaging')), SLOW)


@pytest.fixture
def dists(installed):
    return installed[:2]


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


def test_both_install_into_a_clean_venv_and_run_the_demo(installed):
    _, _, demos = installed
    # Without its extra, the demo says what to install.
    assert "pip install 'cipher.background[demo]'" in \
        demos['without the extra'].stderr
    assert 'doc-1 (Report 1) is PUBLISHED' in demos['wheel'].stdout
    assert 'doc-2 (Report 2) is PUBLISHED' in demos['sdist'].stdout
