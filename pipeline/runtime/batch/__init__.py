"""Batch scoring of Parquet on one machine, Ray Data or Spark (``gru-predict --engine``).

Owns nothing itself; the stages are one module each:
    plan.py          input -> fragments with deterministic part names; output dir, resume, commit
    score.py         one fragment -> one part (and its _errors part), written atomically, in a worker
    local.py         engine: worker processes on this machine
    ray_engine.py    engine: Ray Data map_batches with a callable class (actor pool)
    spark_engine.py  engine: Spark mapInPandas, one fragment per partition
    job.py           run_job: plan -> engine -> commit
    api.py           for the user's own Ray / Spark jobs: ``RayScorer``, ``SparkScorer``

Output columns of every engine and of the API (``score.output_columns``): a binary model
``id, probability, label``; a multiclass or multilabel model ``id, label, probabilities`` (list<float32>
of k, in class_names order; a multilabel label is the list of the names decided). Rows are never
dropped or repeated: a sequence that cannot be scored is in ``_errors`` (the API: its ``error`` column).

Imports: pyarrow (and ray / pyspark in their engines) -- nothing here is imported by
``pipeline.runtime`` or ``Predictor``; gru-predict imports it only for Parquet input.
"""
