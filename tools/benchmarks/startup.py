"""Cold start, peak memory and installed size: our runtime against a TensorFlow deployment.

Owns: timing NEW processes that predict one sample, ours (the ``gru-predict`` console script of
the current environment) against TensorFlow (``python -c`` importing keras, loading the Keras
rebuilt saved as ``.keras`` and calling ``predict``), interleaved, median wall time and each child's
peak RSS (``ru_maxrss`` from ``os.wait4`` in a tiny launcher process, KiB on Linux). One untimed
run of each comes first, so both start from a warm page cache and compiled .pyc files ("cold" =
new process, not cold disk). Also the on-disk size of the runtime-only environment (closure of
``[project].dependencies``) against the build environment (that plus the closure of the
``build`` extra), from the installed distributions' RECORD files (no network).
Imports: numpy, importlib.metadata, packaging, keras (only to save the rebuilt).
Reads: an exported folder, pyproject.toml, the current environment's distribution metadata.
Writes: a one-sample .npy and the .keras rebuilt into a temp dir it removes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["cold_start", "install_sizes"]

TF_CHILD = ("import sys, numpy as np, keras, pipeline.training.model; m = keras.saving.load_model(sys.argv[1]); "
            "print(float(m.predict(np.load(sys.argv[2]), verbose=0).reshape(-1)[0]))")


# ru_maxrss of a child forked from this (large, TF-loaded) process starts at OUR peak RSS: Linux
# copies the memory high-water mark into the child and keeps it across exec. So a tiny launcher
# (python -I -S, a few MB) spawns the measured process and reports its wall time and rusage.
LAUNCHER = ("import os, sys, time\n"
            "t = time.perf_counter()\n"
            "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "wall = time.perf_counter() - t\n"
            "open(sys.argv[1], 'w').write(f'{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n")


def _run_child(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS KiB, stdout) of one new process; a failure raises with its stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # an installed package has its .pyc files (pip compiles them); `make` sets this variable, which
    # would make every run of an editable install recompile our modules. The untimed run writes them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        stats = cwd / "child-stats.txt"
        stats.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, str(stats), *cmd], stdout=out, stderr=err,
                       stdin=subprocess.DEVNULL, cwd=cwd, env=env, check=False)
        out.seek(0), err.seek(0)
        text, errs = out.read(), err.read()
    try:
        wall, rss, code = stats.read_text().split()
    except (OSError, ValueError):
        raise RuntimeError(f"cold-start launcher failed for {cmd[0]}: {errs.strip()[-800:]}") from None
    if int(code) != 0:
        raise RuntimeError(f"{cmd[0]} exited {code}: {errs.strip()[-800:]}")
    return float(wall), int(rss), text


def _ours_command(model_dir: Path, npy: Path) -> list[str]:
    script = Path(sys.executable).parent / "gru-predict"
    if script.exists():
        return [str(script), str(model_dir), str(npy)]
    return [sys.executable, "-m", "pipeline.runtime", str(model_dir), str(npy)]  # not installed as a script


def cold_start(model_dir: Path, rebuilt, runs: int = 5, warmup: bool = True,
               log: Callable[[str], None] = print) -> dict:
    """Median wall time and peak RSS of a new process predicting one sample: ours vs TensorFlow.

    Args:
        rebuilt: ``(keras_model, predictor)`` from ``bench.keras_rebuild(model_dir)``.
        runs: timed runs of each, interleaved.
        warmup: one untimed run of each first (page cache, .pyc files); off for smoke tests.
    """
    from pipeline.preprocessing import apply_preprocessing

    model, pred = rebuilt
    T = int(pred.manifest.get("timesteps_trained") or 50)
    X = np.random.default_rng(1).standard_normal((1, T, pred.n_features)).astype(np.float32)
    model_dir = Path(model_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "one_raw.npy", X)  # gru-predict reads raw features and scales them itself
        np.save(tmp / "one_scaled.npy", apply_preprocessing(X, pred.manifest["preprocessing"]))
        model.save(tmp / "rebuilt.keras")
        cmds = {"ours": _ours_command(model_dir, tmp / "one_raw.npy"),
                "tensorflow": [sys.executable, "-c", TF_CHILD, str(tmp / "rebuilt.keras"), str(tmp / "one_scaled.npy")]}
        res: dict[str, dict[str, list]] = {k: {"seconds": [], "rss_kib": []} for k in cmds}
        outputs = {}
        for i in range(0 if warmup else 1, runs + 1):
            for name, cmd in cmds.items():
                wall, rss, text = _run_child(cmd, tmp)
                outputs[name] = text
                if i:  # run 0 warms the page cache
                    res[name]["seconds"].append(wall)
                    res[name]["rss_kib"].append(rss)
                    log(f"  cold start {name:10s} run {i}: {wall:.3f} s, peak RSS {rss / 1024:.0f} MiB")
    p_ours = float(outputs["ours"].strip().splitlines()[1].split(",")[1])  # CSV id,probability,label
    p_tf = float(outputs["tensorflow"].strip().splitlines()[-1])
    shown = [Path(cmds["ours"][0]).name] + cmds["ours"][1:-2] + ["MODEL_DIR", "one.npy"]
    out = {"runs": runs, "warmup": warmup, "command_ours": " ".join(shown), "abs_diff_probability": abs(p_ours - p_tf)}
    for name, r in res.items():
        out[name] = {"seconds": float(np.median(r["seconds"])), "all_seconds": r["seconds"],
                     "peak_rss_mb": float(np.median(r["rss_kib"])) * 1024 / 1e6, "peak_rss_kib": r["rss_kib"]}
    out["tf_over_ours"] = out["tensorflow"]["seconds"] / out["ours"]["seconds"]
    return out


# ---------------------------------------------------------------------------------- install size
def _closure(requirements: list[str]) -> tuple[dict, list[str]]:
    """{canonical name: Distribution} reachable from ``requirements`` (markers and extras honoured)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def wanted(req, extras) -> bool:
        return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)

    found: dict[str, tuple] = {}
    missing: set[str] = set()
    stack = [r for r in map(Requirement, requirements) if wanted(r, {""})]
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        try:
            dist = found[name][0] if name in found else metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.add(req.name)
            continue
        done = found.setdefault(name, (dist, set()))[1]
        new = ({""} | set(req.extras)) - done
        if not new:
            continue
        done |= new
        stack.extend(r for r in map(Requirement, dist.requires or []) if wanted(r, new))
    return {k: v[0] for k, v in found.items()}, sorted(missing)


def _sizes(dists: dict) -> dict[str, int]:
    seen: set[str] = set()
    sizes = {}
    for name, dist in dists.items():
        total = 0
        for f in dist.files or []:
            p = os.path.realpath(f.locate())
            if p not in seen and os.path.isfile(p):
                seen.add(p)
                total += os.path.getsize(p)
        sizes[name] = total
    return sizes


def install_sizes(pyproject: Path) -> dict:
    """On-disk MB of the runtime-only environment vs the build environment (installed packages)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    project = tomllib.loads(Path(pyproject).read_text())["project"]
    runtime = list(project.get("dependencies", []))
    build = runtime + list(project.get("optional-dependencies", {}).get("build", []))
    out = {}
    for env, reqs in (("runtime", runtime), ("build", build)):
        dists, missing = _closure(reqs)
        sizes = _sizes(dists)
        out[env] = {"mb": sum(sizes.values()) / 1e6, "packages": len(sizes), "not_installed": missing,
                    "largest_mb": {k: round(v / 1e6, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]}}
    out["build_over_runtime"] = out["build"]["mb"] / out["runtime"]["mb"]
    return out
