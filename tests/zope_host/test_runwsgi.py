"""A real runwsgi instance, stopped by SIGTERM (what systemd, supervisord
and Docker send) while a start-up worker's unit is in progress: the unit
ends, commits, and the database is closed after it."""
import os
import signal
import subprocess
import sys
import time


from conftest import SERVER_URL
from conftest import ZOPE_CONF
from helpers import TIMEOUT
from helpers import free_port
from helpers import read_file_storage
from helpers import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))

SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope"
           xmlns:five="http://namespaces.zope.org/five">
  <include package="Zope2.App" />
  <five:loadProducts file="meta.zcml"/>
  <five:loadProducts />
  <include package="cipher.background" />
  <utility name="holding"
           provides="cipher.background.interfaces.IWorkerFactory"
           component="instance_workers.factory" />
  <five:loadProductsOverrides />
</configure>
"""

ZOPE_INI = """\
[app:main]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}
"""


def wait_for_file(path, process):
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path):
        assert process.poll() is None, 'runwsgi ended early'
        assert time.monotonic() < deadline, '%s never appeared' % path
        time.sleep(0.05)  # polling another process's file, nothing else


def test_sigterm_lets_the_unit_finish_before_the_database_closes(tmp_path):
    home = tmp_path / 'instance'
    for folder in ('etc', 'var'):
        (home / folder).mkdir(parents=True)
    (home / 'etc' / 'zope.conf').write_text(
        ZOPE_CONF.format(home=home, url=SERVER_URL))
    (home / 'etc' / 'site.zcml').write_text(SITE_ZCML)
    (home / 'etc' / 'zope.ini').write_text(ZOPE_INI.format(port=free_port()))
    marker = tmp_path / 'unit-started'
    env = subprocess_env()
    env['PYTHONPATH'] = HERE + os.pathsep + env['PYTHONPATH']
    env['CIPHER_TEST_MARKER'] = str(marker)
    env.pop('CIPHER_BACKGROUND_START_WORKERS', None)
    # What the runwsgi script runs (a buildout has no such script beside
    # sys.executable).
    runwsgi = [sys.executable, '-c', 'import sys; '
               'from Zope2.Startup.serve import main; sys.exit(main())']
    process = subprocess.Popen(
        runwsgi + [str(home / 'etc' / 'zope.ini')], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_file(marker, process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert 'Traceback' not in output and 'Error' not in output, output
    assert read_file_storage(
        home / 'var' / 'Data.fs',
        lambda root: root['Application'].bgsite.finished) is True
