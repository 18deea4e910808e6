"""The batch job's plan and its output directory: fragments, part names, resume, commit.

Owns: listing the Parquet input and cutting it into fragments (one output part each, with a
deterministic name); the output directory's contract (``_plan.json``, ``part-NNNNN.parquet``,
``_errors/part-NNNNN.parquet``, ``_summary.json``, ``_SUCCESS``); refusing a rerun without
--resume and a resume whose input or settings changed; the commit that checks every fragment
is accounted for and no id appears twice.
Imports: pyarrow, pipeline.parquet_io, pipeline.errors (imported only when a batch job runs).
Reads: Parquet footers of the input; the output directory. Writes: the output directory's
``_plan.json``, ``_summary.json``, ``_SUCCESS`` (parts are written by ``score.process_fragment``).

A fragment is a whole file (long layout: a sequence's rows must sit in one file) or, for the
nested layout, a run of consecutive row groups of one file holding about ``rows_per_part`` rows,
so one big file still spreads over many workers.
"""

from __future__ import annotations

import json
import posixpath
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipeline import parquet_io
from pipeline.errors import DataFormatError, InputError, PipelineError

__all__ = ["ROWS_PER_PART", "PARQUET_SUFFIXES", "Fragment", "Plan", "part_name", "make_plan", "OutputDir"]

ROWS_PER_PART = 131072          # nested layout: row groups are gathered into parts of about this many rows
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
PLAN_FILE, SUMMARY_FILE, SUCCESS_FILE, ERRORS_DIR = "_plan.json", "_summary.json", "_SUCCESS", "_errors"
PLAN_FORMAT = 1
META_KEY = b"gru"               # Parquet key-value metadata of each part: per-fragment counts


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass
class Fragment:
    """One unit of work: rows ``row_groups[0]:row_groups[1]`` of one file (None: the whole file)."""

    index: int
    path: str                       # path on the input filesystem
    row_groups: Optional[list]      # [start, stop) or None
    rows: int                       # table rows
    file_size: int
    mtime_ns: Optional[int]


@dataclass
class Plan:
    input: str
    layout: str
    id_column: str
    feature_columns: list
    model_sha256: str
    rows_per_part: int
    fragments: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"format": PLAN_FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        raw = json.loads(text)
        raw.pop("format", None)
        raw["fragments"] = [Fragment(**f) for f in raw["fragments"]]
        return cls(**raw)


def _hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.split("/") if part)


def list_input_files(location: str):
    """``(filesystem, [file paths])``: the file itself, or every visible *.parquet under a directory."""
    fs, base = parquet_io.filesystem_and_path(location)
    try:
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            return fs, [base]
        if info.type != pafs.FileType.Directory:
            raise DataFormatError(f"input not found: {location!r}: expected a Parquet file or a directory of them")
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(f"cannot list {location!r}: {str(exc).splitlines()[0][:200]}") from None
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and i.path.lower().endswith(PARQUET_SUFFIXES)
                   and not _hidden(posixpath.relpath(i.path, base)))
    if not files:
        raise DataFormatError(f"no Parquet files ({', '.join(PARQUET_SUFFIXES)}) under {location!r}")
    return fs, files


def _footer(fs, path: str):
    try:
        info = fs.get_file_info(path)
        with fs.open_input_file(path) as fh:
            md = pq.ParquetFile(fh).metadata
            return path, info.size, info.mtime_ns, md, md.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(f"cannot read {path!r} as Parquet: {str(exc).splitlines()[0][:200]}") from None


def make_plan(location: str, layout: Optional[str], id_column: Optional[str], n_features: int,
              model_sha256: str, rows_per_part: int = ROWS_PER_PART) -> Plan:
    """List the input, read every footer, check every schema, and cut the input into fragments."""
    if rows_per_part < 1:
        raise InputError(f"rows_per_part: expected a positive integer, got {rows_per_part}")
    fs, files = list_input_files(location)
    with ThreadPoolExecutor(min(16, len(files))) as pool:  # footers: one small read per file
        footers = list(pool.map(lambda p: _footer(fs, p), files))
    schema = footers[0][4]
    layout = layout or parquet_io.detect_layout(schema)
    id_column = id_column or parquet_io.default_id_column(layout)
    features = None
    id_type = None
    for path, _, _, _, sch in footers:
        got = parquet_io.check_schema(sch, layout, id_column, n_features, path)
        if features is None:
            features, id_type = got, sch.field(id_column).type
        elif got != features:
            raise DataFormatError(f"{path}: expected the feature columns {features} (as in {files[0]}), got {got}")
        elif sch.field(id_column).type != id_type:
            raise DataFormatError(f"{path}: expected the id column {id_column!r} of type {id_type} (as in {files[0]}), "
                                  f"got {sch.field(id_column).type}")
    plan = Plan(location, layout, id_column, features or [], model_sha256, int(rows_per_part))
    for path, size, mtime_ns, md, _ in footers:
        n_groups = md.num_row_groups
        group_rows = [md.row_group(g).num_rows for g in range(n_groups)]
        if layout == "long" or n_groups <= 1:
            cuts = [(0, n_groups)] if n_groups else []
        else:
            cuts, start, acc = [], 0, 0
            for g, r in enumerate(group_rows):
                acc += r
                if acc >= rows_per_part:
                    cuts.append((start, g + 1))
                    start, acc = g + 1, 0
            if start < n_groups:
                cuts.append((start, n_groups))
        whole = len(cuts) <= 1
        for a, b in cuts or [(0, 0)]:
            plan.fragments.append(Fragment(len(plan.fragments), path, None if whole else [a, b],
                                           int(sum(group_rows[a:b])), int(size), mtime_ns))
    return plan


# ---------------------------------------------------------------------------- output directory

class OutputDir:
    """The output directory of one job, on any pyarrow filesystem."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.fs, self.root = parquet_io.filesystem_and_path(location)

    def path(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *names])

    def _listing(self, sub: Optional[str] = None) -> list:
        base = self.path(sub) if sub else self.root
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        return self.fs.get_file_info(pafs.FileSelector(base, recursive=False))

    def _read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self.path(name)) as fh:
            return fh.read().decode("utf-8")

    def _write_text(self, name: str, text: str) -> None:
        tmp = self.path(f".{name}.{socket.gethostname()}.tmp")
        with self.fs.open_output_stream(tmp) as fh:
            fh.write(text.encode("utf-8"))
        self.fs.move(tmp, self.path(name))

    def prepare(self, plan: Plan, resume: bool, input_files: list) -> list:
        """Check the directory against the plan; return the fragments still to do.

        A new job needs a missing or empty directory; an existing job needs ``resume`` and the
        same input (files, sizes, modification times), layout, id column and model.
        """
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise InputError(f"--output {self.location!r} is a file: expected a directory for the Parquet parts")
        if isinstance(self.fs, pafs.LocalFileSystem):
            inside = [p for p in input_files if self.root == p or p.startswith(self.root.rstrip("/") + "/")]
            base = plan.input if "://" not in plan.input else None
            if inside or (base and self.root.startswith(parquet_io.filesystem_and_path(base)[1].rstrip("/") + "/")):
                raise InputError(f"--output {self.location!r} overlaps the input {plan.input!r}: expected separate places")
        entries = self._listing()
        if not entries:
            self.fs.create_dir(self.root, recursive=True)
            self.fs.create_dir(self.path(ERRORS_DIR), recursive=True)
            self._write_text(PLAN_FILE, plan.to_json())
            return list(plan.fragments)
        names = {posixpath.basename(e.path) for e in entries}
        if PLAN_FILE not in names:
            raise InputError(f"--output {self.location!r} already exists and was not written by gru-predict "
                             f"(no {PLAN_FILE}): expected a new or empty directory")
        if not resume:
            state = "a finished job" if SUCCESS_FILE in names else "an unfinished job"
            raise InputError(f"--output {self.location!r} already holds {state}: pass --resume to complete it "
                             "(finished parts are kept), or choose another --output")
        try:
            old = Plan.from_json(self._read_text(PLAN_FILE))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{self.path(PLAN_FILE)} is damaged ({exc}): expected the plan gru-predict wrote") from None
        for key in ("layout", "id_column", "feature_columns", "model_sha256", "rows_per_part"):
            if getattr(old, key) != getattr(plan, key):
                raise InputError(f"--resume: the {key.replace('_', ' ')} changed since the job started "
                                 f"({getattr(old, key)!r} then, {getattr(plan, key)!r} now): expected the same settings")
        if [asdict(f) for f in old.fragments] != [asdict(f) for f in plan.fragments]:
            raise InputError(f"--resume: the input {plan.input!r} changed since the job started (files, sizes or "
                             "modification times differ): expected the same input, or a new --output")
        self.fs.create_dir(self.path(ERRORS_DIR), recursive=True)
        return [f for f in plan.fragments if part_name(f.index) not in names]

    # ------------------------------------------------------------------ commit
    def _part_meta(self, name: str, sub: Optional[str] = None) -> tuple[dict, int]:
        path = self.path(sub, name) if sub else self.path(name)
        with self.fs.open_input_file(path) as fh:
            md = pq.ParquetFile(fh).metadata
        kv = md.metadata or {}
        return (json.loads(kv[META_KEY]) if META_KEY in kv else {}), md.num_rows

    def _ids(self, name: str, sub: Optional[str] = None) -> pa.ChunkedArray:
        path = self.path(sub, name) if sub else self.path(name)
        with self.fs.open_input_file(path) as fh:
            return pq.read_table(fh, columns=["id"]).column("id")

    def commit(self, plan: Plan, summary: dict, job_started: float) -> dict:
        """Check all parts, sum their counts, check no id repeats, write _summary.json and _SUCCESS.

        ``job_started``: ``time.perf_counter()`` at the job's start, for ``wall_seconds``;
        ``summary["started_epoch"]`` (``time.time()`` then) tells the parts written by this run
        from kept ones, for ``first_fragment_after_seconds`` and ``scoring_seconds``.
        """
        t0 = time.perf_counter()
        names = {posixpath.basename(e.path) for e in self._listing()}
        err_names = {posixpath.basename(e.path) for e in self._listing(ERRORS_DIR)}
        missing = [part_name(f.index) for f in plan.fragments if part_name(f.index) not in names]
        if missing:
            raise PipelineError(f"{len(missing)} of {len(plan.fragments)} parts are missing after the engine finished "
                                f"(first: {missing[0]}): rerun with --resume to complete them")
        rows_in = rows_out = refused = 0
        workers = set()
        id_arrays = []
        with ThreadPoolExecutor(8) as pool:
            metas = list(pool.map(lambda f: self._part_meta(part_name(f.index)), plan.fragments))
        for frag, (meta, n_out) in zip(plan.fragments, metas):
            name = part_name(frag.index)
            n_ref = int(meta.get("rows_refused", 0))
            if int(meta.get("rows_in", -1)) != n_out + n_ref or meta.get("model_sha256") != plan.model_sha256:
                raise PipelineError(f"{self.path(name)} does not match this job (rows or model differ): "
                                    "expected a part written by this plan; remove it and rerun with --resume")
            if n_ref:
                if name not in err_names or self._part_meta(name, ERRORS_DIR)[1] != n_ref:
                    raise PipelineError(f"{self.path(ERRORS_DIR, name)} is missing or incomplete: "
                                        f"remove {self.path(name)} and rerun with --resume")
            rows_in, rows_out, refused = rows_in + n_out + n_ref, rows_out + n_out, refused + n_ref
            workers.add(meta.get("worker", "?"))
        with ThreadPoolExecutor(8) as pool:
            id_arrays = list(pool.map(lambda f: self._ids(part_name(f.index)), plan.fragments))
            err_ids = list(pool.map(lambda n: self._ids(n, ERRORS_DIR),
                                    sorted(part_name(f.index) for f in plan.fragments if part_name(f.index) in err_names)))
        # a scored id must appear once in the parts and not among the refused; an input that repeats
        # an id in one fragment has every copy refused (listed once per input row in _errors)
        for a in err_ids:
            if len(a):
                id_arrays.append(pa.chunked_array([pc.unique(a.combine_chunks().drop_null())]))
        ids = pa.chunked_array([c for a in id_arrays for c in a.chunks], type=id_arrays[0].type) if id_arrays else None
        if ids is not None and len(ids):
            ids = ids.drop_null()
            counts = pc.value_counts(ids)
            repeated = np.flatnonzero(counts.field("counts").to_numpy() > 1)
            if len(repeated):
                first = counts.field("values")[int(repeated[0])].as_py()
                raise InputError(f"id {first!r} appears more than once in the output ({len(repeated)} ids repeat): "
                                 "expected unique ids across the input (long layout: each sample's rows in one file)")
        for sub in (None, ERRORS_DIR):  # temporary files of killed writers
            for e in self._listing(sub):
                if posixpath.basename(e.path).startswith(".") and e.path.endswith(".tmp"):
                    self.fs.delete_file(e.path)
        epoch = summary.get("started_epoch", 0.0)
        now = [m for m, _ in metas if m.get("started", 0.0) >= epoch]
        if now:  # when the first fragment began (engine and workers up) and how long scoring took
            summary["first_fragment_after_seconds"] = round(min(m["started"] for m in now) - epoch, 3)
            summary["scoring_seconds"] = round(max(m["finished"] for m in now) - min(m["started"] for m in now), 3)
        summary.update(rows_in=rows_in, rows_out=rows_out, rows_refused=refused, parts=len(plan.fragments),
                       workers_seen=sorted(workers), commit_seconds=round(time.perf_counter() - t0, 3),
                       wall_seconds=round(time.perf_counter() - job_started, 3))
        self._write_text(SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        self._write_text(SUCCESS_FILE, "")
        return summary

    def first_error(self) -> Optional[tuple]:
        """(id, reason) of the first refused row, for the closing message."""
        for e in sorted(self._listing(ERRORS_DIR), key=lambda e: e.path):
            if e.path.endswith(".parquet") and not posixpath.basename(e.path).startswith("."):
                with self.fs.open_input_file(e.path) as fh:
                    t = pq.read_table(fh)
                if t.num_rows:
                    return t.column("id")[0].as_py(), t.column("reason")[0].as_py()
        return None
