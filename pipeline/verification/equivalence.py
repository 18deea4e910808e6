"""Equivalence verification: Keras vs onnxruntime through the real runtime.

Owns: the verification inputs (stress families around a test split, or families drawn from a
user's sample), the per-family error table and the pass/fail decision.
Layer: verification. Imports: numpy, pipeline.datafiles, pipeline.preprocessing, pipeline.settings. It runs both sides through the
functions it is given (the caller passes Keras and the runtime's ``Predictor.predict_proba``).
Reads and writes nothing; the caller stores the results in the manifest.

Each family feeds the *same raw inputs* to both sides: the runtime scales them itself, Keras gets
``apply_preprocessing`` of them (the function the runtime uses). A family fails when
max |p_keras - p_onnx| > atol or any predicted label differs. Every failure is collected, then
``VerificationError`` reports all of them with the largest difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np

from pipeline.datafiles import SequenceData
from pipeline.decision import decide
from pipeline.errors import VerificationError
from pipeline.preprocessing import apply_preprocessing
from pipeline.settings import VerifyConfig

__all__ = ["Family", "FamilyResult", "stress_families", "sample_families", "verify_equivalence", "format_table",
           "results_to_manifest", "raw_from_scaled"]


@dataclass
class Family:
    """One group of raw inputs to compare on: X (N, T, F) raw, lengths (N,) or None."""

    name: str
    X: np.ndarray
    lengths: Optional[np.ndarray] = None


@dataclass
class FamilyResult:
    """One family's comparison: errors over every probability column, decision flips, the worst class column."""

    name: str
    count: int
    max_abs: float
    mean_abs: float
    label_mismatches: int
    passed: bool
    worst_class: Optional[int] = None  # the column of max_abs, for (N, k) probabilities


def raw_from_scaled(Z: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    """Raw features whose scaling is about Z (N, T, F): Z * std + mean in float32 (exact only up to rounding)."""
    if prep.get("type") != "standardize":
        return Z.astype(np.float32)
    mean = np.asarray(prep["mean"], np.float32)
    std = np.asarray(prep["std"], np.float32)
    return (Z * std + mean).astype(np.float32)


def stress_families(test: SequenceData, prep: dict[str, Any], sizes: VerifyConfig, seed: int,
                    variable_length: bool) -> list[Family]:
    """The test split plus synthetic families; values "after scaling" are mapped back to raw.

    ``sizes``: the family sizes (``n_random``, ``odd_batch``, ``large_batch``). ``variable_length``: the
    model is masked, so families mix lengths (right-padded rows).
    """
    n_random, odd_batch, large_batch = sizes.n_random, sizes.odd_batch, sizes.large_batch
    rng = np.random.default_rng(seed + 1)
    T, F = test.X.shape[1], test.X.shape[2]
    test_lengths = test.lengths if variable_length else None

    def lengths_for(n: int) -> Optional[np.ndarray]:
        return rng.integers(max(1, T // 4), T + 1, size=n) if variable_length else None

    def scaled(name: str, Z: np.ndarray, lengths=None) -> Family:
        return Family(name, raw_from_scaled(Z, prep), lengths)

    big = rng.choice(np.float32([-100.0, 100.0]), size=(n_random, T, F)) * rng.uniform(0.5, 1.0, (n_random, T, F))
    fams = [
        Family("test split", test.X, test_lengths),
        # In a masked model an all-zero scaled step is padding, so that family sits just off zero.
        scaled("near-zero (scaled 1e-3)" if variable_length else "zeros (scaled)",
               np.full((16, T, F), 1e-3 if variable_length else 0.0, np.float32), lengths_for(16)),
        scaled("constant sequences", np.repeat(rng.normal(0, 2, (n_random, 1, F)), T, axis=1).astype(np.float32), lengths_for(n_random)),
        scaled("saturating +-100", big.astype(np.float32), lengths_for(n_random)),
        scaled("random normal", rng.standard_normal((n_random, T, F)).astype(np.float32), lengths_for(n_random)),
        scaled("batch of 1", rng.standard_normal((1, T, F)).astype(np.float32), lengths_for(1)),
        scaled(f"odd batch ({odd_batch})", rng.standard_normal((odd_batch, T, F)).astype(np.float32), lengths_for(odd_batch)),
        scaled(f"large batch ({large_batch})", rng.standard_normal((large_batch, T, F)).astype(np.float32), lengths_for(large_batch)),
    ]
    # Raw zeros are a family of their own for models without masking.
    if not variable_length:
        fams.insert(1, Family("zeros (raw)", np.zeros((16, T, F), np.float32)))
    return fams


def sample_families(X: np.ndarray, lengths: Optional[np.ndarray], source, sizes: VerifyConfig,
                    seed: int) -> list[Family]:
    """Families derived from a user's sample, for a model whose inputs are its own (no outside scaling).

    ``source`` describes the model's input (a pipeline.keras_source.describe.SourceModel: its
    ``input_kind``, ``vocabulary_size``, ``timesteps`` (None: a dynamic time axis) and ``masking``);
    ``sizes`` gives ``n_random``, ``odd_batch`` and ``large_batch``.

    X is the sample: (N, T, F) float features or (N, T) token ids. Synthetic rows stay inside what
    the sample shows: per-feature values uniform in the sample's [min, max] (ids uniform in
    [1, vocabulary_size)); masked models get right-padded rows of random lengths; a dynamic time
    axis is also exercised at T // 2 and 2 T. Batch sizes: 1, ``odd_batch``, ``n_random``, ``large_batch``.
    """
    tokens, vocabulary_size = source.input_kind == "tokens", source.vocabulary_size
    dynamic_time, masked = source.timesteps is None, source.masking
    n_random, odd_batch, large_batch = sizes.n_random, sizes.odd_batch, sizes.large_batch
    rng = np.random.default_rng(seed + 1)
    T = X.shape[1]
    real = np.ones(X.shape[:2], bool) if lengths is None else np.arange(T)[None, :] < lengths[:, None]  # (N, T)

    def draw(n: int, t: int) -> np.ndarray:
        if tokens:
            return rng.integers(1, max(2, int(vocabulary_size)), size=(n, t)).astype(np.int64)  # (n, t) ids
        values = X[real]  # (real steps, F)
        lo, hi = values.min(axis=0), values.max(axis=0)
        return rng.uniform(lo, hi, size=(n, t, X.shape[2])).astype(np.float32)  # (n, t, F)

    def family(name: str, n: int, t: int) -> Family:
        Z = draw(n, t)
        if not masked:
            return Family(name, Z)
        lens = rng.integers(max(1, t // 4), t + 1, size=n)
        lens[0] = t
        Z[np.arange(t)[None, :] >= lens[:, None]] = 0  # right padding
        return Family(name, Z, lens)

    fams = [Family("sample", X, lengths if masked else None)]
    fams += [family("batch of 1", 1, T), family(f"odd batch ({odd_batch})", odd_batch, T),
             family(f"random in the sample's range ({n_random})", n_random, T),
             family(f"large batch ({large_batch})", large_batch, T)]
    if dynamic_time:
        fams += [family(f"length {t}", odd_batch, t) for t in sorted({max(1, T // 2), 2 * T})]
    return fams


def verify_equivalence(
    keras_fn: Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray],
    onnx_fn: Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray],
    families: list[Family],
    prep: dict[str, Any],
    atol: float,
    decision: dict[str, Any],
    errors_out: Optional[dict[str, np.ndarray]] = None,
    exact_fn: Optional[Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]] = None,
) -> list[FamilyResult]:
    """Compare Keras and the runtime on every family, every probability column.

    Args:
        keras_fn: (scaled (N, T, F), lengths or None) -> Keras' probabilities, (N,) or (N, k).
        onnx_fn: (raw (N, T, F), lengths or None) -> the runtime's probabilities, same shape.
        families: inputs to compare on.
        prep: manifest preprocessing entry.
        atol: maximum allowed |p_keras - p_onnx| in any column.
        decision: the artifact's decision rule (pipeline.decision): flips are counted by it.
        errors_out: if given, filled with family name -> per-sample max |p_keras - p_onnx| (N,).
        exact_fn: optional float64 evaluation of the same model (same arguments as keras_fn); used
            only to explain a failure: how far each side is from the float64 result. The pass/fail
            rule stays |p_keras - p_onnx| <= atol.
    Returns:
        one FamilyResult per family.
    Raises:
        VerificationError: any family exceeds atol or has a decision flip.
    """
    results = []
    failed_inputs: dict[str, tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]] = {}
    for fam in families:
        p_onnx = np.asarray(onnx_fn(fam.X, fam.lengths), dtype=np.float64)
        scaled = apply_preprocessing(fam.X, prep, fam.lengths)  # (N, T, F)
        p_keras = np.asarray(keras_fn(scaled, fam.lengths), dtype=np.float64)
        if p_onnx.shape != p_keras.shape:
            raise VerificationError(f"family {fam.name!r}: ONNX returned shape {p_onnx.shape}, Keras {p_keras.shape}")
        cell_err = np.abs(p_keras - p_onnx)  # (N,) or (N, k)
        err = cell_err.reshape(len(cell_err), -1).max(axis=1) if cell_err.size else cell_err.reshape(-1)  # (N,)
        if errors_out is not None:
            errors_out[fam.name] = err
        flips = decide(p_keras, decision) != decide(p_onnx, decision)
        mism = int(flips.reshape(len(flips), -1).any(axis=1).sum())
        max_abs = float(err.max()) if err.size else 0.0
        worst_class = None
        if cell_err.ndim == 2 and cell_err.size:
            worst_class = int(np.unravel_index(np.argmax(cell_err), cell_err.shape)[1])
        passed = bool(max_abs <= atol and mism == 0 and np.isfinite(err).all())
        results.append(FamilyResult(fam.name, int(err.size), max_abs, float(err.mean()) if err.size else 0.0,
                                    mism, passed, worst_class))
        if not passed:
            failed_inputs[fam.name] = (scaled, fam.lengths, p_keras, p_onnx)
    failed = [r for r in results if not r.passed]
    if failed:
        raise VerificationError(_failure_message(results, failed, failed_inputs, atol, exact_fn))
    return results


def _failure_message(results: list[FamilyResult], failed: list[FamilyResult], inputs: dict, atol: float,
                     exact_fn) -> str:
    """Every failed family, the largest difference, and (with ``exact_fn``) the float64 diagnosis."""
    worst = max(results, key=lambda r: r.max_abs)
    detail = "; ".join(f"{r.name}: max {r.max_abs:.3g}" + (f" (class {r.worst_class})" if r.worst_class is not None
                                                            else "") + f", {r.label_mismatches} label mismatches"
                       for r in failed)
    diagnosis = ""
    if exact_fn is not None:
        notes = []
        for r in failed:
            scaled, lengths, pk, po = inputs[r.name]
            exact = np.asarray(exact_fn(scaled, lengths), dtype=np.float64)
            notes.append(f"{r.name}: Keras is {np.abs(pk - exact).max():.2g} and ONNX {np.abs(po - exact).max():.2g} "
                         "from a float64 evaluation of the same weights")
        diagnosis = ("; " + "; ".join(notes) + " (when both sides are that far from float64, the model is "
                     "ill-conditioned in float32 on these inputs, not wrongly exported; --atol sets the tolerance)")
    return (f"Keras and ONNX disagree (tolerance {atol:g}): {detail}; largest difference {worst.max_abs:.3g} "
            f"in {worst.name!r}{diagnosis}")


def format_table(results: list[FamilyResult], atol: float) -> str:
    """Markdown table of the per-family errors (with the worst class column for (N, k) probabilities)."""
    classes = any(r.worst_class is not None for r in results)
    lines = [
        f"| family | count | max abs err |{' worst class |' if classes else ''} mean abs err | label mismatches | "
        f"ok (atol {atol:g}) |",
        f"|---|---:|---:|{'---:|' if classes else ''}---:|---:|:---:|",
    ]
    for r in results:
        worst = f" {r.worst_class} |" if classes else ""
        lines.append(f"| {r.name} | {r.count} | {r.max_abs:.3g} |{worst} {r.mean_abs:.3g} | {r.label_mismatches} | "
                     f"{'yes' if r.passed else 'NO'} |")
    return "\n".join(lines)


def results_to_manifest(results: list[FamilyResult], atol: float) -> dict[str, Any]:
    return {
        "atol": atol,
        "passed": all(r.passed for r in results),
        "max_abs_error": max((r.max_abs for r in results), default=0.0),
        "families": [asdict(r) for r in results],
    }
