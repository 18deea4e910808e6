"""Parquet sequences <-> arrays: the two layouts, per-row refusal reasons, atomic part writes.

Owns: decoding a pyarrow table of sequences into float32 timesteps + lengths + ids, with a
reason for every row that cannot be scored; reading one Parquet file as a ``SequenceData``
(``datafiles.read_sequences``); writing a table to a file atomically on any pyarrow filesystem.
Imports: numpy, pyarrow (the optional ``parquet`` extra; this module is imported lazily, only
when Parquet is used), pipeline.errors and pipeline.sequences (never pipeline.datafiles, which
imports this module).
Reads: the Parquet file given to ``read_parquet_sequences``. Writes: what ``write_table_atomic``
is given.

Layouts (see README "Batch scoring on Ray and Spark"):
    nested  one row per sequence: an id column and a column ``x`` of type list<list<number>>
            holding T_i x F values (T_i may differ between rows).
    long    one row per timestep: ``sample_id, t, <feature columns...>[, label]``, as the CSV
            layout; ``t`` is the timestep index 0, 1, ..., T_i - 1 of each sequence, each once (a
            sequence with a missing, repeated, null or non-integer ``t`` is refused with the
            ``t``); rows may come in any order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import DataFormatError, InputError
from pipeline.sequences import SequenceData, check_padding_size, labels_from_text, missing_timesteps, t_text

__all__ = ["LAYOUTS", "X_COLUMN", "T_COLUMN", "LABEL_COLUMN", "Decoded", "detect_layout", "default_id_column",
           "long_feature_columns", "check_schema", "decode", "decode_nested", "decode_long",
           "read_parquet_sequences", "write_table_atomic", "filesystem_and_path"]

LAYOUTS = ("nested", "long")
X_COLUMN = "x"          # nested layout: the list<list<number>> column
T_COLUMN = "t"          # long layout: the time index column
LABEL_COLUMN = "label"  # optional in both layouts; never a feature
DEFAULT_ID = {"nested": "id", "long": "sample_id"}


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def detect_layout(schema: pa.Schema) -> str:
    """``nested`` when the table has a list<list<number>> column ``x``; ``long`` when it has ``t``."""
    names = schema.names
    if X_COLUMN in names and _is_list(schema.field(X_COLUMN).type):
        return "nested"
    if T_COLUMN in names:
        return "long"
    raise DataFormatError(
        f"cannot tell the Parquet layout from the columns {names}: expected a list<list<float>> column "
        f"{X_COLUMN!r} (nested layout) or a column {T_COLUMN!r} (long layout: sample_id, t, features...)"
    )


def default_id_column(layout: str) -> str:
    return DEFAULT_ID[layout]


def long_feature_columns(schema: pa.Schema, id_column: str) -> list[str]:
    """The feature columns of a long-layout table: every column but the id, ``t`` and ``label``."""
    return [n for n in schema.names if n not in (id_column, T_COLUMN, LABEL_COLUMN)]


def check_schema(schema: pa.Schema, layout: str, id_column: str, n_features: Optional[int], where: str) -> list[str]:
    """Refuse a table the layout cannot read (a one-line DataFormatError / InputError).

    Returns the long layout's feature columns ([] for nested).
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    names = schema.names
    if id_column not in names:
        raise DataFormatError(f"{where}: expected an id column {id_column!r}, found columns {names}; "
                              "name the id column with --id-column")
    if layout == "nested":
        if X_COLUMN not in names:
            raise DataFormatError(f"{where}: nested layout: expected a column {X_COLUMN!r} of list<list<float>>, "
                                  f"found columns {names}")
        t = schema.field(X_COLUMN).type
        if not (_is_list(t) and _is_list(t.value_type) and _is_number(t.value_type.value_type)):
            raise DataFormatError(f"{where}: nested layout: expected column {X_COLUMN!r} of list<list<float>> "
                                  f"(timesteps x features), got {t}")
        return []
    if T_COLUMN not in names:
        raise DataFormatError(f"{where}: long layout: expected columns {id_column}, {T_COLUMN}, <features...>, "
                              f"found {names}")
    features = long_feature_columns(schema, id_column)
    if not features:
        raise DataFormatError(f"{where}: long layout: expected feature columns after {id_column!r} and "
                              f"{T_COLUMN!r}, found none")
    wrong = [f"{n} ({schema.field(n).type})" for n in features + [T_COLUMN] if not _is_number(schema.field(n).type)]
    if wrong:
        raise DataFormatError(f"{where}: long layout: expected numeric {T_COLUMN!r} and feature columns, "
                              f"got {', '.join(wrong)}")
    if n_features is not None and len(features) != n_features:
        raise InputError(f"{where}: expected {n_features} feature columns, got {len(features)}: {features}")
    return features


# ---------------------------------------------------------------------------- decoded rows

@dataclass
class Decoded:
    """Sequences decoded from a table; refused rows are set aside with a reason each.

    Attributes:
        ids: (n,) ids of the accepted sequences, in input order (nested) or first-seen order (long).
        values: (sum(steps), F) float32 timesteps of the accepted sequences, back to back.
        steps: (n,) int64 number of timesteps of each accepted sequence (>= 1).
        labels: (n,) labels from a ``label`` column, or None.
        bad_ids: (m,) ids of the refused sequences (may hold nulls); bad_reasons: m one-line reasons.
        rows_in: sequences in the table (n + m).
        bad_fields: m dicts, where in each refused sequence the reason points (``timestep``, ``feature``,
            as for InputError's fields; empty when it is the whole sequence).
    """

    ids: pa.Array
    values: np.ndarray
    steps: np.ndarray
    labels: Optional[pa.Array]
    bad_ids: pa.Array
    bad_reasons: list
    rows_in: int
    bad_fields: list = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def groups(self, max_rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, X)``: indices (k,) into ``ids`` and X (k, L, F) of rows sharing length L.

        No padding is ever built, so one very long sequence costs only its own memory.
        """
        n = len(self.steps)
        if n == 0:
            return
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.steps, out=starts[1:])
        F = self.n_features
        if (self.steps == self.steps[0]).all():  # the common case: a view, no copy
            L = int(self.steps[0])
            X = self.values.reshape(n, L, F)
            for a in range(0, n, max_rows):
                yield np.arange(a, min(n, a + max_rows)), X[a:a + max_rows]
            return
        for L in np.unique(self.steps):
            rows = np.flatnonzero(self.steps == L)
            for a in range(0, len(rows), max_rows):
                part = rows[a:a + max_rows]
                idx = (starts[part][:, None] + np.arange(L)[None, :]).reshape(-1)
                yield part, self.values[idx].reshape(len(part), int(L), F)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """X (n, max T, F) float32 right-padded with zeros, and lengths (n,); the datafiles padding guard."""
        n, F = len(self.steps), self.n_features
        T = int(self.steps.max())
        check_padding_size(n, T, F, int(self.steps.sum()))
        if (self.steps == T).all():
            return self.values.reshape(n, T, F), self.steps.copy()
        X = np.zeros((n, T, F), dtype=np.float32)
        row = np.repeat(np.arange(n), self.steps)
        pos = np.arange(len(row)) - np.repeat(np.cumsum(self.steps) - self.steps, self.steps)
        X[row, pos] = self.values
        return X, self.steps.copy()


class _Refusals:
    """The first reason (and its fields) per refused sequence, by sequence number."""

    def __init__(self) -> None:
        self.reason: dict[int, str] = {}
        self.fields: dict[int, dict] = {}

    def add(self, i, text: str, **fields) -> None:
        """Refuse sequence ``i`` for ``text`` unless it is refused already (the first reason is kept)."""
        if int(i) not in self.reason:
            self.reason[int(i)] = text
            self.fields[int(i)] = fields

    def __contains__(self, i) -> bool:
        return int(i) in self.reason

    def __bool__(self) -> bool:
        return bool(self.reason)

    def rows(self) -> list[int]:
        return list(self.reason)


def _np(arr: pa.Array, fill) -> np.ndarray:
    return arr.fill_null(fill).to_numpy(zero_copy_only=False) if arr.null_count else arr.to_numpy(zero_copy_only=False)


def _value_reason(raw: np.ndarray, valid: Optional[np.ndarray], i: int) -> str:
    if valid is not None and not valid[i]:
        return "a null value"
    v = float(raw[i])
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return f"{v}"
    return f"{v:.3g}, which overflows float32"


def _float32_values(values: pa.Array) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """A numeric arrow array -> (float32 values with NaN for nulls, raw numpy, validity or None)."""
    valid = None
    if values.null_count:
        valid = values.is_valid().to_numpy(zero_copy_only=False)
    raw = values.to_numpy(zero_copy_only=False)  # nulls become NaN (floats) or float64 NaN (ints)
    with np.errstate(over="ignore", invalid="ignore"):
        v32 = raw.astype(np.float32, copy=False)
    return v32, raw, valid


def _table(batch) -> pa.Table:
    return pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch


def decode_nested(table, id_column: str, n_features: Optional[int] = None, check_values: bool = True) -> Decoded:
    """Decode a nested-layout table (id, x: list<list<number>>).

    Refused rows and their reasons: null x; no timesteps; a null timestep; a timestep whose
    width is not ``n_features`` (or, when None, the width of the first good timestep); and,
    with ``check_values``, a null, NaN or Inf value or one beyond float32.
    """
    table = _table(table)
    ids = table.column(id_column).combine_chunks()
    x = table.column(X_COLUMN).combine_chunks()
    n = len(x)
    outer = _np(pc.list_value_length(x), -1).astype(np.int64)   # (n,) timesteps, -1 for a null row
    steps = np.maximum(outer, 0)
    inner = x.flatten()                                          # (sum steps,) list of features
    width = _np(pc.list_value_length(inner), -1).astype(np.int64)  # (sum steps,)
    values = inner.flatten()                                     # (sum width,) numbers
    reason = _Refusals()
    for i in np.flatnonzero(outer < 0):
        reason.add(i, "x is null: expected a list of timesteps")
    for i in np.flatnonzero(outer == 0):
        reason.add(i, "empty sequence: expected at least 1 timestep, got 0")
    step_end = np.cumsum(steps)                                  # (n,) end of each row's timesteps

    def row_and_step(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each timestep index in ``s`` and its position in that row (only where needed)."""
        r = np.searchsorted(step_end, s, side="right")
        return r, s - (step_end[r] - steps[r])

    F = n_features
    if F is None:
        good_w = width[width > 0]
        F = int(good_w[0]) if len(good_w) else 1
    bad_step = np.flatnonzero(width != F)
    if len(bad_step):
        rows, pos = row_and_step(bad_step)
        rows, first = np.unique(rows, return_index=True)         # the first bad timestep of each row
        for r, s, k in zip(rows, bad_step[first], pos[first]):
            reason.add(r, f"timestep {int(k)} is null: expected {F} features" if width[s] < 0 else
                       f"expected {F} features per timestep, got {int(width[s])} at timestep {int(k)}", timestep=int(k))
    v32, raw, valid = _float32_values(values)
    width0 = np.maximum(width, 0)
    value_end = None if not len(bad_step) else np.cumsum(width0)  # (sum steps,) end of each timestep's values
    if check_values or valid is not None:
        bad_v = np.flatnonzero(~np.isfinite(v32)) if check_values else np.flatnonzero(~valid)
        if len(bad_v):
            if value_end is None:  # every timestep has F values: value i is in timestep i // F
                steps_of, feat = bad_v // F, bad_v % F
            else:
                steps_of = np.searchsorted(value_end, bad_v, side="right")
                feat = bad_v - (value_end[steps_of] - width0[steps_of])
            rows, pos = row_and_step(steps_of)
            rows, first = np.unique(rows, return_index=True)     # the first bad value of each row
            for r, i, k, j in zip(rows, bad_v[first], pos[first], feat[first]):
                reason.add(r, f"expected finite values, got {_value_reason(raw, valid, i)} at timestep "
                              f"{int(k)}, feature {int(j)}", timestep=int(k), feature=int(j))
    labels = table.column(LABEL_COLUMN).combine_chunks() if LABEL_COLUMN in table.column_names else None
    if not reason:
        return Decoded(ids, v32.reshape(-1, F), steps, labels, ids.slice(0, 0), [], n)
    bad = np.zeros(n, dtype=bool)
    bad[reason.rows()] = True
    good = np.flatnonzero(~bad)
    step_bad = np.repeat(bad, steps)                             # (sum steps,)
    keep_value = np.repeat(~step_bad, width0)                    # (sum width,)
    bad_rows = np.flatnonzero(bad)
    return Decoded(ids.take(pa.array(good)), v32[keep_value].reshape(-1, F), steps[good],
                   None if labels is None else labels.take(pa.array(good)),
                   ids.take(pa.array(bad_rows)), [reason.reason[int(i)] for i in bad_rows], n,
                   [reason.fields[int(i)] for i in bad_rows])


def decode_long(table, id_column: str, feature_columns: list[str], check_values: bool = True) -> Decoded:
    """Decode a long-layout table (sample_id, t, features...): one sequence per id, ordered by t.

    Refused sequences: a null, duplicate, negative or non-integer ``t``, or a missing one (``t`` must
    be 0, 1, ..., T_i - 1: a gap, or a first row after t=0); with ``check_values``, a null, NaN or Inf
    feature value or one beyond float32. Rows with a null id are refused together as one entry
    (id null). Ids come out in first-seen order.
    """
    table = _table(table)
    n_rows = table.num_rows
    ids = table.column(id_column).combine_chunks()
    enc = pc.dictionary_encode(ids)
    codes = _np(enc.indices, -1).astype(np.int64)                 # (rows,) sample number, -1 for null id
    uniq = enc.dictionary                                         # (samples,) ids, first-seen order
    t = table.column(T_COLUMN).combine_chunks()
    t_null = t.is_null().to_numpy(zero_copy_only=False) if t.null_count else None
    tv = _np(t, np.nan).astype(np.float64)
    order = None
    if n_rows and not (np.all(codes[1:] >= codes[:-1]) and np.all((np.diff(tv) > 0) | (codes[1:] != codes[:-1]))):
        order = np.lexsort((tv, codes))                           # group by sample, then by t
        codes, tv = codes[order], tv[order]
        if t_null is not None:
            t_null = t_null[order]
    null_rows = int((codes < 0).sum())
    first = np.searchsorted(codes, 0)                             # null ids sort first
    codes_k, tv_k = codes[first:], tv[first:]
    n_samples = len(uniq)
    steps = np.bincount(codes_k, minlength=n_samples).astype(np.int64)
    cols = []
    for name in feature_columns:
        col = table.column(name).combine_chunks()
        v32, raw, valid = _float32_values(col)
        cols.append((name, v32, raw, valid))
    F = len(feature_columns)
    values = np.empty((n_rows, F), dtype=np.float32)              # (rows, F) in sample, t order
    for j, (_, v32, _, _) in enumerate(cols):
        values[:, j] = v32 if order is None else v32[order]
    values = values[first:]
    reason = _Refusals()

    def first_per_sample(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sample, its first row) for the rows given (ascending): one reason per sample."""
        samples, idx = np.unique(codes_k[rows], return_index=True)
        return samples, rows[idx]

    same = codes_k[1:] == codes_k[:-1]
    for smp, i in zip(*first_per_sample(np.flatnonzero(same & (tv_k[1:] == tv_k[:-1])))):
        t_i = float(tv_k[i])
        reason.add(smp, f"duplicate rows at t={t_text(t_i)}: expected one row per timestep",
                   **({"timestep": int(t_i)} if t_i.is_integer() else {}))
    if t_null is not None:
        for smp, _ in zip(*first_per_sample(np.flatnonzero(t_null[first:]))):
            reason.add(smp, f"a row with a null {T_COLUMN!r}")
    with np.errstate(invalid="ignore"):
        not_index = ~(np.isfinite(tv_k) & (tv_k >= 0) & (tv_k == np.floor(tv_k)))   # (rows,) NaN, Inf, -1, 0.5
    for smp, i in zip(*first_per_sample(np.flatnonzero(not_index))):
        reason.add(smp, f"expected a timestep index (an integer 0, 1, 2, ...) in {T_COLUMN!r}, got {t_text(tv_k[i])}")
    pos = np.arange(len(codes_k)) - np.repeat(np.cumsum(steps) - steps, steps)     # (rows,) place in its sequence
    for smp, i in zip(*first_per_sample(np.flatnonzero(tv_k != pos))):              # t sorted: the first gap
        if smp not in reason:
            reason.add(smp, missing_timesteps(int(pos[i]), int(tv_k[i])), timestep=int(pos[i]))
    if (check_values and not np.isfinite(values).all()) or any(c[3] is not None for c in cols):
        bad_cells = ~np.isfinite(values) if check_values else np.zeros(values.shape, dtype=bool)
        if not check_values:
            for j, c in enumerate(cols):
                if c[3] is not None:
                    bad_cells[:, j] = ~(c[3] if order is None else c[3][order])[first:]
        for s, i in zip(*first_per_sample(np.flatnonzero(bad_cells.any(axis=1)))):
            s, j = int(s), int(np.flatnonzero(bad_cells[i])[0])
            if s in reason:
                continue
            _, _, raw, valid = cols[j]
            src = int(i + first) if order is None else int(order[i + first])
            step = int(i - np.searchsorted(codes_k, s))
            reason.add(s, f"expected finite values, got {_value_reason(raw, valid, src)} at timestep {step}, "
                          f"feature {feature_columns[j]!r}", timestep=step, feature=feature_columns[j])
    labels = None
    if LABEL_COLUMN in table.column_names:
        lab = table.column(LABEL_COLUMN).combine_chunks()
        lab = lab if order is None else lab.take(pa.array(order))
        lab = lab.slice(first)
        starts = np.cumsum(steps) - steps
        labels = lab.take(pa.array(starts[steps > 0])) if n_samples else lab.slice(0, 0)
        run_label = labels.take(pa.array(np.repeat(np.arange(n_samples), steps))) if n_samples else labels
        differ = np.flatnonzero(_np(pc.not_equal(lab, run_label), True))
        for i in differ:
            reason.add(codes_k[i], f"rows disagree on the label ({run_label[int(i)]} vs {lab[int(i)]})")
    bad_ids, bad_reasons, bad_fields = [], [], []
    if null_rows:
        bad_ids.append(None)
        bad_reasons.append(f"{null_rows} row(s) with a null {id_column!r}")
        bad_fields.append({})
    rows_in = n_samples + (1 if null_rows else 0)
    if not reason:
        return Decoded(uniq, values, steps, labels, pa.array(bad_ids, type=ids.type), bad_reasons, rows_in, bad_fields)
    bad = np.zeros(n_samples, dtype=bool)
    bad[reason.rows()] = True
    good = np.flatnonzero(~bad)
    keep = ~bad[codes_k]
    bad_samples = np.flatnonzero(bad)
    bad_id_arr = pa.concat_arrays([pa.array(bad_ids, type=ids.type), uniq.take(pa.array(bad_samples))])
    return Decoded(uniq.take(pa.array(good)), values[keep], steps[good],
                   None if labels is None else labels.take(pa.array(good)),
                   bad_id_arr, bad_reasons + [reason.reason[int(s)] for s in bad_samples], rows_in,
                   bad_fields + [reason.fields[int(s)] for s in bad_samples])


def decode(table, layout: str, id_column: str, feature_columns: Optional[list[str]] = None,
           n_features: Optional[int] = None, check_values: bool = True) -> Decoded:
    """``decode_nested`` or ``decode_long`` by layout."""
    if layout == "nested":
        return decode_nested(table, id_column, n_features, check_values)
    return decode_long(table, id_column, feature_columns or long_feature_columns(_table(table).schema, id_column),
                       check_values)


# ---------------------------------------------------------------------------- files

def filesystem_and_path(location: str):
    """``(pyarrow FileSystem, path)`` for a local path or any URI pyarrow knows (file://, s3://, gs://...)."""
    import os

    from pyarrow import fs as pafs

    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, ValueError, OSError) as exc:
            raise DataFormatError(f"cannot open {location!r}: {exc}") from None
    return pafs.LocalFileSystem(), os.path.abspath(location)


def write_table_atomic(table: pa.Table, filesystem, path: str) -> None:
    """Write ``table`` as Parquet to ``path`` so that it appears whole or not at all.

    The bytes go to a hidden temporary name beside ``path`` (Parquet readers skip names starting
    with '.') and are then moved into place: a rename on a local disk; on object stores the
    final object is written by one copy, which is atomic per object.
    """
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with filesystem.open_output_stream(tmp) as fh:
            pq.write_table(table, fh)
        filesystem.move(tmp, path)
    except BaseException:
        try:
            filesystem.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass
        raise


def read_parquet_sequences(path) -> SequenceData:
    """One Parquet file (either layout, detected from its columns) as a ``SequenceData``.

    The id column is ``id`` (nested) or ``sample_id`` (long); a ``label`` column becomes ``y``.
    Any row that cannot be read raises DataFormatError naming its id and the reason (NaN values
    pass through: the Predictor refuses them, as for the other formats).
    """
    try:
        table = pq.read_table(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"cannot read {str(path)!r} as PARQUET: {str(exc).splitlines()[0][:200]}") from None
    layout = detect_layout(table.schema)
    id_column = default_id_column(layout)
    if id_column not in table.column_names and layout == "nested":
        table = table.append_column(id_column, pa.array([str(i) for i in range(table.num_rows)]))
    features = check_schema(table.schema, layout, id_column, None, str(path))
    if table.num_rows == 0:
        raise DataFormatError(f"{str(path)!r} holds no samples: expected at least one sequence")
    dec = decode(table, layout, id_column, features, check_values=False)
    if dec.bad_reasons:
        sample = dec.bad_ids[0].as_py()
        raise DataFormatError(f"{path}: {id_column} {sample!r}: {dec.bad_reasons[0]}"
                              + (f" ({len(dec.bad_reasons)} sequences refused in all)" if len(dec.bad_reasons) > 1 else ""),
                              file=path, sample=sample, **dec.bad_fields[0])
    X, lengths = dec.padded()
    y = None
    if dec.labels is not None:
        lab = dec.labels
        if lab.null_count:
            raise DataFormatError(f"{path}: {LABEL_COLUMN}: expected a label on every sequence, got nulls")
        y = labels_from_text([str(v) for v in lab.to_pylist()], f"{path}:{LABEL_COLUMN}")
    ids = np.array([str(v) for v in dec.ids.to_pylist()])
    return SequenceData(X=X, lengths=lengths, y=y, ids=ids,
                        feature_names=features or None)
