"""Shared test setup: make the test helpers in this folder (e.g. `nvidia_format`) importable.

pytest (import mode "prepend") puts this folder first on sys.path to import this file. Because
tests/engine/ has no __init__.py, `import engine` would then find it as a namespace package and
shadow the installed (editable) `engine`. So the real package is imported first, with this folder
out of the way; `engine` is cheap to import (torch loads lazily).
"""

import os
import sys
from pathlib import Path

import tempfile

# Tests never touch the user's artifact store: an empty one per run unless a test sets its own.
os.environ["GENCBM_HOME"] = tempfile.mkdtemp(prefix="gencbm-test-home-")

# Tiny test models gain nothing from intra-op threads; on 2 cores OpenMP barriers make them much slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_TESTS = Path(__file__).resolve().parent
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TESTS]
try:
    import engine  # noqa: F401  (cached in sys.modules: later imports use the real package)
finally:
    sys.path[:] = _saved
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    barriers make them 10-50x slower (OMP_NUM_THREADS above covers a fresh process; this also covers
    a shell that set OMP_NUM_THREADS itself). Subprocesses the tests start inherit the environment."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
