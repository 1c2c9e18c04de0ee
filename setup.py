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
    "zkpy/core/serving.py",
    "zkpy/core/sessions.py",
    "zkpy/core/tree.py",
    "zkpy/core/watches.py",
    "zkpy/_net/outbox.py",
    "zkpy/_net/receiver.py",
    "zkpy/server/clients.py",
    "zkpy/server/node.py",
    "zkpy/server/peers.py",
    "zkpy/wire/client.py",
    "zkpy/wire/frames.py",
    "zkpy/wire/jute.py",
    "zkpy/wire/peer.py",
    "zkpy/zab/election.py",
    "zkpy/zab/follower.py",
    "zkpy/zab/leader.py",
    "zkpy/zab/ready.py",
    "zkpy/zab/replica.py",
    "zkpy/zab/role.py",
]
# Left pure on purpose: zkpy/core/txn.py and requests.py (mypyc makes `Final` dataclass fields
# read-only, which the dataclass's own __init__ then cannot set), wal.py (a test patches it),
# paths.py, the client (async generators) and the peer messages (slower compiled).

# mypyc type-checks the modules it compiles, so the build needs the runtime dependencies too
# (keep in step with [project] dependencies in pyproject.toml)
BUILD_REQUIRES = [
    "mypy>=1.10",
    "trio>=0.31",
    "anyio>=4.16",
    "msgpack>=1.0",
    "lmdb>=1.4",
    "click>=8.1",
]

if os.environ.get("ZKPY_COMPILE") == "1":
    if "editable_wheel" in sys.argv or "develop" in sys.argv:
        sys.exit("ZKPY_COMPILE=1 builds are not editable: use `ZKPY_COMPILE=1 pip install .`")
    try:
        from mypyc.build import mypycify
    except ImportError:
        if "egg_info" not in sys.argv:
            sys.exit(f"ZKPY_COMPILE=1 needs mypy to build: pip install {' '.join(BUILD_REQUIRES)}")
        # pip's isolated build asks for its requirements first (egg_info): name them, and pip
        # runs this again with them installed
        setup(setup_requires=BUILD_REQUIRES)
    else:
        setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))
else:
    setup()
