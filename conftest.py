"""pytest: the offline fixtures in ``tests/fixtures.py`` serve ``tests/`` and ``shapes/tests/`` alike."""

pytest_plugins = ["tests.fixtures"]
