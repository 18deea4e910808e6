"""Scoring inside a worker: one Predictor per process, one fragment -> one part, written atomically.

Owns: ``JobSpec`` (everything a worker needs, as JSON, so every engine ships the same thing);
the per-process Predictor cache (an onnxruntime session does not pickle: workers get the model
folder's path and open it themselves, checking its sha256); ``score_table`` (a table of
sequences -> scored rows + refused rows with reasons) used by the engines and the public API;
``process_fragment`` (read a fragment, score it, write ``_errors/part-N`` then ``part-N``).
Imports: numpy, pyarrow, pipeline.parquet_io, pipeline.runtime.predictor (no engine packages).
Reads: the fragment's Parquet file. Writes: the fragment's part and error part.

Columns of a part (``output_columns``; the refused rows go to ``_errors`` as ``id, reason``):

    binary                  id, probability float32 (p(class 1)), label (the class name)
    multiclass              id, label (the argmax class name), probabilities list<float32> (k, class_names order)
    multilabel              id, label list<class name> (the classes decided, possibly empty),
                            probabilities list<float32> (k)

The label's type follows the class names (int64 when they are all integers, else string). Each
sequence is scored as the rows it holds (its length is its own: a variable-length model gets it as
``lengths``); no row is dropped or repeated: every input sequence is in a part or in ``_errors``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import parquet_io
from pipeline.errors import DataFormatError, InputError, PipelineError
from pipeline.runtime.batch.plan import ERRORS_DIR, META_KEY, Fragment, part_name

__all__ = ["JobSpec", "get_predictor", "score_table", "process_fragment", "process_fragment_safe", "worker_id"]

BATCH_ROWS = 16384    # nested layout: rows decoded and scored at a time (bounds a worker's memory)
GROUP_ROWS = 8192     # rows per predict_proba call


@dataclass
class JobSpec:
    """What every worker needs to score fragments (plain data: shipped as JSON)."""

    model_dir: str
    model_sha256: str
    input: str
    output: str
    layout: str
    id_column: str
    feature_columns: list = field(default_factory=list)
    graph: str = "auto"
    threads: Optional[int] = None   # onnxruntime threads per worker; None = the worker's CPUs

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls(**json.loads(text))


WORKER_TAG: Optional[str] = None  # set by an engine in its workers, e.g. the Ray node


def worker_id() -> str:
    """``host:pid`` of this process, plus ``@tag`` when the engine set one."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f"@{WORKER_TAG}" if WORKER_TAG else "")


_PREDICTORS: dict = {}
_LOCK = threading.Lock()


def get_predictor(model_dir: str, threads: Optional[int] = None, graph: str = "auto",
                  sha256: Optional[str] = None):
    """The process's Predictor for ``model_dir`` (loaded once per process and thread count)."""
    from pipeline.runtime.predictor import Predictor

    key = (os.path.abspath(model_dir), threads, graph)
    with _LOCK:
        p = _PREDICTORS.get(key)
        if p is None:
            p = _PREDICTORS[key] = Predictor.load(model_dir, threads=threads, graph=graph)
    if sha256 and p.manifest["model"]["sha256"] != sha256:
        raise PipelineError(f"worker {worker_id()} loaded {model_dir} with model sha256 "
                            f"{p.manifest['model']['sha256'][:12]}..., the job planned {sha256[:12]}...: "
                            "expected the same model folder on every node")
    return p


def _score_rows(predictor, rows: np.ndarray, X: np.ndarray, proba: np.ndarray, reasons: dict) -> None:
    """predict_proba on X (k, L, F) into ``proba[rows]``; the rows it refuses get ``reasons[row]``.

    A refused batch is split until every refused row is found: at the row the error names (its
    ``sample`` field; the reason is ``InputError.without_sample()``, as the errors table names the
    id), else in halves. Slices only (no copies of X); a work list, not recursion.
    """
    pending = [(rows, X)]
    while pending:
        rows, X = pending.pop()
        try:
            lengths = np.full(len(X), X.shape[1], np.int64) if predictor.lengths_name else None  # (k,) all real
            proba[rows] = predictor.predict_proba(X, lengths)
            continue
        except InputError as exc:
            bad = exc.sample if isinstance(exc.sample, (int, np.integer)) and 0 <= exc.sample < len(rows) else None
            if bad is None and len(rows) > 1:  # the error does not say which row: halve
                h = len(rows) // 2
                pending += [(rows[h:], X[h:]), (rows[:h], X[:h])]
                continue
            bad = int(bad or 0)
            reasons[int(rows[bad])] = exc.without_sample()
        # the rows around the refused one, as (k', L, F) views; halved when it was at an end, so a batch of
        # many refused rows costs O(k log k) checks, not O(k^2)
        for r, x in ((rows[:bad], X[:bad]), (rows[bad + 1:], X[bad + 1:])):
            if len(r) > 1 and len(r) == len(rows) - 1:
                h = len(r) // 2
                pending += [(r[h:], x[h:]), (r[:h], x[:h])]
            elif len(r):
                pending.append((r, x))


def label_type(predictor) -> pa.DataType:
    """Arrow type of one class name: int64 when every name is an integer, else string."""
    names = predictor.class_names
    name = pa.int64() if all(isinstance(c, int) and not isinstance(c, bool) for c in names) else pa.string()
    return pa.list_(name) if predictor.task == "multilabel" else name


def label_array(predictor, proba: np.ndarray) -> pa.Array:
    """The decided labels of ``proba`` ((n,) or (n, k)) by the manifest's rule (``Predictor.labels``)."""
    labels, kind = predictor.labels(proba), label_type(predictor)
    if isinstance(labels, list):  # multilabel: a list of names per row
        as_name = str if pa.types.is_string(kind.value_type) else int
        return pa.array([[as_name(c) for c in row] for row in labels], type=kind)
    return pa.array(labels.tolist(), type=kind)


def probabilities_array(proba: np.ndarray) -> pa.Array:
    """(n, k) float32 -> list<float32> of k values per row (no copy of the values)."""
    k = proba.shape[1]
    flat = pa.array(np.ascontiguousarray(proba, np.float32).reshape(-1), type=pa.float32())
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (len(proba) + 1) * k, k, dtype=np.int32)), flat)


def output_columns(predictor, ids: pa.Array, proba: np.ndarray) -> dict:
    """The scored columns (see the module docstring) of ``ids`` and their probabilities (n,) or (n, k)."""
    if predictor.task == "binary":
        return {"id": ids, "probability": pa.array(proba, type=pa.float32()), "label": label_array(predictor, proba)}
    return {"id": ids, "label": label_array(predictor, proba), "probabilities": probabilities_array(proba)}


def score_table(predictor, table, layout: str, id_column: str, feature_columns=None):
    """Score a table of sequences.

    Returns ``(scored, refused, rows_in)``: scored is a table of ``output_columns``; refused is a
    table id, reason; rows_in = len(scored) + len(refused) sequences.
    """
    dec = parquet_io.decode(table, layout, id_column, feature_columns, n_features=predictor.n_features)
    n = len(dec.steps)
    proba = np.full((n,) if predictor.task == "binary" else (n, predictor.n_outputs), np.nan, dtype=np.float32)
    reasons: dict = {}
    for rows, X in dec.groups(GROUP_ROWS):
        _score_rows(predictor, rows, X, proba, reasons)
    ids = dec.ids
    bad_ids, bad_reasons = dec.bad_ids, list(dec.bad_reasons)
    if reasons:
        late = np.array(sorted(reasons))
        keep = np.ones(n, dtype=bool)
        keep[late] = False
        bad_ids = pa.concat_arrays([bad_ids, ids.take(pa.array(late))])
        bad_reasons += [reasons[int(i)] for i in late]
        ids, proba = ids.take(pa.array(np.flatnonzero(keep))), proba[keep]
    scored = pa.table(output_columns(predictor, ids, proba))
    refused = pa.table({"id": bad_ids, "reason": pa.array(bad_reasons, type=pa.string())})
    return scored, refused, dec.rows_in


def _refuse_repeated_ids(scored: pa.Table, refused: pa.Table):
    """Move every copy of an id that the fragment scored more than once to the refused rows."""
    counts = pc.value_counts(scored.column("id").combine_chunks().drop_null()) if scored.num_rows else None
    if counts is None:
        return scored, refused
    mask = counts.field("counts").to_numpy() > 1
    if not mask.any():
        return scored, refused
    repeated = counts.field("values").filter(pa.array(mask))
    n_times = dict(zip(repeated.to_pylist(), counts.field("counts").to_numpy()[mask].tolist()))
    dup = pc.is_in(scored.column("id"), value_set=repeated)
    moved = scored.filter(dup)
    extra = pa.table({"id": moved.column("id"),
                      "reason": pa.array([f"id appears {n_times[i]} times in the input: expected unique ids"
                                          for i in moved.column("id").to_pylist()], type=pa.string())})
    return scored.filter(pc.invert(dup)), pa.concat_tables([refused, extra])


def _source(frag: Fragment) -> str:
    return frag.path if frag.row_groups is None else f"{frag.path} row groups {frag.row_groups[0]}..{frag.row_groups[1] - 1}"


def process_fragment(spec: JobSpec, frag: Fragment, threads: Optional[int] = None) -> dict:
    """Read one fragment, score it, write ``_errors/part-N`` (when rows were refused) then ``part-N``.

    Writing the same fragment twice (an engine retry) writes the same bytes under the same name.
    Returns the fragment's counts.
    """
    t0, started = time.perf_counter(), time.time()
    predictor = get_predictor(spec.model_dir, threads or spec.threads, spec.graph, spec.model_sha256)
    fs_in, _ = parquet_io.filesystem_and_path(spec.input)
    columns = [spec.id_column] + ([parquet_io.X_COLUMN] if spec.layout == "nested"
                                 else [parquet_io.T_COLUMN, *spec.feature_columns])
    scored, refused, rows_in = [], [], 0
    try:
        with fs_in.open_input_file(frag.path) as fh:
            pf = pq.ParquetFile(fh)
            groups = list(range(*frag.row_groups)) if frag.row_groups else None
            have = pf.metadata.num_rows if groups is None else sum(pf.metadata.row_group(g).num_rows for g in groups)
            if have != frag.rows:
                raise DataFormatError(f"{_source(frag)}: expected {frag.rows} rows as planned, found {have}: "
                                      "the input changed during the job")
            if spec.layout == "nested":
                tables = (pa.Table.from_batches([b]) for b in
                          pf.iter_batches(BATCH_ROWS, row_groups=groups, columns=columns, use_threads=False))
            else:  # a sequence's rows may sit anywhere in the file: read it whole
                tables = [pf.read_row_groups(groups, columns=columns, use_threads=False) if groups
                          else pf.read(columns=columns, use_threads=False)]
            for table in tables:
                ok, bad, n_in = score_table(predictor, table, spec.layout, spec.id_column, spec.feature_columns)
                scored.append(ok)
                refused.append(bad)
                rows_in += n_in
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(f"cannot read {_source(frag)}: {str(exc).splitlines()[0][:200]}") from None
    id_type = pf.schema_arrow.field(spec.id_column).type
    empty = np.zeros((0,) if predictor.task == "binary" else (0, predictor.n_outputs), np.float32)
    out = pa.concat_tables(scored) if scored else pa.table(output_columns(predictor, pa.array([], id_type), empty))
    bad = pa.concat_tables(refused) if refused else pa.table({"id": pa.array([], id_type), "reason": pa.array([], pa.string())})
    if spec.layout == "nested":
        out, bad = _refuse_repeated_ids(out, bad)
    fs_out, root = parquet_io.filesystem_and_path(spec.output)
    name = part_name(frag.index)
    if bad.num_rows:
        bad = bad.append_column("source", pa.array([_source(frag)] * bad.num_rows, pa.string()))
        parquet_io.write_table_atomic(bad, fs_out, f"{root.rstrip('/')}/{ERRORS_DIR}/{name}")
    seconds = time.perf_counter() - t0
    meta = {"fragment": frag.index, "rows_in": rows_in, "rows_refused": bad.num_rows, "worker": worker_id(),
            "threads": predictor.workers, "model_sha256": spec.model_sha256, "seconds": round(seconds, 3),
            "started": started, "finished": time.time()}
    out = out.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    parquet_io.write_table_atomic(out, fs_out, f"{root.rstrip('/')}/{name}")
    return {"index": frag.index, "rows_in": rows_in, "rows_out": out.num_rows, "rows_refused": bad.num_rows,
            "worker": worker_id(), "seconds": seconds, "fatal": None, "exit_code": 0}


def process_fragment_safe(spec: JobSpec, frag: Fragment, threads: Optional[int] = None) -> dict:
    """``process_fragment``, with an expected error returned as ``fatal`` instead of raised.

    Engines wrap worker exceptions in their own types and tracebacks; returning the one-line
    message lets the driver print it as every other gru-predict error.
    """
    try:
        return process_fragment(spec, frag, threads)
    except PipelineError as exc:
        return {"index": frag.index, "rows_in": 0, "rows_out": 0, "rows_refused": 0, "worker": worker_id(),
                "seconds": 0.0, "fatal": str(exc), "exit_code": exc.exit_code}
