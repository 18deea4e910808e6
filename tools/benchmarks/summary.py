"""Benchmark results -> ratios, target checks, markdown tables and the throughput plot.

Owns: "ours / best peer" (a peer is every engine other than ours; all run fp32), "ours / matmul
roof" and per-engine roof fractions, the issue's targets as PASS/MISS with their numbers, the
markdown, and bench.png (samples/s vs batch size, log-log, dashed line at the matmul roof).
Imports: numpy; matplotlib (Agg, optional: the plot is skipped with a note if it is missing).
Reads: nothing. Writes: the plot file it is given (tools/bench.py writes the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from benchmarks.throughput import OURS, OURS_UNFUSED, OURS_UNROLLED, BenchRow

__all__ = ["summarize", "target_checks", "format_markdown", "plot_throughput"]

# The targets (issue 17, the fused GRU kernel; before it: 0.75x, 1.2x and 50 %).
B1_LATENCY_MAX = 0.25          # ours / best peer, seconds per call at batch 1
THROUGHPUT_MIN = 1.5           # ours / best peer (every peer runs fp32), samples/s at B = 64, 1024, 8192
THROUGHPUT_BATCHES = (64, 1024, 8192)
ROOF_MIN, ROOF_FROM_BATCH = 0.7, 1024
OUR_FORMS = {"unrolled": OURS_UNROLLED, "unfused": OURS_UNFUSED}  # our other forms, side by side; never peers
COLD_MAX_S, COLD_MIN_SPEEDUP = 0.35, 8.0
RSS_MAX_MB = 80.0


def summarize(rows: list[BenchRow], roof_samples_per_s: float) -> dict:
    """Per batch: ours, the best peer, their ratios; per engine: fraction of the matmul roof."""
    get = {(r.engine, r.batch): r for r in rows}
    engines = list(dict.fromkeys(r.engine for r in rows))
    per_batch = {}
    for b in sorted({r.batch for r in rows}):
        ours = get[OURS, b]
        peers = [get[e, b] for e in engines if e != OURS and e not in OUR_FORMS.values() and (e, b) in get]
        best = max(peers, key=lambda r: r.samples_per_s)
        per_batch[b] = {
            "ours_samples_per_s": ours.samples_per_s, "ours_latency_ms": ours.latency_ms,
            "best_peer": best.engine, "best_peer_samples_per_s": best.samples_per_s,
            "best_peer_latency_ms": best.latency_ms,
            "ours_over_best_peer": ours.samples_per_s / best.samples_per_s,
            "ours_latency_over_best_peer": ours.latency_ms / best.latency_ms,
            "ours_roof_fraction": ours.samples_per_s / roof_samples_per_s,
        }
        for key, engine in OUR_FORMS.items():
            row = get.get((engine, b))
            if row is not None:
                per_batch[b].update({
                    f"{key}_samples_per_s": row.samples_per_s, f"{key}_latency_ms": row.latency_ms,
                    f"{key}_over_best_peer": row.samples_per_s / best.samples_per_s,
                    f"{key}_latency_over_best_peer": row.latency_ms / best.latency_ms,
                    f"{key}_roof_fraction": row.samples_per_s / roof_samples_per_s,
                    f"ours_over_{key}": ours.samples_per_s / row.samples_per_s,
                })
    roof = {e: {r.batch: r.samples_per_s / roof_samples_per_s for r in rows if r.engine == e} for e in engines}
    return {"per_batch": per_batch, "roof_fraction": roof}


def _check(target: str, ok: Optional[bool], value: str) -> dict:
    return {"target": target, "status": "n/a" if ok is None else ("PASS" if ok else "MISS"), "value": value}


def target_checks(summary: dict, cold: Optional[dict]) -> list[dict]:
    """The issue's targets; a target whose batch size (or cold-start run) is missing is n/a."""
    pb = summary["per_batch"]
    out = []
    if 1 in pb:
        s = pb[1]
        out.append(_check(f"B=1 latency: ours <= {B1_LATENCY_MAX}x best peer",
                          s["ours_latency_over_best_peer"] <= B1_LATENCY_MAX,
                          f"{s['ours_latency_over_best_peer']:.2f}x ({s['ours_latency_ms']:.3f} ms vs "
                          f"{s['best_peer']} {s['best_peer_latency_ms']:.3f} ms)"))
    else:
        out.append(_check(f"B=1 latency: ours <= {B1_LATENCY_MAX}x best peer", None, "batch 1 not run"))
    for key, who in (("ours", "ours"), ("unfused", "ours unfused"), ("unrolled", "ours graph='unrolled'")):
        if key != "ours" and not any(f"{key}_samples_per_s" in s for s in pb.values()):
            continue
        for b in THROUGHPUT_BATCHES:
            name = f"B={b} throughput: {who} >= {THROUGHPUT_MIN}x best peer"
            if b not in pb:
                out.append(_check(name, None, f"batch {b} not run"))
                continue
            s = pb[b]
            out.append(_check(name, s[f"{key}_over_best_peer"] >= THROUGHPUT_MIN,
                              f"{s[f'{key}_over_best_peer']:.2f}x ({s[f'{key}_samples_per_s']:,.0f} vs "
                              f"{s['best_peer']} {s['best_peer_samples_per_s']:,.0f} samples/s)"))
        big = [b for b in pb if b >= ROOF_FROM_BATCH]
        for b in big or [ROOF_FROM_BATCH]:
            name = f"B={b}: {who} >= {ROOF_MIN:.0%} of matmul roof"
            out.append(_check(name, pb[b][f"{key}_roof_fraction"] >= ROOF_MIN, f"{pb[b][f'{key}_roof_fraction']:.0%}")
                       if b in pb else _check(name, None, f"no batch >= {ROOF_FROM_BATCH} run"))
    if cold:
        o, t = cold["ours"], cold["tensorflow"]
        out.append(_check(f"cold start <= {COLD_MAX_S} s", o["seconds"] <= COLD_MAX_S, f"{o['seconds']:.3f} s"))
        out.append(_check(f"cold start >= {COLD_MIN_SPEEDUP:.0f}x faster than TF",
                          cold["tf_over_ours"] >= COLD_MIN_SPEEDUP,
                          f"{cold['tf_over_ours']:.1f}x ({t['seconds']:.2f} s vs {o['seconds']:.3f} s)"))
        out.append(_check(f"runtime peak RSS <= {RSS_MAX_MB:.0f} MB", o["peak_rss_mb"] <= RSS_MAX_MB,
                          f"{o['peak_rss_mb']:.1f} MB"))
    else:
        for name in (f"cold start <= {COLD_MAX_S} s", f"cold start >= {COLD_MIN_SPEEDUP:.0f}x faster than TF",
                     f"runtime peak RSS <= {RSS_MAX_MB:.0f} MB"):
            out.append(_check(name, None, "cold start not run"))
    return out


def _table(header: list[str], body: list[list[str]], numeric: bool = True) -> str:
    """Markdown table; the first column left-aligned, the others right-aligned when ``numeric``."""
    lines = ["| " + " | ".join(header) + " |", "|---" + ("|---:" if numeric else "|---") * (len(header) - 1) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def format_markdown(rows: list[BenchRow], roof_gflops: float, roof_samples_per_s: float, summary: dict,
                    peers_ran: list[str], peers_skipped: dict[str, str], checks: list[dict],
                    cold: Optional[dict] = None, sizes: Optional[dict] = None, plot_note: str = "") -> str:
    batches = sorted({r.batch for r in rows})
    engines = list(dict.fromkeys(r.engine for r in rows))
    get = {(r.engine, r.batch): r for r in rows}
    pb = summary["per_batch"]
    cols = ["engine"] + [f"B={b}" for b in batches]
    md = [f"Peers that ran: {', '.join(peers_ran) or 'none'}."]
    md += [f"Peer skipped: {k}: {v}." for k, v in peers_skipped.items()]
    md += ["", f"fp32 matmul roof (numpy sgemm): {roof_gflops:.0f} GFLOP/s = {roof_samples_per_s:,.0f} samples/s "
               "for this model.", "", "### Throughput, samples/s (median of interleaved rounds)", ""]
    body = [[e] + [f"{get[e, b].samples_per_s:,.0f}" for b in batches] for e in engines]
    body.append(["ours / best peer"] + [f"{pb[b]['ours_over_best_peer']:.2f}x" for b in batches])
    for key, engine in OUR_FORMS.items():
        if all(f"{key}_over_best_peer" in pb[b] for b in batches):
            body.append([f"{engine} / best peer"] + [f"{pb[b][f'{key}_over_best_peer']:.2f}x" for b in batches])
    if all("ours_over_unfused" in pb[b] for b in batches):
        body.append(["ours / ours unfused (fused kernel gain)"] + [f"{pb[b]['ours_over_unfused']:.2f}x" for b in batches])
    body.append(["best peer"] + [pb[b]["best_peer"].split(",")[0] for b in batches])
    body.append(["ours / matmul roof"] + [f"{pb[b]['ours_roof_fraction']:.0%}" for b in batches])
    md += [_table(cols, body), "", "### Latency per call, ms (whole batch)", ""]
    body = [[e] + [f"{get[e, b].latency_ms:.3f}" for b in batches] for e in engines]
    body.append(["ours / best peer"] + [f"{pb[b]['ours_latency_over_best_peer']:.2f}x" for b in batches])
    md += [_table(cols, body), "", "### Fraction of the matmul roof, and max |error| vs Keras", ""]
    body = [[e] + [f"{summary['roof_fraction'][e][b]:.0%} / {get[e, b].max_abs_err_vs_keras:.1e}" for b in batches]
            for e in engines]
    md += [_table(cols, body)]
    settings = [(r.engine, r.batch, r.setting) for r in rows if r.setting]
    if settings:
        md += ["", "### How the peers ran (fastest setting found per batch)", ""]
        md += [f"- {e}, B={b}: {s}" for e, b, s in settings]
    if cold:
        o, t = cold["ours"], cold["tensorflow"]
        md += ["", f"### Cold start: a new process predicting one sample (median of {cold['runs']}, interleaved)", "",
               _table(["", f"ours (`{cold['command_ours']}`)", "TensorFlow (`keras.saving.load_model` + `predict`)"],
                      [["wall time, s", f"{o['seconds']:.3f}", f"{t['seconds']:.3f}"],
                       ["peak RSS, MB", f"{o['peak_rss_mb']:.1f}", f"{t['peak_rss_mb']:.1f}"]]),
               "", f"TensorFlow / ours: {cold['tf_over_ours']:.1f}x slower to start; "
                   f"the two probabilities differ by {cold['abs_diff_probability']:.1e}."]
    if sizes:
        md += ["", "### Installed size (packages in this environment, files on disk)", "",
               _table(["environment", "MB", "packages", "largest (MB)"],
                      [[f"{k} ({'[project] dependencies' if k == 'runtime' else 'runtime + build extra'})",
                        f"{sizes[k]['mb']:,.0f}", str(sizes[k]["packages"]),
                        ", ".join(f"{n} {v:g}" for n, v in sizes[k]["largest_mb"].items())]
                       for k in ("runtime", "build")], numeric=False),
               "", f"build / runtime: {sizes['build_over_runtime']:.1f}x."]
    md += ["", "### Targets", "", _table(["target", "status", "value"],
                                         [[c["target"], c["status"], c["value"]] for c in checks], numeric=False)]
    if plot_note:
        md += ["", plot_note]
    return "\n".join(md)


def plot_throughput(rows: list[BenchRow], roof_samples_per_s: float, path: Path) -> Optional[str]:
    """Write the throughput plot; returns None, or a note saying why it was skipped."""
    try:
        import matplotlib
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for e in dict.fromkeys(r.engine for r in rows):
        pts = sorted((r.batch, r.samples_per_s) for r in rows if r.engine == e)
        ax.plot(*zip(*pts), marker="o", lw=2.5 if e == OURS else 1.2, label=e)
    ax.axhline(roof_samples_per_s, ls="--", color="k", lw=1, label="fp32 matmul roof")
    ax.set_xscale("log")
    ax.set_yscale("log")
    batches = sorted({r.batch for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples / s")
    ax.set_title("Batch inference throughput (median of interleaved rounds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
