"""``gru-predict MODEL_DIR INPUT [--output FILE]``: batch predictions from a data file.

Output columns (CSV): a binary model ``id,probability,label`` (p(class 1) and the class decided by the
threshold); a multiclass or multilabel model ``id,label,p_<class 0>,...,p_<class k-1>`` (one column per
class name; a multilabel label is the names decided joined by ``|``, empty when none is).

Lengths are fed as ``Predictor.predict_proba`` takes them: rows of their own length (long CSV, .ts,
Parquet) and NPZ ``lengths`` are stated lengths; .npy and an NPZ without ``lengths`` are arrays without
them (a model with its own Masking value reads them off trailing mask-valued steps, else every row is
full). A fixed-length model gets rows of different lengths as a list (each length group unpadded).

``gru-predict MODEL_DIR - --stream`` reads one timestep per stdin line (F comma-separated raw
features) and prints the running probability of class 1 (k classes: the k probabilities,
comma-separated) after each line, flushed, so it can sit
in a shell pipeline. A blank line or ``#`` comment is skipped, ``reset`` starts a new sequence; the
first malformed line stops with a one-line error on stderr and exit code 2 (no guessing).

``gru-predict MODEL_DIR INPUT --output DIR [--engine local|ray|spark] [--workers N] [--layout nested|long]
[--id-column C] [--resume]`` scores a Parquet file, directory or URI into a Parquet directory (one
part per input fragment, ``_errors``, ``_summary.json``, ``_SUCCESS``; see pipeline.runtime.batch).
A directory INPUT is always such a job: one holding no Parquet files is refused saying what it holds.

Owns: the predict command line. Imports: the TF-free runtime only; pipeline.runtime.batch (pyarrow,
and ray or pyspark for their engines) only when the input is Parquet.
Reads: MODEL_DIR (exported folder) and INPUT (.npz, .npy, .csv long layout, .ts, .parquet).
Writes: the CSV to --output (atomically) or stdout; for Parquet input with --output, a Parquet
directory (columns in pipeline.runtime.batch.score).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, TextIO

from pipeline.cli_common import run_cli
from pipeline.errors import InputError

PROG = "gru-predict"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Predict with an exported GRU classifier (onnxruntime, no TensorFlow). "
                    "Writes one CSV row per sample: id,probability,label (binary) or "
                    "id,label,p_<class>... (multiclass, multilabel).",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="exported folder (e.g. exported)")
    p.add_argument("input", metavar="INPUT", help="data file: .npz (X[, lengths, ids]), .npy (X), .csv (long layout), .ts; "
                                                  "or Parquet: a .parquet file, a directory of them, or a URI")
    p.add_argument("--output", "-o", metavar="FILE", help="write the CSV here instead of stdout (Parquet input: the "
                                                           "output directory of Parquet parts)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="worker threads that run the chunks of a large batch in parallel, each chunk a "
                        "single-threaded onnxruntime call (default: the CPUs this process may use)")
    p.add_argument("--graph", choices=("auto", "native", "unrolled"), default="auto",
                   help="graph form: auto (default: the runtime decides), native (model.onnx, GRU op), unrolled "
                        "(model_unrolled.onnx for inputs of the trained length: higher throughput on large batches)")
    p.add_argument("--stream", action="store_true",
                   help="read one timestep per line (F comma-separated numbers) from INPUT ('-' = stdin) and "
                        "print the running probability after each; stops at the first bad line (exit 2)")
    batch = p.add_argument_group("Parquet batch jobs (pip install 'gru-onnx-pipeline[parquet]', [ray], [spark])")
    batch.add_argument("--engine", choices=("local", "ray", "spark"), default=None,
                       help="where to score Parquet input: local (this process, default), ray (Ray Data; joins "
                            "RAY_ADDRESS when set) or spark (Spark; GRU_SPARK_MASTER or local[N])")
    batch.add_argument("--workers", type=int, default=None,
                       help="parallel workers (local processes, Ray actors or Spark task slots; default: the usable CPUs)")
    batch.add_argument("--layout", choices=("nested", "long"), default=None,
                       help="nested: id + x list<list<float>> per row; long: sample_id, t, features per timestep "
                            "(default: told from the columns)")
    batch.add_argument("--id-column", metavar="C", default=None,
                       help="id column (default: id for nested, sample_id for long)")
    batch.add_argument("--resume", action="store_true",
                       help="complete an interrupted job in --output, keeping its finished parts")
    return p


BATCH_FLAGS = ("engine", "workers", "layout", "id_column", "resume")
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")  # as pipeline.runtime.batch.plan (which needs pyarrow)
DATA_SUFFIXES = ".npz, .npy, .csv, .ts, .parquet"


def is_parquet_input(location: str) -> bool:
    """A .parquet file, a directory (of Parquet files) or a URI."""
    return "://" in location or Path(location).suffix.lower() in PARQUET_SUFFIXES or Path(location).is_dir()


def _parquet_files_under(folder: Path) -> tuple[int, list[str]]:
    """(number of Parquet files a batch job would read under ``folder``, the names directly in it).

    The batch job's rule (``plan.list_input_files``): every *.parquet / .parq / .pq file, at any
    depth, whose path below ``folder`` has no part starting with ``_`` or ``.``.
    """
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        count += sum(1 for f in files if not f.startswith(("_", ".")) and f.lower().endswith(PARQUET_SUFFIXES))
    return count, sorted(os.listdir(folder))


def check_directory_input(location: str, output: Optional[str]) -> None:
    """A local directory INPUT is a Parquet batch job: refuse one without Parquet files or without --output.

    Raises:
        InputError: naming what such a directory must contain and what this one holds.
    """
    folder = Path(location)
    n_parquet, names = _parquet_files_under(folder)
    if n_parquet == 0:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} entries)" if len(names) > 6 else "")
        hint = ""
        if (folder / "manifest.json").is_file():
            hint = (f"; {location!r} looks like an exported model folder: give it as MODEL_DIR and a data file "
                    f"({DATA_SUFFIXES}) as INPUT")
        raise InputError(f"INPUT {location!r} is a directory with no Parquet files ({', '.join(PARQUET_SUFFIXES)}): "
                         f"a directory INPUT is scored as a Parquet batch job (with --output DIR) and must hold "
                         f"them; this one holds {shown or 'nothing'}{hint}")
    if not output:
        raise InputError(f"INPUT {location!r} is a directory of {n_parquet} Parquet file(s), scored as a batch job "
                         "that writes a directory of Parquet parts: expected --output DIR")


def batch_main(args) -> int:
    """Parquet in, Parquet out: a batch job on the local, Ray or Spark engine."""
    from pipeline.datafiles import parquet_module

    parquet_module()  # a one-line error with the install hint when pyarrow is missing
    from pipeline.runtime.batch.job import run_job

    if not args.output:
        raise InputError(f"{args.input}: Parquet batch jobs write a directory of Parquet parts: expected --output DIR")
    s = run_job(args.model_dir, args.input, args.output, engine=args.engine or "local", workers=args.workers,
                layout=args.layout, id_column=args.id_column, resume=args.resume, threads=args.threads,
                graph=args.graph)
    skipped = f", {s['parts_skipped']} finished parts kept" if s["parts_skipped"] else ""
    print(f"wrote {s['rows_out']} predictions in {s['parts']} parts to {args.output} (engine {s['engine']}, "
          f"{s['workers']} workers, {s['wall_seconds']:.1f} s of which engine start {s['engine_start_seconds']:.1f} s"
          f"{skipped}); {s['rows_refused']} of {s['rows_in']} sequences refused", file=sys.stderr)
    if s["rows_refused"]:
        from pipeline.runtime.batch.plan import OutputDir

        first = OutputDir(args.output).first_error()
        detail = f" (first: id {first[0]!r}: {first[1]})" if first else ""
        raise InputError(f"{s['rows_refused']} of {s['rows_in']} sequences could not be scored; their ids and "
                         f"reasons are in {args.output.rstrip('/')}/_errors{detail}")
    return 0


def stream_main(args) -> int:
    """--stream: timesteps from a text file or stdin, running probabilities to stdout."""
    from pipeline.runtime.predictor import Predictor
    from pipeline.runtime.stream import stream_csv

    if args.output:
        raise InputError("--output cannot be used with --stream: the probabilities go to stdout line by line")
    predictor = Predictor.load(args.model_dir, threads=args.threads, graph=args.graph)
    if args.input == "-":
        stream_csv(predictor, sys.stdin, sys.stdout)
    else:
        try:
            fh = open(args.input, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.input}: cannot read: {exc.strerror or exc}") from None
        with fh:
            stream_csv(predictor, fh, sys.stdout)
    return 0


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[TextIO]:
    """Write a text file beside ``out`` and move it into place only when writing succeeded."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            yield fh
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


LABEL_SEPARATOR = "|"  # joins the class names a multilabel model decides for one row


def header(class_names: Optional[list] = None) -> tuple:
    """CSV header: binary (``class_names`` None) or one ``p_<class>`` column per class."""
    if class_names is None:
        return ("id", "probability", "label")
    return ("id", "label", *(f"p_{c}" for c in class_names))


def label_text(label) -> str:
    """A decided label as CSV text: the class name, or a multilabel row's names joined by ``|``."""
    if isinstance(label, list):
        return LABEL_SEPARATOR.join(str(c) for c in label)
    return label


def write_rows(fh: TextIO, ids, proba, labels, header_row: bool = True, class_names: Optional[list] = None) -> None:
    """CSV rows: ``id,probability,label`` for (N,) ``proba``; ``id,label,p_...`` for (N, k) and ``class_names``."""
    # csv.writer quotes ids holding commas, quotes or newlines (they come from user files)
    w = csv.writer(fh, lineterminator="\n")
    k_classes = getattr(proba, "ndim", 1) == 2
    if header_row:
        w.writerow(header(class_names if k_classes else None))
    if k_classes:
        w.writerows((i, label_text(lab), *(f"{float(v):.9g}" for v in row)) for i, row, lab in zip(ids, proba, labels))
    else:
        w.writerows((i, f"{float(p):.9g}", lab) for i, p, lab in zip(ids, proba, labels))


def model_input(predictor, X, lengths, given: bool = True):
    """``(X, lengths)`` as ``predict_proba`` takes them for rows X (N, T, F) of a data file with ``lengths`` (N,).

    A variable-length model gets the lengths when the file states them (``given``), else none (its
    own rule: mask value or full rows); a fixed-length model takes no lengths, so rows of different
    lengths go as a list (each length group runs unpadded, exactly).
    """
    if predictor.lengths_name is not None:
        return X, (lengths if given else None)
    if lengths is None or (lengths == X.shape[1]).all():
        return X, None
    return [X[i, :n] for i, n in enumerate(lengths.tolist())], None


# ---------------------------------------------------------------- large .npy files, in bounded memory
NPY_CHUNK_BYTES = 16 << 20  # raw float32 bytes per chunk: memory stays O(chunk), not O(file)


def predict_npy_chunked(predictor, path: str, fh: TextIO, chunk_bytes: int = NPY_CHUNK_BYTES) -> int:
    """Predict every row of a (N, T, F) .npy file, reading, predicting and writing it chunk by chunk.

    A first pass checks every value (so nothing is written for a bad file), a second predicts.
    Results equal ``predict_proba`` on the whole array (rows are independent). Returns N.
    """
    import numpy as np

    from pipeline.datafiles import iter_npy_chunks

    shape, _ = iter_npy_chunks(path, 1)
    n, t, f = shape
    if f != predictor.n_features:
        raise InputError(f"{path}: expected {predictor.n_features} features per timestep, got {f}")
    rows = max(1, chunk_bytes // (t * f * 4))
    for start, X in iter_npy_chunks(path, rows)[1]:
        bad = ~np.isfinite(X)
        if bad.any():
            i, step, feat = (int(v) for v in np.argwhere(bad)[0])
            raise InputError(f"{path}: expected finite values, got {X[i, step, feat]} at sample {start + i}, "
                             f"timestep {step}, feature {feat}", file=path, sample=start + i, timestep=step, feature=feat,
                             sample_message=f"{path}: expected finite values, got {X[i, step, feat]} at timestep {step}, "
                                            f"feature {feat}")
    names = None if predictor.task == "binary" else predictor.class_names
    csv.writer(fh, lineterminator="\n").writerow(header(names))
    for start, X in iter_npy_chunks(path, rows)[1]:
        try:
            proba = predictor.predict_proba(X)
        except InputError as exc:
            if exc.sample is None:  # about the chunk as a whole
                raise InputError(f"{path}: rows {start}..{start + len(X) - 1}: {exc}", file=path) from None
            i = start + int(exc.sample)  # the chunk's row -> the file's sample number
            raise InputError(f"{path}: sample {i}: {exc.without_sample()}", file=path, sample=i, timestep=exc.timestep,
                             feature=exc.feature, sample_message=f"{path}: {exc.without_sample()}") from None
        write_rows(fh, range(start, start + len(X)), proba, predictor.labels(proba), header_row=False,
                   class_names=names)
    return n


def _predict_npy_main(predictor, args) -> int:
    """gru-predict on a .npy INPUT: the streaming path of ``predict_npy_chunked``."""
    if not args.output:
        predict_npy_chunked(predictor, args.input, sys.stdout)
        return 0
    out = Path(args.output)
    with atomic_output(out) as fh:
        n = predict_npy_chunked(predictor, args.input, fh)
    print(f"wrote {n} predictions to {out}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def go() -> int:
        from pipeline.datafiles import read_sequences
        from pipeline.runtime.predictor import Predictor

        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads: expected a positive integer, got {args.threads}")
        batch_flags = [f"--{f.replace('_', '-')}" for f in BATCH_FLAGS if getattr(args, f) not in (None, False)]
        if args.stream:
            if batch_flags:
                raise InputError(f"{batch_flags[0]} cannot be used with --stream: it applies to Parquet batch jobs")
            return stream_main(args)
        if "://" not in args.input and Path(args.input).is_dir():
            check_directory_input(args.input, args.output)
        if is_parquet_input(args.input) and (args.output or batch_flags or Path(args.input).is_dir() or "://" in args.input):
            return batch_main(args)
        if batch_flags:
            raise InputError(f"{batch_flags[0]} applies to Parquet input (a .parquet file, a directory or a URI), "
                             f"got {args.input!r}")
        predictor = Predictor.load(args.model_dir, threads=args.threads, graph=args.graph)
        if predictor.input_kind == "tokens":  # an Embedding model: (N, T) ids from .npz / .npy
            from pipeline.datafiles import read_token_ids

            X, lengths, sample_ids, _ = read_token_ids(args.input)
            if lengths is not None and predictor.lengths_name is None and getattr(X, "ndim", 0) == 2:
                from pipeline.runtime.inputs import check_lengths

                lengths = check_lengths(lengths, X.shape[0], X.shape[1])  # rows of their own length, unpadded
                X, lengths = [x[:n] for x, n in zip(X, lengths.tolist())], None
        elif Path(args.input).suffix.lower() == ".npy":
            return _predict_npy_main(predictor, args)
        else:
            data = read_sequences(args.input)
            if data.n_features != predictor.n_features:
                raise InputError(f"{args.input}: expected {predictor.n_features} features per timestep, got {data.n_features}")
            sample_ids = data.ids
            X, lengths = model_input(predictor, data.X, data.lengths, data.lengths_given)
        proba = predictor.predict_proba(X, lengths)
        labels = predictor.labels(proba)
        names = None if predictor.task == "binary" else predictor.class_names
        if args.output:
            out = Path(args.output)
            with atomic_output(out) as fh:
                write_rows(fh, sample_ids, proba, labels, class_names=names)
            print(f"wrote {len(proba)} predictions to {out}", file=sys.stderr)
        else:
            write_rows(sys.stdout, sample_ids, proba, labels, class_names=names)
        return 0

    return run_cli(go, PROG)


if __name__ == "__main__":
    sys.exit(main())
