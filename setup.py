"""Setup for cipher.background: the single source of the package metadata."""
import os

from setuptools import find_namespace_packages
from setuptools import setup


def read(*names):
    with open(os.path.join(os.path.dirname(__file__), *names)) as f:
        return f.read()


PYRAMID_REQUIRE = [
    'pyramid >= 2.0',
    'pyramid_tm',
]

# Zope 5 needs ZODB < 6 beside it: pip install 'cipher.background[zope]'
# 'Zope < 6' 'ZODB < 6'.
ZOPE_REQUIRE = [
    'Zope >= 5',
]

TESTS_REQUIRE = PYRAMID_REQUIRE + ZOPE_REQUIRE + [
    'Products.PluggableAuthService',
    'five.localsitemanager',
    'pyramid_zodbconn',
    'pyramid_retry',
    'WebTest',
    'pytest >= 7',
    'pytest-timeout',
    'hypothesis',
    'zope.securitypolicy',
    'zope.configuration',
    'zc.buildout',
    'zc.recipe.egg',
]

setup(
    name='cipher.background',
    version='3.0.dev0',
    description=(
        'Background threads, one-shot jobs and worker processes for Zope '
        'and ZODB applications, with sites, principals and conflict retries'
    ),
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    keywords='zope zodb background thread worker job retry conflict',
    classifiers=[
        'Development Status :: 4 - Beta',
        'Framework :: ZODB',
        'Framework :: Pyramid',
        'Framework :: Zope :: 5',
        'Intended Audience :: Developers',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Topic :: Software Development :: Libraries :: Python Modules',
    ],
    license='ZPL-2.1',
    package_dir={'': 'src'},
    packages=find_namespace_packages('src', include=['cipher.*']),
    include_package_data=True,
    package_data={'cipher.background': ['*.zcml']},
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        'ZODB >= 5.6',
        'ZEO >= 5.2',
        'transaction >= 3.0',
        'persistent',
        'BTrees',
        'zope.interface',
        'zope.component',
        'zope.site',
        'zope.security',
        'zope.authentication',
        'zope.container',
        'zope.processlifetime',
        'zodburi',
    ],
    extras_require={
        'pyramid': PYRAMID_REQUIRE,
        'zope': ZOPE_REQUIRE,
        'test': TESTS_REQUIRE,
    },
    entry_points={
        'console_scripts': [
            'cipher-background = cipher.background.cli:main',
        ],
    },
)
