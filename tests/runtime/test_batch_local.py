"""Parquet batch jobs on the local engine: both layouts, ragged rows, refused rows, reruns and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the parquet extra is not installed (pip install -e '.[parquet]')")
import pyarrow.parquet as pq  # noqa: E402

from pipeline.errors import InputError  # noqa: E402
from pipeline.runtime.batch.job import run_job  # noqa: E402
from tests.runtime.parquet_data import (EXPORTED, ROOT, as_map, long_table, nested_table, ragged,  # noqa: E402
                                        read_output, reference_input, write_files)
from tests.runtime.test_properties import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def fixed_input(tmp_path_factory):
    """600 reference-shaped sequences (T=50, F=8) in 3 files of 256-row row groups."""
    return reference_input(tmp_path_factory.mktemp("fixed") / "in", 600, 3, 256, seed=5)


def test_nested_ragged_equals_predict_proba(tmp_path, predictor):
    seqs = ragged(300, 8, lo=1, hi=60, seed=1)
    ids = [f"seq-{i}" for i in range(300)]
    write_files(tmp_path / "in", nested_table(seqs, ids), 2, 64)
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out", "--workers", "2"])
    assert rc == 0, err
    assert "wrote 300 predictions in 2 parts" in err and "0 of 300 sequences refused" in err
    scored, refused, summary = read_output(tmp_path / "out")
    assert refused is None and (tmp_path / "out" / "_SUCCESS").exists()
    got = as_map(scored)
    ref = predictor.predict_proba(seqs)
    np.testing.assert_allclose([got[i] for i in ids], ref, atol=1e-6, rtol=0)
    labels = dict(zip(scored.column("id").to_pylist(), scored.column("label").to_pylist()))
    assert [labels[i] for i in ids] == list(predictor.predict(seqs))
    assert summary["rows_in"] == summary["rows_out"] == 300 and summary["rows_refused"] == 0
    assert summary["engine"] == "local" and summary["model_sha256"] == predictor.manifest["model"]["sha256"]
    for key in ("wall_seconds", "engine_start_seconds", "workers", "parts"):
        assert key in summary


def test_long_layout_any_order_equals_predict_proba(tmp_path, predictor):
    seqs = ragged(120, 8, lo=2, hi=30, seed=2)
    ids = list(range(1000, 1120))
    # each file holds whole sequences; inside a file the rows are shuffled
    (tmp_path / "in").mkdir()
    pq.write_table(long_table(seqs[:70], ids[:70], shuffle_seed=3), tmp_path / "in" / "a.parquet")
    pq.write_table(long_table(seqs[70:], ids[70:], shuffle_seed=4), tmp_path / "in" / "b.parquet")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out", "--layout", "long"])
    assert rc == 0, err
    scored, refused, summary = read_output(tmp_path / "out")
    got = as_map(scored)
    np.testing.assert_allclose([got[i] for i in ids], predictor.predict_proba(seqs), atol=1e-6, rtol=0)
    assert summary["layout"] == "long" and summary["id_column"] == "sample_id" and summary["parts"] == 2


def test_big_file_is_cut_into_row_group_fragments(tmp_path, predictor, fixed_input):
    X, folder = fixed_input
    s = run_job(str(EXPORTED), str(folder), str(tmp_path / "out"), workers=2, rows_per_part=256)
    assert s["parts"] == 3  # each 200-row file is one fragment
    one = tmp_path / "one.parquet"
    pq.write_table(nested_table(list(X), np.arange(600)), one, row_group_size=100)
    s = run_job(str(EXPORTED), str(one), str(tmp_path / "out1"), workers=2, rows_per_part=250)
    assert s["parts"] == 2 and s["rows_out"] == 600  # 6 row groups of 100: cut once 250 rows are gathered
    got = as_map(read_output(tmp_path / "out1")[0])
    np.testing.assert_allclose([got[i] for i in range(600)], predictor.predict_proba(X), atol=1e-6, rtol=0)
    plan = json.loads((tmp_path / "out1" / "_plan.json").read_text())
    assert [f["row_groups"] for f in plan["fragments"]] == [[0, 3], [3, 6]]


def test_bad_rows_go_to_errors_with_reasons_and_exit_non_zero(tmp_path, predictor):
    X = np.random.default_rng(0).standard_normal((8, 10, 8)).astype(np.float32)
    x = [s.tolist() for s in X]
    x[1] = [r[:7] for r in x[1]]          # wrong feature count
    x[3][4][2] = float("nan")             # NaN
    x[5] = []                             # empty sequence
    x[6] = None                           # null
    t = pa.table({"key": [f"k{i}" for i in range(8)], "x": pa.array(x, type=pa.list_(pa.list_(pa.float32())))})
    (tmp_path / "in").mkdir()
    pq.write_table(t, tmp_path / "in" / "a.parquet")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out", "--id-column", "key"])
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("gru-predict: error: 4 of 8 sequences could not be scored")
    assert "Traceback" not in err
    scored, refused, summary = read_output(tmp_path / "out")
    reasons = dict(zip(refused.column("id").to_pylist(), refused.column("reason").to_pylist()))
    assert reasons == {"k1": "expected 8 features per timestep, got 7 at timestep 0",
                       "k3": "expected finite values, got NaN at timestep 4, feature 2",
                       "k5": "empty sequence: expected at least 1 timestep, got 0",
                       "k6": "x is null: expected a list of timesteps"}
    good = [0, 2, 4, 7]
    got = as_map(scored)
    assert sorted(got) == [f"k{i}" for i in good]  # nothing dropped, nothing twice
    np.testing.assert_allclose([got[f"k{i}"] for i in good], predictor.predict_proba(X[good]), atol=1e-6, rtol=0)
    assert (summary["rows_in"], summary["rows_out"], summary["rows_refused"]) == (8, 4, 4)
    assert set(refused.column_names) == {"id", "reason", "source"}


def test_rerun_refused_without_resume_and_resume_skips_complete_parts(tmp_path, fixed_input, predictor):
    X, folder = fixed_input
    out = tmp_path / "out"
    rc, _, err = run_cli([EXPORTED, folder, "--output", out])
    assert rc == 0, err
    rc, _, err = run_cli([EXPORTED, folder, "--output", out])
    assert rc == 2 and "already holds a finished job: pass --resume" in err
    # an interrupted job: one part and the success marker are missing
    os.unlink(out / "part-00001.parquet")
    os.unlink(out / "_SUCCESS")
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    rc, _, err = run_cli([EXPORTED, folder, "--output", out])
    assert rc == 2 and "already holds an unfinished job" in err
    rc, _, err = run_cli([EXPORTED, folder, "--output", out, "--resume"])
    assert rc == 0, err
    assert "2 finished parts kept" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet") if p.name in kept} == kept
    scored, _, summary = read_output(out)
    assert summary["parts_done_now"] == 1 and summary["parts_skipped"] == 2 and summary["resumed"]
    got = as_map(scored)
    np.testing.assert_allclose([got[i] for i in range(600)], predictor.predict_proba(X), atol=1e-6, rtol=0)


def test_resume_refuses_a_changed_input_or_settings(tmp_path, predictor):
    seqs = ragged(20, 8, seed=9)
    write_files(tmp_path / "in", nested_table(seqs, list(range(20))), 2)
    out = tmp_path / "out"
    assert run_cli([EXPORTED, tmp_path / "in", "--output", out])[0] == 0
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", out, "--resume", "--id-column", "x"])
    assert rc == 2 and "--resume: the id column changed since the job started ('id' then, 'x' now)" in err
    write_files(tmp_path / "in", nested_table(seqs[:15], list(range(15))), 2)
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", out, "--resume"])
    assert rc == 2 and "changed since the job started" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "other"])
    assert rc == 2 and "was not written by gru-predict" in err
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "in" / "out"])
    assert rc == 2 and "overlaps the input" in err


def test_repeated_ids_never_come_out_twice(tmp_path, predictor):
    seqs = ragged(6, 8, seed=4)
    (tmp_path / "in").mkdir()
    pq.write_table(nested_table(seqs, [1, 2, 2, 3, 4, 5]), tmp_path / "in" / "a.parquet")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out"])
    assert rc == 2 and "2 of 6 sequences could not be scored" in err
    scored, refused, _ = read_output(tmp_path / "out")
    assert sorted(as_map(scored)) == [1, 3, 4, 5]
    assert refused.column("id").to_pylist() == [2, 2]
    assert set(refused.column("reason").to_pylist()) == {"id appears 2 times in the input: expected unique ids"}
    # the same id in two files (long layout: a sample's rows split over files) stops the job
    pq.write_table(long_table(seqs[:2], [7, 8]), tmp_path / "in" / "a.parquet")
    pq.write_table(long_table(seqs[2:4], [8, 9]), tmp_path / "in" / "b.parquet")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out2"])
    assert rc == 2 and "id 8 appears more than once in the output" in err
    assert not (tmp_path / "out2" / "_SUCCESS").exists()


def test_bad_invocations_are_one_line_errors(tmp_path, fixed_input):
    _, folder = fixed_input
    cases = [
        ([EXPORTED, folder], "expected --output DIR"),
        ([EXPORTED, folder, "--output", tmp_path / "o1", "--id-column", "nope"], "expected an id column 'nope'"),
        ([EXPORTED, folder, "--output", tmp_path / "o2", "--layout", "long"], "expected an id column 'sample_id'"),
        ([EXPORTED, folder, "--output", tmp_path / "o2", "--layout", "long", "--id-column", "id"],
         "long layout: expected columns id, t, <features...>"),
        ([EXPORTED, folder, "--output", tmp_path / "o3", "--workers", "0"], "--workers: expected a positive integer"),
        ([EXPORTED, tmp_path / "none.parquet", "--output", tmp_path / "o4"], "input not found"),
        ([EXPORTED, tmp_path / "empty", "--output", tmp_path / "o5"], "no Parquet files"),
        ([EXPORTED, EXPORTED / "reference.npz", "--engine", "ray"], "--engine applies to Parquet input"),
        ([EXPORTED, "-", "--stream", "--resume"], "--resume cannot be used with --stream"),
    ]
    (tmp_path / "empty").mkdir()
    for args, expected in cases:
        rc, out, err = run_cli(args)
        assert rc == 2, (args, err)
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)


def test_model_with_other_feature_count_refuses_long_input(tmp_path, tiny_model_dir):
    seqs = ragged(3, 8)
    write_files(tmp_path / "in", long_table(seqs, [1, 2, 3]), 1)
    with pytest.raises(InputError, match="expected 3 feature columns, got 8"):
        run_job(str(tiny_model_dir), str(tmp_path / "in"), str(tmp_path / "out"))


def test_killed_job_completes_with_resume(tmp_path, predictor):
    """Fault test: SIGKILL gru-predict once its first part is written; --resume completes the job
    from the parts on disk; every id comes out exactly once."""
    X = np.random.default_rng(3).standard_normal((12000, 50, 8)).astype(np.float32)
    folder = write_files(tmp_path / "in", nested_table(list(X), np.arange(12000)), 12, 500)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.runtime.cli", str(EXPORTED), str(folder), "--output",
                             str(out), "--workers", "2"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("part-*.parquet")) and proc.poll() is None:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the job: gru-predict and its worker processes
    proc.wait(30)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert 1 <= len(kept) < 12 and not (out / "_SUCCESS").exists(), f"not killed mid-job: {sorted(kept)}"
    rc, _, err = run_cli([EXPORTED, folder, "--output", out, "--resume"])
    assert rc == 0, err
    scored, _, summary = read_output(out)
    assert summary["parts_skipped"] == len(kept) and summary["parts_done_now"] == 12 - len(kept)
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept  # finished parts were not redone
    assert not list(out.glob(".*.tmp"))  # a killed writer's temporary file is cleaned at commit
    got = as_map(scored)
    assert sorted(got) == list(range(12000))
    np.testing.assert_allclose([got[i] for i in range(12000)], predictor.predict_proba(X), atol=1e-6, rtol=0)


def test_files_with_different_id_types_are_refused_before_any_work(tmp_path):
    seqs = ragged(4, 8, seed=2)
    (tmp_path / "in").mkdir()
    pq.write_table(nested_table(seqs[:2], [1, 2]), tmp_path / "in" / "a.parquet")
    pq.write_table(nested_table(seqs[2:], ["3", "4"]), tmp_path / "in" / "b.parquet")
    rc, _, err = run_cli([EXPORTED, tmp_path / "in", "--output", tmp_path / "out"])
    assert rc == 2 and "expected the id column 'id' of type int64 (as in" in err and "got string" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine, module, extra", [("ray", "ray", "ray"), ("spark", "pyspark", "spark")])
def test_missing_engine_package_is_a_one_line_error_with_the_install_hint(tmp_path, fixed_input, engine, module,
                                                                          extra):
    _, folder = fixed_input
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from pipeline.runtime.cli import main\n"
            f"sys.exit(main([{str(EXPORTED)!r}, {str(folder)!r}, '--output', {str(tmp_path / 'out')!r}, "
            f"'--engine', {engine!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert f"--engine {engine} needs" in res.stderr and f"pip install 'gru-onnx-pipeline[{extra}]'" in res.stderr
