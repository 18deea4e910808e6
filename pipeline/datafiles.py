"""Readers for sequence data files: NPZ, NPY, CSV (long layout), UCR/UEA ``.ts`` and Parquet.

Owns: turning a file into a ``SequenceData`` (right-padded float array + lengths +
optional labels and ids) with one-line errors for anything malformed.
Imports: numpy, the standard library, pipeline.errors and pipeline.sequences (``SequenceData``,
padding, label parsing) only (used by the runtime and the build); Parquet is read by
``pipeline.parquet_io``, imported only when a .parquet file is read (pyarrow, the optional
``parquet`` extra); parquet_io never imports this module.
Reads: the file it is given. Writes: nothing.

Formats (see README "Data files"):
    .npz  ``X`` (N, T, F) numbers; optional ``y`` (N,) labels (numbers or strings),
          ``lengths`` (N,) real lengths of right-padded rows, ``ids`` (N,). Pickles refused.
    .npy  X alone, (N, T, F).
    .csv  long layout, header ``sample_id,t,<feature columns...>[,label]``, one row per real
          timestep: ``t`` is the timestep index, 0, 1, ..., T_i - 1 for each sample, each once (a
          missing or repeated ``t`` is refused, naming the sample, the ``t`` and the line); series
          may differ in length; rows may come in any order.
    .ts   UCR/UEA text format: ``@`` header lines, then ``@data`` and one series per line,
          dimensions separated by ``:``, values by ``,``, the class label last.
    .parquet  nested layout (``id``, ``x`` list<list<float>>, ragged allowed) or long layout
          (``sample_id, t, <features...>[, label]``, ``t`` as in the CSV), told apart by the columns.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.errors import DataFormatError, InputError
# SequenceData, pad_sequences and the label parsing live in pipeline.sequences (shared with
# pipeline.parquet_io without an import cycle); they stay importable from here.
from pipeline.sequences import (PAD_BLOWUP, PAD_MAX_CELLS, SequenceData, check_labels,  # noqa: F401
                                labels_from_text, missing_timesteps, pad_sequences)

__all__ = ["SequenceData", "read_sequences", "pad_sequences", "iter_npy_chunks", "read_token_ids",
           "parquet_module", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".npz", ".npy", ".csv", ".ts", ".parquet")
PARQUET_HINT = "pip install 'gru-onnx-pipeline[parquet]'"

# Errors the parsers (numpy, zipfile, csv, zlib) raise on malformed content.
_PARSE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, csv.Error,
                 zlib.error, struct.error, OverflowError, NotImplementedError)


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
    except (DataFormatError, InputError) as exc:
        if exc.file is None:
            exc.file = str(p)  # every error of a data file names it in its fields too
        raise
    except PermissionError as exc:
        raise DataFormatError(f"cannot read {str(p)!r}: {exc.strerror}", file=p) from None
    except _PARSE_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise DataFormatError(f"cannot read {str(p)!r} as {suffix[1:].upper()}: {detail}", file=p) from None
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
            y = check_labels(y, n, f"{p}:y")
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


# ---------------------------------------------------------------------------- CSV (long)

def _parse_float(text: str, where: str, **fields) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{where}: expected a number, got {text!r}", **fields) from None


def _parse_timestep(text: str, p: Path, line_no: int, sid: str) -> int:
    """The ``t`` cell of a long-layout CSV row: a timestep index 0, 1, 2, ... (``3.0`` reads as 3)."""
    where = f"{p}:{line_no} column 't'"
    t = _parse_float(text, where, file=p, line=line_no, sample=sid)
    if not np.isfinite(t):
        raise DataFormatError(f"{where}: expected a finite time index, got {text!r}", file=p, line=line_no, sample=sid)
    if t < 0 or t != int(t):
        raise DataFormatError(f"{where}: expected a timestep index (an integer 0, 1, 2, ...), got {text!r}",
                              file=p, line=line_no, sample=sid)
    return int(t)


def _check_no_gaps(p: Path, sid: str, steps: list[int], lines: list[int]) -> None:
    """Refuse a sequence whose sorted timesteps ``steps`` are not 0, 1, ..., len - 1 (a gap or a late start).

    ``lines`` are the CSV lines of ``steps``; the error names the line of the row after the gap.
    """
    for expected, (t, line) in enumerate(zip(steps, lines)):
        if t != expected:
            raise DataFormatError(f"{p}:{line}: sample_id {sid!r} has {missing_timesteps(expected, t)}",
                                  file=p, line=line, sample=sid, timestep=expected)


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
                f"{p}: expected header 'sample_id,t,<feature columns...>[,label]', got {','.join(header)!r}", line=1
            )
        has_label = header[-1] == "label"
        feature_names = header[2:-1] if has_label else header[2:]
        if not feature_names:
            raise DataFormatError(f"{p}: expected at least one feature column between 't' and 'label'", line=1)
        if len(set(header)) != len(header):
            raise DataFormatError(f"{p}: duplicate column names in header {header}", line=1)
        width = len(header)
        series: dict[str, list[tuple[int, int, list[float]]]] = {}  # sample_id -> [(t, line, features)]
        labels: dict[str, str] = {}
        seen: dict[tuple[str, int], int] = {}  # (sample_id, t) -> line of its row
        for line_no, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) != width:
                raise DataFormatError(f"{p}:{line_no}: expected {width} columns, got {len(row)}", line=line_no)
            sid = row[0].strip()
            if not sid:
                raise DataFormatError(f"{p}:{line_no}: empty sample_id", line=line_no)
            if "\x00" in sid or (has_label and "\x00" in row[-1]):
                raise DataFormatError(f"{p}:{line_no}: NUL byte in a text cell: expected a text CSV, not binary data",
                                      line=line_no)
            t = _parse_timestep(row[1].strip(), p, line_no, sid)
            if (sid, t) in seen:
                raise DataFormatError(
                    f"{p}:{line_no}: duplicate row for sample_id {sid!r} at t={t} (first at line {seen[sid, t]}): "
                    "expected one row per timestep", line=line_no, sample=sid, timestep=t)
            seen[sid, t] = line_no
            feats = [
                _parse_float(row[2 + j].strip(), f"{p}:{line_no} column {feature_names[j]!r}",
                             line=line_no, sample=sid, timestep=t, feature=feature_names[j])
                for j in range(len(feature_names))
            ]
            series.setdefault(sid, []).append((t, line_no, feats))
            if has_label:
                lab = row[-1].strip()
                if sid in labels and labels[sid] != lab:
                    raise DataFormatError(
                        f"{p}:{line_no}: sample_id {sid!r} has label {lab!r} but earlier rows say {labels[sid]!r}",
                        line=line_no, sample=sid, timestep=t)
                labels[sid] = lab
    if not series:
        raise DataFormatError(f"{str(p)!r} has a header but no data rows")
    ids = list(series)
    arrays = []
    for sid in ids:
        rows_of = sorted(series[sid], key=lambda r: r[0])  # rows may come in any order
        _check_no_gaps(p, sid, [r[0] for r in rows_of], [r[1] for r in rows_of])
        arrays.append(np.array([r[2] for r in rows_of], dtype=np.float64))  # (T_i, F)
    big = max(np.abs(a[np.isfinite(a)]).max(initial=0.0) for a in arrays)
    if big > np.finfo(np.float32).max:
        raise DataFormatError(f"{p}: values up to {big:.3g} overflow float32")
    X, lengths = pad_sequences([a.astype(np.float32) for a in arrays])
    y = None
    if has_label:
        y = labels_from_text([labels[s] for s in ids], f"{p}:label")
    return SequenceData(X=X, lengths=lengths, y=y, ids=np.array(ids), feature_names=feature_names)


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
                    raise DataFormatError(f"{p}:{line_no}: expected '@dimensions <positive integer>', got {line[:40]!r}", line=line_no)
                declared_dims = int(low.split()[1])
            elif low.startswith("@classlabel"):
                has_label = len(low.split()) > 1 and low.split()[1] == "true"
            elif low.startswith("@timestamps") and low.split()[-1] == "true":
                raise DataFormatError(f"{p}:{line_no}: .ts files with timestamps are not supported", line=line_no)
            elif low.startswith("@data"):
                in_data = True
            elif not low.startswith("@"):
                raise DataFormatError(f"{p}:{line_no}: expected an '@' header line or '@data', got {line[:40]!r}", line=line_no)
            continue
        parts = line.split(":")
        if has_label:
            if len(parts) < 2:
                raise DataFormatError(f"{p}:{line_no}: expected '<values>:<label>', got no ':' separator", line=line_no)
            labels.append(parts[-1].strip())
            parts = parts[:-1]
        if n_dims is None:
            n_dims = len(parts)
            if declared_dims is not None and n_dims != declared_dims:
                raise DataFormatError(f"{p}:{line_no}: the header declares {declared_dims} dimension(s), got {n_dims}", line=line_no)
        elif len(parts) != n_dims:
            raise DataFormatError(f"{p}:{line_no}: expected {n_dims} dimensions, got {len(parts)}", line=line_no)
        dims = []
        for d, chunk in enumerate(parts):
            vals = [v.strip() for v in chunk.split(",")]
            dims.append([np.nan if v == "?" else _parse_float(v, f"{p}:{line_no} dimension {d}", line=line_no,
                                                              sample=len(series), feature=d) for v in vals])
        lens = {len(d) for d in dims}
        if len(lens) != 1:
            raise DataFormatError(f"{p}:{line_no}: dimensions have different lengths {sorted(lens)}", line=line_no)
        arr = np.array(dims, dtype=np.float64).T  # (T_i, F)
        # UCR pads unequal lengths with trailing NaN ('?'): drop trailing all-NaN steps.
        keep = len(arr)
        while keep > 0 and np.isnan(arr[keep - 1]).all():
            keep -= 1
        if keep == 0:
            raise DataFormatError(f"{p}:{line_no}: series has no values", line=line_no)
        series.append(arr[:keep])  # float64 until the overflow check below
    if not in_data:
        raise DataFormatError(f"{p}: no '@data' line found: expected a UCR/UEA .ts file")
    if not series:
        raise DataFormatError(f"{str(p)!r} has no series after '@data'")
    big = max(float(np.abs(a[np.isfinite(a)]).max(initial=0.0)) for a in series)
    if big > float(np.finfo(np.float32).max):
        raise DataFormatError(f"{p}: values up to {big:.3g} overflow float32")
    X, lengths = pad_sequences([a.astype(np.float32) for a in series])
    y = labels_from_text(labels, f"{p}:label") if has_label else None
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
