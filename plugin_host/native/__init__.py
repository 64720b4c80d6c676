"""The C shared-memory library (barforge_shm.{h,c}) and its cffi binding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "barforge_shm.c", HERE / "barforge_shm.h")


def load_native():
    """(ffi, lib) of the compiled module; a checkout that was not pip-installed builds it in
    place on first use (needs a C compiler)."""
    try:
        from plugin_host.native._barforge_shm import ffi, lib
        return ffi, lib
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, str(HERE / "build_ffi.py")], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise ImportError("plugin_host.native._barforge_shm is not built and building it failed "
                          "(pip install . or python plugin_host/native/build_ffi.py):\n"
                          + proc.stderr[-2000:])
    from plugin_host.native._barforge_shm import ffi, lib
    return ffi, lib
