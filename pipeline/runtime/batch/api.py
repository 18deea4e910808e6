"""For the user's own Ray or Spark job: score rows the job already holds.

Owns: ``RayScorer`` (a Ray Data callable class: one Predictor per actor) and ``SparkScorer``
(functions for ``mapInPandas`` / ``mapInArrow`` on ragged nested rows, ``groupBy(...).applyInPandas``
on the long layout, and a ``predict_batch_udf`` for fixed-length rows). Every output row is
``id, probability, label, error`` (binary) or ``id, label, probabilities, error`` (multiclass and
multilabel: ``probabilities`` list<float32> of k, in class_names order; a multilabel ``label`` is the
list of the names decided), the columns of ``score.output_columns``: ``error`` is null for a scored
row, else the reason and the other columns are null -- nothing is dropped.
Imports: pyarrow, ``score``; pandas and pyspark only inside the Spark functions (they run where
Spark runs them). Reads: the model folder, in each worker. Writes: nothing.

The model folder must be readable at the same path on every worker (a shared file system, or
shipped with the job: Ray ``runtime_env={"working_dir": ...}``, Spark ``--archives``).

    # Ray
    scored = ds.map_batches(RayScorer, fn_constructor_kwargs={"model_dir": "/models/exported"},
                            batch_format="pyarrow", batch_size=4096, compute=ray.data.ActorPoolStrategy(size=4))
    # Spark
    s = SparkScorer("/models/exported")
    scored = df.mapInPandas(s.nested, s.output_schema(df))
"""

from __future__ import annotations

import sys

from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from pipeline import parquet_io
from pipeline.runtime.batch.score import get_predictor, score_table

__all__ = ["RayScorer", "SparkScorer", "score_rows"]


def score_rows(predictor, table: pa.Table, layout: str, id_column: str, feature_columns=None) -> pa.Table:
    """Scored and refused rows as one table: the scored columns and error (null when scored)."""
    scored, refused, _ = score_table(predictor, table, layout, id_column, feature_columns)
    n_bad = refused.num_rows
    ok = scored.append_column("error", pa.nulls(scored.num_rows, pa.string()))
    if not n_bad:
        return ok
    bad = {"id": refused.column("id")}
    bad.update((f.name, pa.nulls(n_bad, f.type)) for f in scored.schema if f.name != "id")
    bad["error"] = refused.column("reason")
    return pa.concat_tables([ok, pa.table(bad, schema=ok.schema)])


class RayScorer:
    """Ray Data callable class: ``ds.map_batches(RayScorer, fn_constructor_kwargs={...}, batch_format="pyarrow")``.

    Args:
        model_dir: the exported folder (same path on every node).
        layout: ``nested`` (map_batches over rows id, x) or ``long`` (use it with
            ``ds.groupby(id_column).map_groups(...)``, so a sequence's rows arrive together).
        id_column: default ``id`` (nested) / ``sample_id`` (long).
        threads: onnxruntime threads; default the CPUs Ray gave the actor.
    """

    def __init__(self, model_dir: str, layout: str = "nested", id_column: Optional[str] = None,
                 threads: Optional[int] = None, graph: str = "auto") -> None:
        ray = sys.modules.get("ray")  # inside a Ray worker it is imported; outside, neither import nor start it
        if threads is None and ray is not None and ray.is_initialized():
            try:
                threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
            except Exception:  # noqa: BLE001 - not in a task or actor
                threads = None
        self.predictor = get_predictor(model_dir, threads, graph)
        self.layout = layout
        self.id_column = id_column or parquet_io.default_id_column(layout)

    def __call__(self, batch) -> pa.Table:
        if not isinstance(batch, (pa.Table, pa.RecordBatch)):  # numpy / pandas batch formats
            batch = pa.Table.from_pandas(batch) if hasattr(batch, "columns") else pa.table(batch)
        return score_rows(self.predictor, batch, self.layout, self.id_column)


class SparkScorer:
    """Functions for Spark DataFrames; picklable (it holds only settings; each Python worker
    loads the Predictor once).

        s = SparkScorer("/models/exported")
        df.mapInPandas(s.nested, s.output_schema(df))                           # ragged nested rows
        df.mapInArrow(s.nested_arrow, s.output_schema(df))                      # the same, no pandas
        df.groupBy("sample_id").applyInPandas(s.long, s.output_schema(df, "sample_id"))  # long layout
        df.withColumn("probability", s.fixed_length_udf(50)(F.flatten("x")))    # fixed-length rows
    """

    def __init__(self, model_dir: str, id_column: str = "id", threads: Optional[int] = None,
                 graph: str = "auto") -> None:
        self.model_dir = model_dir
        self.id_column = id_column
        self.threads = threads
        self.graph = graph

    def _predictor(self):
        threads = self.threads
        if threads is None:
            from pyspark import TaskContext

            ctx = TaskContext.get()
            threads = max(1, int(ctx.cpus())) if ctx is not None else 1
        return get_predictor(self.model_dir, threads, self.graph)

    def output_schema(self, df, id_column: Optional[str] = None) -> str:
        """DDL of the output rows: the id keeps its Spark type; the label's type follows the class names."""
        name = id_column or self.id_column
        id_type = df.schema[name].dataType.simpleString()
        predictor = get_predictor(self.model_dir, 1, self.graph)
        label = "bigint" if all(isinstance(c, int) and not isinstance(c, bool) for c in predictor.class_names) \
            else "string"
        if predictor.task == "binary":
            return f"id {id_type}, probability float, label {label}, error string"
        if predictor.task == "multilabel":
            label = f"array<{label}>"
        return f"id {id_type}, label {label}, probabilities array<float>, error string"

    def nested_arrow(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """For ``mapInArrow``: rows (id, x list<list<float>>), ragged allowed."""
        predictor = self._predictor()
        for batch in batches:
            yield from score_rows(predictor, pa.Table.from_batches([batch]), "nested", self.id_column).to_batches()

    def nested(self, batches):
        """For ``mapInPandas``: rows (id, x list<list<float>>), ragged allowed."""
        predictor = self._predictor()
        x_type = pa.list_(pa.list_(pa.float32()))
        for pdf in batches:
            x = pa.array([None if v is None else [np.asarray(s, dtype=np.float32) if s is not None else None for s in v]
                          for v in pdf[parquet_io.X_COLUMN]], type=x_type)
            table = pa.table({self.id_column: pa.array(pdf[self.id_column]), parquet_io.X_COLUMN: x})
            yield score_rows(predictor, table, "nested", self.id_column).to_pandas()

    @property
    def long(self):
        """For ``groupBy(id).applyInPandas``: a function of the rows (sample_id, t, features...) of one sequence.

        (A plain one-argument function: Spark passes the group key too to two-argument functions.)
        """

        def score_group(pdf):
            table = pa.Table.from_pandas(pdf, preserve_index=False)
            features = parquet_io.long_feature_columns(table.schema, self.id_column)
            return score_rows(self._predictor(), table, "long", self.id_column, features).to_pandas()

        return score_group

    def fixed_length_udf(self, timesteps: int, batch_size: int = 4096):
        """``pyspark.ml.functions.predict_batch_udf`` for rows of exactly ``timesteps`` steps.

        The column must hold the T*F values of a row, flattened (``F.flatten("x")``); the UDF
        returns the probability (float) of a binary model, the k probabilities (array<float>)
        otherwise. A row the model refuses (NaN, wrong length) fails the Spark task: use
        ``nested`` to route such rows to ``error`` instead.
        """
        from pyspark.ml.functions import predict_batch_udf
        from pyspark.sql.types import ArrayType, FloatType

        model_dir, threads, graph = self.model_dir, self.threads, self.graph
        loaded = get_predictor(model_dir, 1, graph)
        n_features, binary = loaded.n_features, loaded.task == "binary"

        def make_predict_fn():
            predictor = get_predictor(model_dir, threads or 1, graph)

            def predict(X):  # (batch, timesteps, features), every row full length
                lengths = np.full(len(X), X.shape[1], np.int64) if predictor.lengths_name else None
                return predictor.predict_proba(X, lengths)  # (batch,) or (batch, k)

            return predict

        return_type = FloatType() if binary else ArrayType(FloatType())
        return predict_batch_udf(make_predict_fn, return_type=return_type, batch_size=batch_size,
                                 input_tensor_shapes=[[int(timesteps), int(n_features)]])
