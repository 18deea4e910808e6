"""Readers for sequence data files: NPZ, NPY, CSV (long layout), UCR/UEA ``.ts`` and Parquet.

Owns: turning a file into a ``SequenceData`` (right-padded float array + lengths +
optional labels and ids) with one-line errors for anything malformed.
Imports: numpy and the standard library only (used by the runtime and the build); Parquet is
read by ``pipeline.parquet_io``, imported only when a .parquet file is read (pyarrow, the
optional ``parquet`` extra).
Reads: the file it is given. Writes: nothing.

Formats (see README "Data files"):
    .npz  ``X`` (N, T, F) numbers; optional ``y`` (N,) labels (numbers or strings),
          ``lengths`` (N,) real lengths of right-padded rows, ``ids`` (N,). Pickles refused.
    .npy  X alone, (N, T, F).
    .csv  long layout, header ``sample_id,t,<feature columns...>[,label]``, one row per real
          timestep; series may differ in length; rows may come in any order.
    .ts   UCR/UEA text format: ``@`` header lines, then ``@data`` and one series per line,
          dimensions separated by ``:``, values by ``,``, the class label last.
    .parquet  nested layout (``id``, ``x`` list<list<float>>, ragged allowed) or long layout
          (``sample_id, t, <features...>[, label]``), told apart by the columns.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.errors import DataFormatError, InputError

__all__ = ["SequenceData", "read_sequences", "pad_sequences", "iter_npy_chunks", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".npz", ".npy", ".csv", ".ts", ".parquet")
PARQUET_HINT = "pip install 'gru-onnx-pipeline[parquet]'"

# Padding variable-length series to the longest one may cost far more memory than the file holds
# (one long series among many short ones). Refuse when the padded array would exceed this many
# cells AND be more than PAD_BLOWUP times the real values: such a file is hostile or needs splitting.
PAD_MAX_CELLS = 1 << 28  # 1 GiB of float32
PAD_BLOWUP = 16

# Errors the parsers (numpy, zipfile, csv, zlib) raise on malformed content.
_PARSE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, csv.Error,
                 zlib.error, struct.error, OverflowError, NotImplementedError)


@dataclass
class SequenceData:
    """Sequences read from a file, right-padded to a common length.

    Attributes:
        X: (N, T, F) float32, zeros after each row's length.
        lengths: (N,) int64, real number of timesteps of each row (1 <= lengths <= T).
        y: (N,) raw labels as read (numbers or strings), or None when the file has none.
        ids: (N,) str sample ids (from the file, else "0", "1", ...).
        feature_names: names of the F features when the file gives them.
        lengths_given: the file states the lengths (NPZ ``lengths``, or rows of their own length: CSV,
            .ts, Parquet); False for an array without them (.npy, NPZ without ``lengths``), whose
            lengths a model with its own Masking value reads off trailing mask-valued steps.
    """

    X: np.ndarray
    lengths: np.ndarray
    y: Optional[np.ndarray] = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    feature_names: Optional[list[str]] = None
    lengths_given: bool = True

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[2])

    @property
    def variable_length(self) -> bool:
        return bool(self.n_samples and (self.lengths != self.X.shape[1]).any())


def pad_sequences(series: list[np.ndarray], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of (T_i, F) arrays with zeros.

    Returns:
        X: (N, max T_i, F) array of ``dtype``; lengths: (N,) int64.
    """
    if not series:
        raise InputError("expected at least one sequence, got an empty list")
    n_features = {int(s.shape[1]) for s in series}
    if len(n_features) != 1:
        raise InputError(f"all sequences must have the same number of features, got {sorted(n_features)}")
    lengths = np.array([s.shape[0] for s in series], dtype=np.int64)
    n_feat = next(iter(n_features))
    padded = len(series) * int(lengths.max()) * n_feat
    if padded > PAD_MAX_CELLS and padded > PAD_BLOWUP * int(lengths.sum()) * n_feat:
        raise InputError(
            f"padding {len(series)} sequences to the longest ({int(lengths.max())} timesteps) would need "
            f"{padded * np.dtype(dtype).itemsize / 2**30:.1f} GiB for {int(lengths.sum())} real timesteps: "
            "expected sequences of comparable length; split the file or trim the longest series"
        )
    X = np.zeros((len(series), int(lengths.max()), n_features.pop()), dtype=dtype)
    for i, s in enumerate(series):
        X[i, : s.shape[0]] = s
    return X, lengths


def read_sequences(path: str | os.PathLike) -> SequenceData:
    """Read a data file of any supported format, chosen by its suffix.

    Raises:
        DataFormatError: missing/unreadable file, unknown suffix, or malformed content.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataFormatError(
            f"unknown data format {suffix or '(no suffix)'!r} for {str(p)!r}: expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not p.exists():
        raise DataFormatError(f"data file not found: {str(p)!r}")
    if not p.is_file():
        raise DataFormatError(f"expected a data file, got a directory or special file: {str(p)!r}")
    if p.stat().st_size == 0:
        raise DataFormatError(f"data file is empty: {str(p)!r}")
    reader = {".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv, ".ts": _read_ts, ".parquet": _read_parquet}[suffix]
    try:
        data = reader(p)
    except (DataFormatError, InputError):
        raise
    except PermissionError as exc:
        raise DataFormatError(f"cannot read {str(p)!r}: {exc.strerror}") from None
    except _PARSE_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise DataFormatError(f"cannot read {str(p)!r} as {suffix[1:].upper()}: {detail}") from None
    if data.n_samples == 0:
        raise DataFormatError(f"{str(p)!r} holds no samples: expected at least one sequence")
    if data.ids.shape[0] != data.n_samples:
        data.ids = np.array([str(i) for i in range(data.n_samples)])
    return data


# ---------------------------------------------------------------------------- Parquet

def parquet_module():
    """``pipeline.parquet_io``, or a one-line DataFormatError with the install hint when pyarrow is missing."""
    try:
        from pipeline import parquet_io
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "pyarrow":
            raise
        raise DataFormatError(f"reading Parquet needs pyarrow, which is not installed: {PARQUET_HINT}") from None
    return parquet_io


def _read_parquet(p: Path) -> SequenceData:
    return parquet_module().read_parquet_sequences(p)


# ---------------------------------------------------------------------------- NPZ / NPY

def _as_feature_array(arr: np.ndarray, where: str) -> np.ndarray:
    """Check a loaded X array is numeric and rank 3; return it as float32."""
    if arr.dtype.kind not in "biuf":
        raise DataFormatError(f"{where}: expected numeric features, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise DataFormatError(f"{where}: expected X with shape (samples, timesteps, features), got rank {arr.ndim} shape {arr.shape}")
    if 0 in arr.shape:
        raise DataFormatError(f"{where}: expected a non-empty X, got shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        big = np.abs(arr[np.isfinite(arr)]).max(initial=0.0)
        if big > np.finfo(np.float32).max:
            raise DataFormatError(f"{where}: values up to {big:.3g} overflow float32")
    return arr.astype(np.float32, copy=False)


def _npy_header(fh, where: str, size: int) -> tuple[tuple, bool, np.dtype, int]:
    """Read and check a .npy header from ``fh`` holding ``size`` bytes in all.

    Returns (shape, fortran_order, dtype, offset of the data). Refuses pickled objects and
    files whose data is shorter than the header declares (truncated), before allocating anything.
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise DataFormatError(f"cannot read {where}: unsupported .npy format version {version}")
    except DataFormatError:
        raise
    except Exception as exc:  # hostile headers make numpy/ast raise many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataFormatError(f"cannot read {where}: not a valid .npy array (bad header: {detail})") from None
    if dtype.hasobject:
        raise DataFormatError(f"{where} holds Python objects (pickles are refused): expected a numeric array")
    offset = fh.tell()
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if need > size - offset:
        raise DataFormatError(
            f"cannot read {where}: truncated: the header declares shape {shape} ({need} bytes) but only {size - offset} bytes follow"
        )
    if need < size - offset:
        raise DataFormatError(
            f"cannot read {where}: {size - offset - need} unexpected bytes after the array data of shape {shape}: "
            "expected exactly one array (several arrays saved into one file?)"
        )
    return tuple(shape), bool(fortran), dtype, offset


def _read_npy(p: Path) -> SequenceData:
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DataFormatError(f"{str(p)!r}: expected a .npy array file (magic '\\x93NUMPY'), got other content")
        fh.seek(0)
        _npy_header(fh, str(p), p.stat().st_size)
    arr = np.load(p, allow_pickle=False)
    X = _as_feature_array(arr, str(p))
    lengths = np.full(X.shape[0], X.shape[1], dtype=np.int64)
    return SequenceData(X=X, lengths=lengths, lengths_given=False)


def iter_npy_chunks(path: str | os.PathLike, rows: int):
    """Open a large .npy X (N, T, F) for streaming.

    Returns ``(shape, chunks)`` where ``chunks`` yields ``(start, X_chunk)`` with X_chunk a float32
    (<=rows, T, F) array read straight from the file, so memory stays bounded by ``rows``.
    Same checks and errors as ``read_sequences`` (DataFormatError) for the header and content.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"data file not found: {str(p)!r}")
    size = p.stat().st_size
    if size == 0:
        raise DataFormatError(f"data file is empty: {str(p)!r}")
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DataFormatError(f"{str(p)!r}: expected a .npy array file (magic '\\x93NUMPY'), got other content")
        fh.seek(0)
        shape, fortran, dtype, offset = _npy_header(fh, str(p), size)
    if dtype.kind not in "biuf":
        raise DataFormatError(f"{p}: expected numeric features, got dtype {dtype}")
    if len(shape) != 3:
        raise DataFormatError(f"{p}: expected X with shape (samples, timesteps, features), got rank {len(shape)} shape {shape}")
    if 0 in shape:
        raise DataFormatError(f"{p}: expected a non-empty X, got shape {shape}")
    if fortran:
        raise DataFormatError(f"{p}: Fortran-ordered arrays cannot be streamed; save X in C order")
    n, t, f = shape
    row_bytes = t * f * dtype.itemsize
    rows = max(1, int(rows))

    def chunks():
        with open(p, "rb") as fh:
            fh.seek(offset)
            for start in range(0, n, rows):
                count = min(rows, n - start)
                buf = bytearray(count * row_bytes)
                if fh.readinto(buf) != len(buf):
                    raise DataFormatError(f"{p}: truncated while reading rows {start}..{start + count - 1}")
                arr = np.frombuffer(buf, dtype=dtype).reshape(count, t, f)
                yield start, _as_feature_array(arr, str(p))

    return shape, chunks()


def _read_npz(p: Path) -> SequenceData:
    if not zipfile.is_zipfile(p):
        raise DataFormatError(f"{str(p)!r}: expected an NPZ (zip) archive, got other content")
    with np.load(p, allow_pickle=False) as npz:
        keys = set(npz.files)
        if "X" not in keys:
            raise DataFormatError(f"{str(p)!r}: expected an array named 'X' in the NPZ, found {sorted(keys) or 'none'}")
        members = set(npz.zip.namelist())

        def load(key: str) -> np.ndarray:
            member = key + ".npy" if key + ".npy" in members else key
            info = npz.zip.getinfo(member)
            try:
                with npz.zip.open(member) as fh:  # check the header before numpy allocates the array
                    if fh.read(6) != b"\x93NUMPY":
                        raise DataFormatError(f"{p}:{key}: expected a .npy array inside the NPZ, got other content")
                    fh.seek(0)
                    _npy_header(fh, f"{p}:{key}", info.file_size)
                arr = npz[key]
            except RuntimeError as exc:  # zipfile: encrypted member, password required
                raise DataFormatError(f"{p}:{key}: cannot read this NPZ member: {exc}") from None
            if not isinstance(arr, np.ndarray):  # pragma: no cover - numpy returns arrays for .npy members
                raise DataFormatError(f"{p}:{key}: expected an array")
            return arr

        X = _as_feature_array(load("X"), f"{p}:X")
        n, t = X.shape[:2]
        y = load("y") if "y" in keys else None
        if y is not None:
            y = _check_labels(y, n, f"{p}:y")
        if "lengths" in keys:
            lengths = load("lengths")
            if lengths.dtype.kind not in "iu" or lengths.shape != (n,):
                raise DataFormatError(f"{p}:lengths: expected ({n},) integers, got shape {lengths.shape} dtype {lengths.dtype}")
            lengths = lengths.astype(np.int64)
            if (lengths < 1).any() or (lengths > t).any():
                raise DataFormatError(f"{p}:lengths: expected values in [1, {t}], got [{lengths.min()}, {lengths.max()}]")
            X = X.copy()
            X[np.arange(t)[None, :] >= lengths[:, None]] = 0.0  # zero the padding
        else:
            lengths = np.full(n, t, dtype=np.int64)
        ids = np.array([str(i) for i in range(n)])
        if "ids" in keys:
            raw_ids = load("ids")
            if raw_ids.shape != (n,):
                raise DataFormatError(f"{p}:ids: expected shape ({n},), got {raw_ids.shape}")
            ids = raw_ids.astype(str)
    return SequenceData(X=X, lengths=lengths, y=y, ids=ids, lengths_given="lengths" in keys)


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.shape != (n,):
        raise DataFormatError(f"{where}: expected labels of shape ({n},), got {y.shape}")
    if y.dtype.kind not in "biuUS":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            return y.astype(np.int64)
        raise DataFormatError(f"{where}: expected integer or string labels, got dtype {y.dtype}")
    if y.dtype.kind == "S":
        y = y.astype(str)
    return y


# ---------------------------------------------------------------------------- CSV (long)

def _parse_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{where}: expected a number, got {text!r}") from None


def _read_csv(p: Path) -> SequenceData:
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        try:
            header = next(rows)
        except StopIteration:
            raise DataFormatError(f"{str(p)!r} is empty: expected a header sample_id,t,<features...>[,label]") from None
        header = [h.strip() for h in header]
        if len(header) < 3 or header[0] != "sample_id" or header[1] != "t":
            raise DataFormatError(
                f"{p}: expected header 'sample_id,t,<feature columns...>[,label]', got {','.join(header)!r}"
            )
        has_label = header[-1] == "label"
        feature_names = header[2:-1] if has_label else header[2:]
        if not feature_names:
            raise DataFormatError(f"{p}: expected at least one feature column between 't' and 'label'")
        if len(set(header)) != len(header):
            raise DataFormatError(f"{p}: duplicate column names in header {header}")
        width = len(header)
        series: dict[str, list[tuple[float, list[float]]]] = {}
        labels: dict[str, str] = {}
        seen: set[tuple[str, float]] = set()
        for line_no, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) != width:
                raise DataFormatError(f"{p}:{line_no}: expected {width} columns, got {len(row)}")
            sid = row[0].strip()
            if not sid:
                raise DataFormatError(f"{p}:{line_no}: empty sample_id")
            if "\x00" in sid or (has_label and "\x00" in row[-1]):
                raise DataFormatError(f"{p}:{line_no}: NUL byte in a text cell: expected a text CSV, not binary data")
            t = _parse_float(row[1].strip(), f"{p}:{line_no} column 't'")
            if not np.isfinite(t):
                raise DataFormatError(f"{p}:{line_no} column 't': expected a finite time index, got {row[1].strip()!r}")
            if (sid, t) in seen:
                raise DataFormatError(f"{p}:{line_no}: duplicate row for sample_id {sid!r} at t={row[1].strip()}")
            seen.add((sid, t))
            feats = [
                _parse_float(row[2 + j].strip(), f"{p}:{line_no} column {feature_names[j]!r}")
                for j in range(len(feature_names))
            ]
            series.setdefault(sid, []).append((t, feats))
            if has_label:
                lab = row[-1].strip()
                if sid in labels and labels[sid] != lab:
                    raise DataFormatError(
                        f"{p}:{line_no}: sample_id {sid!r} has label {lab!r} but earlier rows say {labels[sid]!r}"
                    )
                labels[sid] = lab
    if not series:
        raise DataFormatError(f"{str(p)!r} has a header but no data rows")
    ids = list(series)
    arrays = [np.array([f for _, f in sorted(series[s], key=lambda r: r[0])], dtype=np.float64) for s in ids]
    big = max(np.abs(a[np.isfinite(a)]).max(initial=0.0) for a in arrays)
    if big > np.finfo(np.float32).max:
        raise DataFormatError(f"{p}: values up to {big:.3g} overflow float32")
    X, lengths = pad_sequences([a.astype(np.float32) for a in arrays])
    y = None
    if has_label:
        y = _labels_from_text([labels[s] for s in ids], f"{p}:label")
    return SequenceData(X=X, lengths=lengths, y=y, ids=np.array(ids), feature_names=feature_names)


def _labels_from_text(values: list[str], where: str) -> np.ndarray:
    """Labels read as text: integers when all are integers, else strings."""
    if any(v == "" for v in values):
        raise DataFormatError(f"{where}: empty label")
    try:
        as_float = [float(v) for v in values]
    except ValueError:
        return np.array(values, dtype=str)
    if all(np.isfinite(f) and f == int(f) and abs(f) < 2**63 for f in as_float):
        return np.array([int(f) for f in as_float], dtype=np.int64)
    return np.array(values, dtype=str)


# ---------------------------------------------------------------------------- UCR/UEA .ts

def _read_ts(p: Path) -> SequenceData:
    text = p.read_text(encoding="utf-8-sig")
    in_data = False
    has_label = True
    series: list[np.ndarray] = []
    labels: list[str] = []
    n_dims: Optional[int] = None
    declared_dims: Optional[int] = None  # from '@univariate true' or '@dimensions N'
    for line_no, raw in enumerate(io.StringIO(text), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@univariate") and len(low.split()) > 1 and low.split()[1] == "true":
                declared_dims = 1
            elif low.startswith("@dimensions") and len(low.split()) > 1:
                if not low.split()[1].isdigit() or int(low.split()[1]) < 1:
                    raise DataFormatError(f"{p}:{line_no}: expected '@dimensions <positive integer>', got {line[:40]!r}")
                declared_dims = int(low.split()[1])
            elif low.startswith("@classlabel"):
                has_label = len(low.split()) > 1 and low.split()[1] == "true"
            elif low.startswith("@timestamps") and low.split()[-1] == "true":
                raise DataFormatError(f"{p}:{line_no}: .ts files with timestamps are not supported")
            elif low.startswith("@data"):
                in_data = True
            elif not low.startswith("@"):
                raise DataFormatError(f"{p}:{line_no}: expected an '@' header line or '@data', got {line[:40]!r}")
            continue
        parts = line.split(":")
        if has_label:
            if len(parts) < 2:
                raise DataFormatError(f"{p}:{line_no}: expected '<values>:<label>', got no ':' separator")
            labels.append(parts[-1].strip())
            parts = parts[:-1]
        if n_dims is None:
            n_dims = len(parts)
            if declared_dims is not None and n_dims != declared_dims:
                raise DataFormatError(f"{p}:{line_no}: the header declares {declared_dims} dimension(s), got {n_dims}")
        elif len(parts) != n_dims:
            raise DataFormatError(f"{p}:{line_no}: expected {n_dims} dimensions, got {len(parts)}")
        dims = []
        for d, chunk in enumerate(parts):
            vals = [v.strip() for v in chunk.split(",")]
            dims.append([np.nan if v == "?" else _parse_float(v, f"{p}:{line_no} dimension {d}") for v in vals])
        lens = {len(d) for d in dims}
        if len(lens) != 1:
            raise DataFormatError(f"{p}:{line_no}: dimensions have different lengths {sorted(lens)}")
        arr = np.array(dims, dtype=np.float64).T  # (T_i, F)
        # UCR pads unequal lengths with trailing NaN ('?'): drop trailing all-NaN steps.
        keep = len(arr)
        while keep > 0 and np.isnan(arr[keep - 1]).all():
            keep -= 1
        if keep == 0:
            raise DataFormatError(f"{p}:{line_no}: series has no values")
        series.append(arr[:keep])  # float64 until the overflow check below
    if not in_data:
        raise DataFormatError(f"{p}: no '@data' line found: expected a UCR/UEA .ts file")
    if not series:
        raise DataFormatError(f"{str(p)!r} has no series after '@data'")
    big = max(float(np.abs(a[np.isfinite(a)]).max(initial=0.0)) for a in series)
    if big > float(np.finfo(np.float32).max):
        raise DataFormatError(f"{p}: values up to {big:.3g} overflow float32")
    X, lengths = pad_sequences([a.astype(np.float32) for a in series])
    y = _labels_from_text(labels, f"{p}:label") if has_label else None
    return SequenceData(X=X, lengths=lengths, y=y)


def read_token_ids(path: str | os.PathLike) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Token ids for an Embedding model: (X, lengths (N,) or None, sample ids (N,) str, labels (N,) or None).

    Reads an NPZ with ``X`` (N, T) integer ids and optional ``lengths``, ``ids`` and ``y``, or an NPY
    holding X. Only reads: the rank, dtype and vocabulary of X are checked by the caller that knows
    the model (``Predictor.predict_proba``, gru-export's sample check).
    Raises:
        DataFormatError: missing file, another format, no ``X``, or unreadable content.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise DataFormatError(f"token ids: expected an .npz or .npy file with X (samples, timesteps), got {suffix or 'no suffix'!r}")
    if not p.is_file():
        raise DataFormatError(f"data file not found: {str(p)!r}")
    lengths = ids = y = None
    try:
        if suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        else:
            if not zipfile.is_zipfile(p):
                raise DataFormatError(f"{str(p)!r}: expected an NPZ (zip) archive, got other content")
            with np.load(p, allow_pickle=False) as npz:
                if "X" not in npz.files:
                    raise DataFormatError(f"{str(p)!r}: expected an array named 'X' in the NPZ, found {sorted(npz.files)}")
                X = npz["X"]
                lengths = npz["lengths"].astype(np.int64) if "lengths" in npz.files else None
                ids = npz["ids"].astype(str) if "ids" in npz.files else None
                y = npz["y"] if "y" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"cannot read {str(p)!r}: {exc}") from None
    n = X.shape[0] if X.ndim else 0
    if ids is None or ids.shape != (n,):
        ids = np.array([str(i) for i in range(n)])
    return X, lengths, ids, y
