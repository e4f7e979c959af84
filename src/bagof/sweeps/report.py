"""Renders a table: reproduced mean ± std and 95% CI over seeds beside the paper's figures, the paired
difference from the baseline row, Markdown + CSV + a PNG plot. Reads everything from MLflow, so it
can be rebuilt without training (`make report TABLE=4`)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from scipy import stats

from .cache import CODE_VERSION
from .runner import Invocation, backbone_from, compose_row, config_hash, find_row
from .spec import Row, Sweep, SweepError


@dataclass
class RowResult:
    row: Row
    status: str  # done / failed / not implemented / not run
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value (percent)
    note: str = ""
    minutes: float = 0.0  # training time of the runs reported
    parents: list[str] = field(default_factory=list)  # the invocation (parent run) each reported run came from

    def n(self, metric: str) -> int:
        return len(self.values.get(metric, {}))


def ci95(xs: list[float]) -> tuple[float, float, float]:
    """(mean, std, half-width of the 95% t-interval); std and interval are nan for one value."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    s = statistics.stdev(xs)
    return m, s, stats.t.ppf(0.975, len(xs) - 1) * s / math.sqrt(len(xs))


def collect(sweep: Sweep, inv: Invocation, client: mlflow.MlflowClient, exp_id: str) -> list[RowResult]:
    """Looks every (row, seed) up in the store by config hash; FINISHED runs win over FAILED ones."""
    out = []
    for row in sweep.rows:
        reason = row.missing()
        if reason:
            out.append(RowResult(row, "not implemented", note=reason))
            continue
        res = RowResult(row, "not run")
        errors = []
        for seed in range(inv.seeds_of(row.label)):
            try:
                chash = config_hash(compose_row(sweep, row, inv, seed, backbone_from(client, sweep, row, inv, seed)))
            except LookupError as e:
                errors.append(f"pretraining: {e}")
                continue
            except Exception as e:
                errors.append(f"config: {str(e).splitlines()[0]}")
                continue
            run = find_row(client, exp_id, chash, seed)
            if run is None:
                ended = client.search_runs(
                    [exp_id],
                    f"tags.config_hash = '{chash}' and tags.seed = '{seed}' and "
                    f"tags.code_version = '{CODE_VERSION}' and attributes.status != 'FINISHED'",
                    order_by=["attributes.start_time DESC"],
                    max_results=5,
                )
                failed = [r for r in ended if r.info.status == "FAILED"]  # a KILLED run (interrupted) is "not run"
                if failed:
                    errors.append(failed[0].data.tags.get("error", "failed"))
                continue
            res.minutes += run.data.metrics.get("train/minutes", 0.0)
            res.parents.append(run.data.tags.get("mlflow.parentRunId", ""))
            for metric in sweep.metrics:
                v = run.data.metrics.get(f"val/{metric}")
                if v is not None and math.isfinite(v):
                    res.values.setdefault(metric, {})[seed] = 100 * v
        if errors:
            res.status, res.note = "failed", errors[0].splitlines()[0][:160]
        elif res.values:
            res.status = "done"
        out.append(res)
    return out


def _fmt(m, s=None) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    txt = f"{m:.1f}"
    if s is not None and not math.isnan(s):
        txt += f" ± {s:.1f}"
    return txt


def _paired_diff(res: RowResult, base: RowResult, metric: str):
    a, b = res.values.get(metric, {}), base.values.get(metric, {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return (*ci95([a[s] - b[s] for s in seeds]), len(seeds))  # mean, std, half-width, paired seeds


NUMERIC = ("mean", "std", "ci_low", "ci_high", "delta", "delta_half", "n")


def paired_spreads(sweep: Sweep, results: list[RowResult]) -> dict[str, tuple[float, float, int]]:
    """Per non-baseline row that trained: (the paired 95% half-interval of its difference from the baseline,
    the differences' standard deviation, the number of paired seeds); NaNs while it has fewer than two."""
    key = sweep.metrics[0]
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    out = {}
    for r in results:
        if r is base or base is None or r.status != "done":
            continue
        d = _paired_diff(r, base, key)
        out[r.row.label] = (math.nan, math.nan, 0) if d is None else (d[2], d[1], d[3])
    return out


def numeric_columns(sweep: Sweep, r: RowResult, base: RowResult | None) -> list[str]:
    """The key metric as numbers, for the CSV: mean, std, 95% interval, paired delta and its half-width, seeds."""
    key = sweep.metrics[0]
    xs = list(r.values.get(key, {}).values())
    if not xs:
        return [""] * len(NUMERIC)
    m, s, h = ci95(xs)
    d = _paired_diff(r, base, key) if base is not None and r is not base else None

    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    return [num(m), num(s), num(m - h), num(m + h), num(d[0] if d else None), num(d[2] if d else None), str(len(xs))]


def render(sweep: Sweep, inv: Invocation, results: list[RowResult], header: dict) -> tuple[str, list[list[str]]]:
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    key = sweep.metrics[0]
    base_paper = base.row.paper.get(key) if base else None
    cols = (
        ["row"]
        + [f"paper {m}" for m in sweep.metrics]
        + [f"{m} (mean ± std)" for m in sweep.metrics]
        + [f"{key} 95% CI", f"Δ{key} vs baseline (paired)", f"paper Δ{key}", "seeds", "status"]
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
        d = _paired_diff(r, base, key) if base is not None and r is not base else None
        cells.append("" if d is None else (f"{d[0]:+.1f}" + (f" ± {d[2]:.1f}" if not math.isnan(d[2]) else "")))
        pd = r.row.paper.get(key)
        cells.append(
            f"{pd - base_paper:+.1f}"
            if base is not None and r is not base and pd is not None and base_paper is not None
            else ""
        )
        cells.append(str(r.n(key)))
        status = r.status + (f": {r.note}" if r.note else "")
        if inv.auto is not None and r is not base and r.status == "done":
            hw, n = (d[2], d[3]) if d is not None else (math.nan, 0)
            status += (
                f", resolved (±{hw:.1f} ≤ ±{inv.auto.target:g})"
                if inv.auto.resolved(hw, n)
                else f", not resolved (±{hw:.1f}{'; too few seeds to decide' if n < inv.auto.DECIDE_AT else ''})"
                if not math.isnan(hw)
                else ", not resolved"
            )
            if d is not None and not inv.auto.resolved(hw, n) and inv.auto.futile(d[1], n):
                status += f"; futile: ±{inv.auto.projected(d[1]):.1f} projected at {inv.auto.max_seeds} seeds"
        cells.append(status.replace("|", "/"))
        table.append(cells)
    # the CSV carries the key metric as plain numbers beside the formatted text columns
    csv_rows = [cols + [f"{key}_{c}" for c in NUMERIC]] + [
        cells + numeric_columns(sweep, r, base) for cells, r in zip(table, results)
    ]
    md = [f"# {sweep.title}", ""]
    md += [f"- **{k}**: {v}" for k, v in header.items()]
    paper_data = "ImageNet" if sweep.task == "classification" else "MS COCO"
    md += [
        "",
        f"Figures in percent. Paper: {paper_data} at full scale. Reproduced: mean ± standard deviation over seeds; "
        f"the 95% interval is Student's t over seeds; Δ is the difference from the baseline row "
        f"({sweep.baseline}) paired by seed, ± its 95% half-interval.",
        "",
    ]
    md.append("| " + " | ".join(cols) + " |")
    md.append("|" + "|".join("---" for _ in cols) + "|")
    md += ["| " + " | ".join(c for c in cells) + " |" for cells in table]
    return "\n".join(md) + "\n", csv_rows


def plot(sweep: Sweep, results: list[RowResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = sweep.metrics[0]
    base = next((r for r in results if r.row.label == sweep.baseline), None)
    rows = [r for r in results if r is not base]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        d = _paired_diff(r, base, key) if base is not None else None
        if d is not None:
            ax.errorbar(
                d[0],
                i,
                xerr=0 if math.isnan(d[2]) else d[2],
                fmt="o",
                color="tab:blue",
                capsize=3,
                label="reproduced (95% CI)" if i == 0 or not ax.get_legend_handles_labels()[1] else None,
            )
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


def committed(sweep: Sweep, inv: Invocation) -> bool:
    """Whether ``inv`` is the configuration the committed report in ``reports/`` came from."""
    return inv.scale == sweep.report_scale and inv.data == sweep.data and not inv.extra


def report_dir(sweep: Sweep, inv: Invocation, out: str | None) -> tuple[Path, bool]:
    """(folder, whether it holds the committed report). ``reports/`` only for the committed configuration;
    other invocations go to ``outputs/reports/<scale>-<data>[-<hash of the extra overrides>]/``; an explicit
    ``--out`` naming ``reports/`` for another configuration is refused."""
    root = Path(os.environ.get("BAGOF_ROOT") or os.getcwd())
    mine = committed(sweep, inv)
    if out is None:
        if mine:
            return root / "reports", True
        tag = f"{inv.scale}-{inv.data}"
        if inv.extra:
            tag += "-" + hashlib.sha1(" ".join(inv.extra).encode()).hexdigest()[:8]
        return root / "outputs" / "reports" / tag, False
    target = Path(out).resolve()
    if target == (root / "reports").resolve() and not mine:
        raise SweepError(
            f"{out} holds the committed {sweep.name} (scale={sweep.report_scale}, data={sweep.data}, no "
            f"extra overrides); this invocation (scale={inv.scale}, data={inv.data}"
            f"{', ' + ' '.join(inv.extra) if inv.extra else ''}) would replace it: leave --out unset "
            f"(it writes to outputs/reports/) or name another folder"
        )
    return target, mine and target == (root / "reports").resolve()


def write_report(
    sweep: Sweep, inv: Invocation, results: list[RowResult], header: dict, out_dir: Path, discussion: bool = False
) -> list[Path]:
    """Writes tableN.{md,csv,png}; the hand-written tableN.discussion.md is appended only to the committed
    report (``discussion``), whose numbers it discusses."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, rows = render(sweep, inv, results, header)
    paths = [out_dir / f"{sweep.name}.md", out_dir / f"{sweep.name}.csv", out_dir / f"{sweep.name}.png"]
    notes = out_dir / f"{sweep.name}.discussion.md"  # hand-written discussion of a committed run, kept across rebuilds
    if discussion and notes.is_file():
        md = md.rstrip("\n") + "\n\n## Discussion\n\n" + notes.read_text().strip() + "\n"
    paths[0].write_text(md)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    paths[1].write_text(buf.getvalue())
    plot(sweep, results, paths[2])
    return paths


def _rule(tags: dict) -> str:
    """An invocation's seeds rule in a few words, from its parent run's tags."""
    if not tags.get("auto_seeds"):
        return f"{tags.get('seeds', '?')} seeds"
    a = json.loads(tags["auto_seeds"])
    futility = f", futility {a['futility']:g}" if a.get("futility") else ""
    return f"auto {a['min_seeds']}-{a['max_seeds']} seeds at ±{a['target']:g}{futility}"


def invocations_line(earlier: list[tuple[dict, int, bool]], this: dict) -> str | None:
    """The header's record of the earlier invocations whose runs a report uses: ``earlier`` is (parent tags, runs
    reported from it, whether it is an invocation of this same sweep), oldest first; ``this`` the reporting
    invocation's tags. A seeds rule of this sweep that changed after results were seen (e.g. a maximum raised) is
    optional stopping beyond the rule's own: the line says so. Another sweep's runs (same config and seed) were
    seeded by that sweep's rule, blind to this one's results."""
    if not earlier:
        return None
    parts = [f"{t.get('mlflow.runName', '?')} ({_rule(t)}): {n} runs" for t, n, _ in earlier]
    rules = {_rule(t) for t, _, same in earlier if same} | {_rule(this)}
    changed = (
        "; this sweep's seeds rule changed between its invocations after results were seen, so the stopping rule "
        "was not fixed in advance and the intervals carry that optimism too"
        if len(rules) > 1
        else ""
    )
    return "; ".join(parts) + changed


def header_for(inv: Invocation, tags: dict, minutes: float | None) -> dict:
    seeds = f"{inv.seeds} (0..{inv.seeds - 1})"
    if inv.auto is not None:
        used = sorted(set(inv.row_seeds.values()) | {inv.seeds})
        seeds = f"{inv.auto.describe()}; used {used[0]} to {used[-1]} per row (the column seeds)"
    h = {
        "command": f"`{tags.get('command', '')}`",
        "scale": inv.scale,
        "data": inv.data,
        "seeds": seeds,
        "hardware": tags.get("hardware", ""),
        "code version": tags.get("code_version", CODE_VERSION),
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }
    if inv.extra:
        h["extra overrides"] = " ".join(inv.extra)
    if minutes is not None:
        h["total time"] = f"{minutes:.1f} min (this invocation)"
    return h
