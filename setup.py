from setuptools import setup

# All metadata is in pyproject.toml; this shim only serves old tools.
setup()
