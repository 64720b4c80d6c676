"""cffi (API mode) builder of ``plugin_host.native._barforge_shm`` over barforge_shm.c.

Used by setup.py (``cffi_modules``) at ``pip install``; ``python plugin_host/native/build_ffi.py``
builds it in place for a checkout that is not installed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _cdef_from_header() -> str:
    """The header's declarations, minus what cdef cannot parse (preprocessor lines, extern "C")."""
    text = (HERE / "barforge_shm.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    body = text[text.index('extern "C" {\n#endif') + len('extern "C" {\n#endif'):
                text.index('#ifdef __cplusplus\n}')]
    consts = [f"#define {name} ..." for name in re.findall(r"#define (BF_[A-Z_]+) \d", text)]
    body = re.sub(r"^#.*$", "", body, flags=re.M)
    body = body.replace("[BF_JOB_ID_BYTES + 1]", "[...]")
    return "\n".join(consts) + "\n" + body


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header())
ffibuilder.set_source(
    "plugin_host.native._barforge_shm",
    '#include "barforge_shm.h"',
    # setup.py runs from the repo root and wants a relative path; a direct run builds elsewhere
    sources=[str(HERE / "barforge_shm.c") if __name__ == "__main__"
             else os.path.relpath(HERE / "barforge_shm.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-std=c11", "-O2"],
    libraries=["rt"],
)

if __name__ == "__main__":
    import shutil
    import tempfile

    # Build outside the checkout (cffi would read its pyproject.toml) and drop the module here.
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        shutil.copy2(built, HERE / built.name)
        print(HERE / built.name)
