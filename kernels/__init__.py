"""C++/CUDA sources of gencbm's custom ops (bias_act, upfirdn2d).

Nothing here is compiled at import time: `engine.ops.builder` builds an op on first CUDA use
(or on `gencbm doctor --build-ops`) from the files in this directory.
"""

from pathlib import Path

SOURCES_DIR = Path(__file__).parent
