"""The optional compiled build; everything else about the package is in pyproject.toml.

    ZKPY_COMPILE=1 pip install .

compiles the modules on a member's request path (and the client's framing and codec) with
mypyc, as black and mypy ship themselves: the same code, as C extensions, which take about a
fifth less CPU per request (docs/benchmarks.md). Without ZKPY_COMPILE this is a plain
pure-Python build. `zkpy.compiled()` tells which one is installed.

A compiled build cannot be editable: the extension modules would shadow later edits of the
.py files next to them.
"""

import os
import sys

from setuptools import setup

COMPILED_MODULES = [
    "zkpy/core/acl.py",
    "zkpy/core/prep.py",
    "zkpy/core/sessions.py",
    "zkpy/core/tree.py",
    "zkpy/core/watches.py",
    "zkpy/outbox.py",
    "zkpy/receiver.py",
    "zkpy/server/clients.py",
    "zkpy/server/node.py",
    "zkpy/server/peers.py",
    "zkpy/wire/client.py",
    "zkpy/wire/frames.py",
    "zkpy/wire/peer.py",
    "zkpy/zab/replica.py",
]

if os.environ.get("ZKPY_COMPILE") == "1":
    if "editable_wheel" in sys.argv:
        sys.exit("ZKPY_COMPILE=1 builds are not editable: use `ZKPY_COMPILE=1 pip install .`")
    try:
        from mypyc.build import mypycify
    except ImportError:  # first pass of an isolated build: ask for mypy, then come back
        setup(setup_requires=["mypy>=1.10"])
    else:
        setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))
else:
    setup()
