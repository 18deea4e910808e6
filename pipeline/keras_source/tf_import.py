"""Import TensorFlow without its two "oneDNN custom operations are on" notices.

TensorFlow logs that notice through absl from a static initializer of libtensorflow_framework.so.2 and
again of python/profiler/internal/_pywrap_profiler_plugin.so (each holds a copy of port.cc), before
TF_CPP_MIN_LOG_LEVEL is applied, so it prints at every level. TF_ENABLE_ONEDNN_OPTS=0 would silence it
but changes the arithmetic. Instead, what TensorFlow writes to stderr while it is imported goes to a
temporary file and is passed on except those notices and absl's "before absl::InitializeLog()" line.

Owns: ``import_tensorflow``, which the CLIs call before anything imports Keras, so a one-line error is
not buried under TensorFlow's start-up notices. Layer: keras source. Imports: the standard library and
tensorflow. Reads/writes: stderr (file descriptor 2) during the import.
"""

from __future__ import annotations

import os
import sys
import tempfile

_NOTICES = ("oneDNN custom operations are on", "WARNING: All log messages before absl::InitializeLog() is called")


def import_tensorflow():
    """``import tensorflow`` (once per process) with TF_CPP_MIN_LOG_LEVEL defaulting to 2."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(notice in line for notice in _NOTICES):
                    sys.stderr.write(line)
    return tensorflow
