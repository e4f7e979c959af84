"""Renders a table: reproduced mean ± std and 95% CI over seeds beside the paper's figures, each row's contrast
with the baseline and its verdict (stats.py), Markdown + CSV + a PNG plot. Its inputs come from the store
(store.py), so it can be rebuilt without training (`make report TABLE=4`)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from scipy import stats

from ..identity import CODE_VERSION
from .invocation import Invocation
from .spec import Sweep, SweepError
from .stats import Contrast, analyse, contrast_name
from .store import RowResult


def ci95(xs: list[float]) -> tuple[float, float, float]:
    """(mean, std, half-width of the 95% t-interval); std and interval are nan for one value."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    s = statistics.stdev(xs)
    return m, s, stats.t.ppf(0.975, len(xs) - 1) * s / math.sqrt(len(xs))


def _fmt(m, s=None) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    txt = f"{m:.1f}"
    if s is not None and not math.isnan(s):
        txt += f" ± {s:.1f}"
    return txt


def analysis_of(sweep: Sweep, results: list[RowResult], boot: list[dict] | None = None) -> dict[str, Contrast]:
    """The table's decision on its key metric (``stats.analyse``): each row's contrast with the baseline, both
    variance components, the adjusted verdicts."""
    if not sweep.baseline:
        return {}
    key = sweep.metrics[0]
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    values = {r.row.label: r.values.get(key, {}) for r in results if r.status == "done" and r.values.get(key)}
    paper, figure = {}, {r.row.label: r.row.paper.get(key) for r in results}
    for r in results:
        pd, pb = figure[r.row.label], base.row.paper.get(key) if base else None
        paper[r.row.label] = pd - pb if pd is not None and pb is not None else None
    for a, b in sweep.contrasts:
        fa, fb = figure.get(a), figure.get(b)
        paper[contrast_name(a, b)] = fa - fb if fa is not None and fb is not None else None
    return analyse(values, sweep.baseline, sweep.design, paper, boot, sweep.contrasts)


NUMERIC = ("mean", "std", "ci_low", "ci_high", "delta", "delta_half", "delta_adj_half", "test_sd", "p_adj", "n")


def numeric_columns(sweep: Sweep, r: RowResult, c: Contrast | None) -> list[str]:
    """The key metric as numbers, for the CSV: mean, std, 95% interval, the contrast with its 95% and adjusted
    half-widths, the test-set component's sd, the adjusted p, seeds."""
    key = sweep.metrics[0]
    xs = list(r.values.get(key, {}).values())
    if not xs:
        return [""] * len(NUMERIC)
    m, s, h = ci95(xs)

    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    if c is None:
        return [num(m), num(s), num(m - h), num(m + h), "", "", "", "", "", str(len(xs))]
    test_sd = math.sqrt(c.var_test) if c.n_boot else None
    return [
        *(num(m), num(s), num(m - h), num(m + h), num(c.estimate), num(c.half95), num(c.half_adj), num(test_sd)),
        *(num(c.p_adj), str(len(xs))),
    ]


def render(
    sweep: Sweep, inv: Invocation, results: list[RowResult], header: dict, analysis: dict[str, Contrast]
) -> tuple[str, list[list[str]]]:
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    key = sweep.metrics[0]
    base_paper = base.row.paper.get(key) if base else None
    adj = sweep.design.adjust
    cols = (
        ["row"]
        + [f"paper {m}" for m in sweep.metrics]
        + [f"{m} (mean ± std)" for m in sweep.metrics]
        + [f"{key} 95% CI", f"Δ{key} ± 95%", "test-set sd", "adjusted interval", f"paper Δ{key}", "verdict"]
        + ["seeds", "runs", "status"]
    )
    table = []
    for r in results:
        cells = [r.row.label] + [f"{r.row.paper[m]:.1f}" if m in r.row.paper else "" for m in sweep.metrics]
        for m in sweep.metrics:
            xs = list(r.values.get(m, {}).values())
            cells.append(_fmt(*ci95(xs)[:2]) if xs else "")
        xs = list(r.values.get(key, {}).values())
        m_, _, h = ci95(xs) if xs else (None, None, None)
        cells.append(f"[{m_ - h:.1f}, {m_ + h:.1f}]" if xs and not math.isnan(h) else "")
        c = analysis.get(r.row.label) if r is not base else None
        if c is None:
            cells += ["", "", ""]
        else:
            cells.append(f"{c.estimate:+.1f}" + (f" ± {c.half95:.1f}" if math.isfinite(c.half95) else ""))
            cells.append(f"{math.sqrt(c.var_test):.1f}" if c.n_boot else "")
            cells.append(
                f"[{c.estimate - c.half_adj:+.1f}, {c.estimate + c.half_adj:+.1f}]" if math.isfinite(c.half_adj) else ""
            )
        pd = r.row.paper.get(key)
        cells.append(
            f"{pd - base_paper:+.1f}"
            if base is not None and r is not base and pd is not None and base_paper is not None
            else ""
        )
        cells.append("" if c is None or not math.isfinite(c.p_adj) else f"{c.verdict} (p_adj {c.p_adj:.2g})")
        cells += [str(r.n(key)), str(r.n_runs) if r.runs else ""]
        status = r.status + (f": {r.note}" if r.note else "")
        cells.append(status.replace("|", "/"))
        table.append(cells)
    # the CSV carries the key metric as plain numbers beside the formatted text columns
    csv_rows = [cols + [f"{key}_{c}" for c in NUMERIC]] + [
        cells + numeric_columns(sweep, r, analysis.get(r.row.label) if r is not base else None)
        for cells, r in zip(table, results)
    ]
    verdicts = Counter(c.verdict for c in analysis.values() if math.isfinite(c.p_adj))
    md = [f"# {sweep.title}", ""]
    md += [f"- **{k}**: {v}" for k, v in header.items()]
    if verdicts:
        md.append(
            f"- **verdicts** ({adj} at {sweep.design.alpha:g} over {sum(verdicts.values())} contrasts): "
            + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        )
    paper_data = "ImageNet" if sweep.task == "classification" else "MS COCO"
    md += [
        "",
        f"Figures in percent. Paper: {paper_data} at full scale. Reproduced: mean ± standard deviation over seeds; "
        f"the 95% interval is Student's t over seeds. Δ is the row's difference from the baseline "
        f"({sweep.baseline}) in the model {key} ~ row + seed fitted to the whole table (seeds as blocks, the "
        "seed variance pooled over the rows), ± its 95% half-interval; the test-set sd is how far Δ moves over "
        "resamples of the test images, included in both intervals; the adjusted interval is simultaneous "
        f"(Bonferroni) at {sweep.design.alpha:g}, and the verdict is {adj}'s at that level (Holm's later steps are "
        "less strict than Bonferroni, so a verdict may stand where that interval still touches zero): holds / "
        "contradicts (the paper's sign or not), differs (no paper figure), or inconclusive. Seeds: seeds with a "
        "finished run; runs: every finished run of the row's config in the store (all are used; a seed run twice "
        "counts once, as the mean of its runs).",
        "",
    ]
    md.append("| " + " | ".join(cols) + " |")
    md.append("|" + "|".join("---" for _ in cols) + "|")
    md += ["| " + " | ".join(c for c in cells) + " |" for cells in table]
    if sweep.contrasts:
        md += ["", f"Other contrasts (the sweep file's `contrasts`; in the same {adj} family as the rows):", ""]
        md += [f"| contrast | Δ{key} ± 95% | test-set sd | adjusted interval | paper Δ{key} | verdict |"]
        md += ["|---|---|---|---|---|---|"]
        for a, b in sweep.contrasts:
            c = analysis.get(contrast_name(a, b))
            fa, fb = (
                next((r.row.paper.get(key) for r in results if r.row.label == a), None),
                next((r.row.paper.get(key) for r in results if r.row.label == b), None),
            )
            paper = f"{fa - fb:+.1f}" if fa is not None and fb is not None else ""
            if c is None:
                md.append(f"| {contrast_name(a, b)} |  |  |  | {paper} | not run |")
                continue
            md.append(
                f"| {c.row} | {c.estimate:+.1f} ± {c.half95:.1f} | "
                + (f"{math.sqrt(c.var_test):.1f}" if c.n_boot else "")
                + f" | [{c.estimate - c.half_adj:+.1f}, {c.estimate + c.half_adj:+.1f}] | {paper} | "
                + (f"{c.verdict} (p_adj {c.p_adj:.2g})" if math.isfinite(c.p_adj) else "")
                + " |"
            )
    return "\n".join(md) + "\n", csv_rows


def plot(sweep: Sweep, results: list[RowResult], path: Path, analysis: dict[str, Contrast]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = sweep.metrics[0]
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    rows = [r for r in results if r is not base]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        c = analysis.get(r.row.label)
        if c is not None:
            shown = ax.get_legend_handles_labels()[1]
            ax.errorbar(
                c.estimate,
                i,
                xerr=0 if not math.isfinite(c.half_adj) else c.half_adj,
                fmt="o",
                color="tab:blue",
                capsize=3,
                label="reproduced (adjusted interval)" if "reproduced (adjusted interval)" not in shown else None,
            )
            if math.isfinite(c.half95):
                ax.errorbar(c.estimate, i, xerr=c.half95, fmt="none", color="tab:blue", elinewidth=3, alpha=0.5)
        pd = r.row.paper.get(key)
        if base is not None and pd is not None and key in base.row.paper:
            ax.plot(
                pd - base.row.paper[key],
                i,
                "x",
                color="tab:red",
                markersize=8,
                label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None,
            )
        if r.status != "done":
            ax.text(0, i, f"  {r.status}", va="center", fontsize=7, color="gray")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r.row.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ{key} vs {sweep.baseline} (points)")
    ax.set_title(sweep.title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def project_root() -> Path:
    """The checkout the reports belong to: ``BAGOF_ROOT``, else the working directory."""
    return Path(os.environ.get("BAGOF_ROOT") or os.getcwd())


def committed(sweep: Sweep, inv: Invocation) -> bool:
    """Whether ``inv`` is the configuration the committed report in ``reports/`` came from."""
    return inv.scale == sweep.report_scale and inv.data == sweep.data and not inv.extra and inv.follows(sweep)


def report_dir(sweep: Sweep, inv: Invocation, out: str | None) -> tuple[Path, bool]:
    """(folder, whether it holds the committed report). ``reports/`` only for the committed configuration;
    other invocations go to ``outputs/reports/<scale>-<data>[-<hash of the extra overrides>]/``; an explicit
    ``--out`` naming ``reports/`` for another configuration is refused."""
    root = project_root()
    mine = committed(sweep, inv)
    if out is None:
        if mine:
            return root / "reports", True
        tag = f"{inv.scale}-{inv.data}" + ("" if inv.follows(sweep) else f"-seeds{inv.seeds}")
        if inv.extra:
            tag += "-" + hashlib.sha1(" ".join(inv.extra).encode()).hexdigest()[:8]
        return root / "outputs" / "reports" / tag, False
    target = Path(out).resolve()
    if target == (root / "reports").resolve() and not mine:
        raise SweepError(
            f"{out} holds the committed {sweep.name} (scale={sweep.report_scale}, data={sweep.data}, no "
            f"extra overrides, the design's {sweep.design.seeds} seeds); this invocation (scale={inv.scale}, "
            f"data={inv.data}, {inv.seeds} seeds"
            f"{', ' + ' '.join(inv.extra) if inv.extra else ''}) would replace it: leave --out unset "
            f"(it writes to outputs/reports/) or name another folder"
        )
    return target, mine and target == (root / "reports").resolve()


def write_report(
    sweep: Sweep,
    inv: Invocation,
    results: list[RowResult],
    header: dict,
    out_dir: Path,
    discussion: bool = False,
    analysis: dict[str, Contrast] | None = None,
) -> list[Path]:
    """Writes tableN.{md,csv,png}; the hand-written tableN.discussion.md is appended only to the committed
    report (``discussion``), whose numbers it discusses."""
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis = analysis_of(sweep, results) if analysis is None else analysis
    md, rows = render(sweep, inv, results, header, analysis)
    paths = [out_dir / f"{sweep.name}.md", out_dir / f"{sweep.name}.csv", out_dir / f"{sweep.name}.png"]
    notes = out_dir / f"{sweep.name}.discussion.md"  # hand-written discussion of a committed run, kept across rebuilds
    if discussion and notes.is_file():
        md = md.rstrip("\n") + "\n\n## Discussion\n\n" + notes.read_text().strip() + "\n"
    paths[0].write_text(md)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    paths[1].write_text(buf.getvalue())
    plot(sweep, results, paths[2], analysis)
    return paths


def _rule(tags: dict) -> str:
    """An invocation's seeds rule in a few words, from its parent run's tags."""
    if tags.get("auto_seeds"):  # code before 0.5.0: sequential seeds
        a = json.loads(tags["auto_seeds"])
        futility = f", futility {a['futility']:g}" if a.get("futility") else ""
        return f"auto {a['min_seeds']}-{a['max_seeds']} seeds at ±{a['target']:g}{futility}"
    return f"{tags.get('seeds', '?')} seeds" + (" (exploratory)" if tags.get("seeds_rule") == "exploratory" else "")


def invocations_line(earlier: list[tuple[dict, int, bool]], this: dict) -> str | None:
    """The header's record of the earlier invocations whose runs a report uses: ``earlier`` is (parent tags, runs
    reported from it, whether it is an invocation of this same sweep), oldest first; ``this`` the reporting
    invocation's tags. A seeds rule of this sweep that changed between invocations is optional stopping: the
    line says so (and ``exploratory`` marks the report). Another sweep's runs (same config and seed) were
    seeded by that sweep's rule, blind to this one's results."""
    if not earlier:
        return None
    parts = [f"{t.get('mlflow.runName', '?')} ({_rule(t)}): {n} runs" for t, n, _ in earlier]
    return "; ".join(parts) + ("; " + CHANGED if rule_changed(earlier, this) else "")


CHANGED = (
    "this sweep's seeds rule changed between its invocations after results were seen, so the stopping rule "
    "was not fixed in advance and the intervals carry that optimism too"
)


def rule_changed(earlier: list[tuple[dict, int, bool]], this: dict) -> bool:
    return len({_rule(t) for t, _, same in earlier if same} | {_rule(this)}) > 1


def header_for(sweep: Sweep, inv: Invocation, tags: dict, minutes: float | None) -> dict:
    h = {
        "command": f"`{tags.get('command', '')}`",
        "scale": inv.scale,
        "data": inv.data,
        "design": sweep.design.describe(),
        "seeds": f"{inv.seeds} asked (0..{inv.seeds - 1})"
        + ("" if inv.follows(sweep) else f"; exploratory: the design says {sweep.design.seeds}"),
        "hardware": tags.get("hardware", ""),
        "code version": tags.get("code_version", CODE_VERSION),
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }
    if inv.extra:
        h["extra overrides"] = " ".join(inv.extra)
    if minutes is not None:
        h["total time"] = f"{minutes:.1f} min (this invocation)"
    return h
