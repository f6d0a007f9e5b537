"""The examples of README.rst run as shown."""
import doctest
import os

README = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'README.rst')


def test_readme_examples():
    failures, tried = doctest.testfile(
        README, module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 20
    assert failures == 0
