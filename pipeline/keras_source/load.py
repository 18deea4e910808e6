"""Load a user's Keras model file: ``.keras`` / ``.h5``, with ``--custom-objects`` modules.

Owns: reading the model file and the custom-objects module, and turning Keras' load failures into
one-line InputErrors (a missing custom class is named, with how to provide it).
Layer: keras source (above runtime, below export / verification / packaging).
Imports: keras (heavy side, lazily), pipeline.errors. Reads: the model file and the custom-objects
module. Writes: nothing.
"""

from __future__ import annotations

import importlib.util
import inspect
import zipfile
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import InputError

__all__ = ["load_keras_file"]


def _custom_objects(path: Optional[str]) -> dict[str, Any]:
    """Every class and function defined in the Python file ``path``, by name."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--custom-objects: expected a Python file, got {str(p)!r} (not found)")
    spec = importlib.util.spec_from_file_location(f"gru_custom_objects_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything
        raise InputError(f"--custom-objects {str(p)!r} failed to import: {type(exc).__name__}: {exc}") from None
    return {name: obj for name, obj in vars(module).items()
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not name.startswith("_")}


def load_keras_file(path: str | Path, custom_objects_file: Optional[str] = None):
    """Load a Keras 3 ``.keras`` file (or a legacy ``.h5`` Keras 3 can read) without compiling it.

    Raises:
        InputError: missing file, unknown suffix, damaged archive, or a custom class that is not
            registered (the message names it and says how to provide it).
    """
    import keras

    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file not found: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"{str(p)!r}: expected a Keras model file (.keras, or legacy .h5), got {suffix or 'no suffix'!r}")
    if suffix == ".keras" and not zipfile.is_zipfile(p):
        raise InputError(f"{str(p)!r}: expected a .keras archive (zip), got other or damaged content")
    objects = _custom_objects(custom_objects_file)
    try:
        return keras.saving.load_model(p, custom_objects=objects, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises TypeError/ValueError/OSError/... for damaged or foreign files
        text = " ".join(str(exc).split())
        missing = _missing_class(text)
        if missing:
            raise InputError(
                f"{str(p)!r} uses the custom object {missing!r}, which is not registered: pass a Python file that "
                f"defines it with --custom-objects module.py (or register it with "
                f"@keras.saving.register_keras_serializable)") from None
        raise InputError(f"{str(p)!r}: cannot load this Keras model: {type(exc).__name__}: {text[:300]}") from None


def _missing_class(message: str) -> Optional[str]:
    """The class name in Keras' "Could not locate class 'X'" / "Unknown layer: 'X'" messages."""
    import re

    for pattern in (r"Could not locate (?:class|function) '([^']+)'", r"Unknown (?:layer|object|activation)[^']*'([^']+)'"):
        m = re.search(pattern, message)
        if m:
            return m.group(1)
    return None
