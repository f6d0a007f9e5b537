"""For zc.buildout and tools that run setup.py: the package's metadata is
in pyproject.toml; only the long description (README.rst then
CHANGES.rst) is put together here."""
import os

from setuptools import setup


def read(*names):
    with open(os.path.join(os.path.dirname(__file__), *names)) as f:
        return f.read()


setup(
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
)
