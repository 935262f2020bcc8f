"""Only what setup.cfg cannot declare: the optional C extension.

Metadata, dependencies and scripts are in setup.cfg. The extension
(logd/_speedups.c; logd/speedups.py picks it or pure Python) is optional: without
a compiler or Python's headers the build goes on and logd runs in pure Python,
as redis-py does without hiredis. zlib: Debian's python3-dev depends on zlib1g-dev.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("logd._speedups", ["logd/_speedups.c"], libraries=["z"], optional=True)])
