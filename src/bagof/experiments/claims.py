"""`make claims` (`python -m bagof.experiments.claims [ledger.yaml]`): one ledger of the paper's claims across datasets.

A claim is a paper row's difference from its table's baseline, with the paper's sign and size. The ledger file
(``sweeps/claims.yaml``) names, per dataset, the sweeps whose rows carry claims (Table 4 on BCCD, its variant on
raccoon, ...). For every claim and dataset it takes the table's own analysis (``stats.analyse`` over every
finished run of the row's config in the store, at the sweep's committed scale, data and design): the estimate, the
table-adjusted interval and verdict. Across datasets it pools a random-effects meta-analysis (statsmodels
``combine_effects``, Paule-Mandel between-dataset variance, the modified Hartung-Knapp-Sidik-Jonkman standard
error with t on k - 1 degrees of freedom, which keeps its coverage with as few as 2-3 datasets), with its
heterogeneity (I²,
tau²). The pooled verdicts are Holm-adjusted over all claims. Writes reports/claims.md (the summary line first)
and reports/claims.png (a forest plot).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from ..config import CONFIG_DIR
from ..identity import CODE_VERSION
from .archive import restore_committed
from .invocation import Invocation, compose_base
from .launch import open_store
from .report import analysis_of, project_root
from .spec import SweepError, load_sweep
from .stats import Contrast
from .store import collect, open_sweep_store, resampled_values

log = logging.getLogger("bagof.claims")
SWEEPS_DIR = Path(CONFIG_DIR).parent / "sweeps"


@dataclass
class Claim:
    table: str  # the paper table's sweep (table4)
    row: str
    paper: float  # the paper's delta, points
    per_data: dict[str, Contrast] = field(default_factory=dict)
    pooled: float = math.nan
    pooled_se: float = math.nan
    pooled_df: int = 0
    half_adj: float = math.nan  # the pooled estimate's Holm-compatible (Bonferroni) half-width over all claims
    p: float = math.nan
    p_adj: float = math.nan
    i2: float = math.nan
    tau2: float = math.nan
    verdict: str = "open"


def pool(claim: Claim) -> None:
    """Random-effects pooling of the claim's per-dataset estimates (each with its own seed + test-set variance)."""
    from statsmodels.stats.meta_analysis import combine_effects

    cs = [c for c in claim.per_data.values() if math.isfinite(c.se) and c.se > 0]
    if not cs:
        return
    if len(cs) == 1:  # one dataset: its own estimate and interval
        c = cs[0]
        claim.pooled, claim.pooled_se, claim.pooled_df = c.estimate, c.se, int(c.df)
        claim.p = 2 * stats.t.sf(abs(c.estimate) / c.se, c.df)
        return
    with np.errstate(divide="ignore", invalid="ignore"):  # identical estimates: Q = 0, I² = 1 - 1/0
        res = combine_effects(
            np.array([c.estimate for c in cs]), np.array([c.se**2 for c in cs]), method_re="pm", use_t=True
        )
    # the modified Hartung-Knapp standard error, never below the plain random-effects one (Roever et al. 2015):
    # plain HKSJ shrinks to 0 when the datasets happen to agree closely
    se = max(float(res.sd_eff_w_re_hksj), float(res.sd_eff_w_re))
    claim.pooled, claim.pooled_se, claim.pooled_df = float(res.mean_effect_re), se, len(cs) - 1
    claim.i2 = max(0.0, float(res.i2)) if math.isfinite(res.i2) else 0.0
    claim.tau2 = float(res.tau2)
    claim.p = float(2 * stats.t.sf(abs(claim.pooled) / claim.pooled_se, claim.pooled_df))


def decide(claims: list[Claim], alpha: float = 0.05) -> None:
    """Holm over the pooled claims; a claim holds (the paper's sign), is contradicted, or stays open."""
    from statsmodels.stats.multitest import multipletests

    live = [c for c in claims if math.isfinite(c.p)]
    if not live:
        return
    reject, p_adj, _, _ = multipletests([c.p for c in live], alpha=alpha, method="holm")
    m = len(live)
    for c, rej, pa in zip(live, reject, p_adj):
        c.p_adj = float(pa)
        c.half_adj = float(stats.t.ppf(1 - alpha / (2 * m), c.pooled_df) * c.pooled_se)
        if rej:
            c.verdict = "holds" if (c.pooled > 0) == (c.paper > 0) else "contradicted"


def summary_line(claims: list[Claim], minutes: float, runs: int) -> str:
    n = {v: sum(1 for c in claims if c.verdict == v) for v in ("holds", "contradicted", "open")}
    return (
        f"{n['holds']} of the paper's {len(claims)} claims here hold at this scale, {n['contradicted']} are "
        f"contradicted, {n['open']} are open ({runs} runs, {minutes / 60:.1f} training hours behind them)."
    )


def gather(ledger: dict) -> tuple[list[Claim], list[str], float, int]:
    """(claims, datasets, training minutes, runs) from the store, per the ledger file."""
    claims: dict[tuple[str, str], Claim] = {}
    datasets = list(ledger["datasets"])
    minutes, runs = 0.0, 0
    seen: set[str] = set()  # a run two sweeps share (Table 5's baseline is a Table 4 row) counts once
    for data, sweeps in ledger["datasets"].items():
        for name in sweeps:
            sweep = load_sweep(SWEEPS_DIR / f"{name}.yaml")
            table = ledger.get("paper_table", {}).get(name, name)
            base = sweep.baseline_row()
            inv = Invocation(sweep.report_scale, sweep.data, sweep.design.seeds)
            st = open_sweep_store(sweep.name)
            results = collect(sweep, inv, st.client, st.exp_id)
            for r in results:
                ids = {i for v in r.runs.values() for i in v}
                new = ids - seen
                if new:
                    minutes += r.minutes * len(new) / len(ids)
                    runs += len(new)
                seen |= ids
            analysis = analysis_of(sweep, results, resampled_values(sweep, results, st.client, sweep.design.bootstrap))
            for r in sweep.rows:
                if r is base or "AP" not in r.paper or base is None or "AP" not in base.paper:
                    continue
                key = (table, r.label)
                claim = claims.setdefault(key, Claim(table, r.label, r.paper["AP"] - base.paper["AP"]))
                if r.label in analysis and math.isfinite(analysis[r.label].se):
                    claim.per_data[data] = analysis[r.label]
    out = list(claims.values())
    for c in out:
        pool(c)
    decide(out, float(ledger.get("alpha", 0.05)))
    return out, datasets, minutes, runs


def render(claims: list[Claim], datasets: list[str], minutes: float, runs: int, ledger_path: str) -> str:
    lines = [
        "# Claims ledger: the paper's ablation claims across datasets",
        "",
        f"**{summary_line(claims, minutes, runs)}**",
        "",
        f"- **built by**: `make claims` ({ledger_path}), {time.strftime('%Y-%m-%d %H:%M')}, from the runs of code "
        f"{CODE_VERSION} in the store",
        "- **per dataset**: the table's own analysis (AP ~ row + seed, the test-set component, Holm over the "
        "table): the estimate, its adjusted interval and verdict",
        "- **pooled**: random effects over the datasets with a result (Paule-Mandel tau², modified Hartung-Knapp "
        "standard error, t on k - 1 degrees of freedom), Holm over all the claims at 0.05; *open*: Holm does not "
        "reject",
        "- a claim's sign is the paper's Δ from its table's baseline; differences in AP points",
        "",
        "| table | row | paper Δ | " + " | ".join(datasets) + " | pooled (adjusted interval) | I² | verdict |",
        "|" + "---|" * (len(datasets) + 6),
    ]
    for c in claims:
        cells = [c.table, c.row, f"{c.paper:+.1f}"]
        for d in datasets:
            x = c.per_data.get(d)
            cells.append(
                "not run"
                if x is None
                else f"{x.estimate:+.1f} [{x.estimate - x.half_adj:+.1f}, {x.estimate + x.half_adj:+.1f}] {x.verdict}"
            )
        if math.isfinite(c.pooled) and math.isfinite(c.half_adj):
            cells.append(f"{c.pooled:+.1f} [{c.pooled - c.half_adj:+.1f}, {c.pooled + c.half_adj:+.1f}]")
        else:
            cells.append("")
        cells.append(f"{100 * c.i2:.0f}%" if math.isfinite(c.i2) else "")
        cells.append(c.verdict + (f" (p_adj {c.p_adj:.2g})" if math.isfinite(c.p_adj) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(claims: list[Claim], datasets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(claims) + 1.5))
    colors = dict(zip(datasets, ("tab:blue", "tab:green", "tab:orange", "tab:purple")))
    for i, c in enumerate(claims):
        for j, d in enumerate(datasets):
            x = c.per_data.get(d)
            if x is not None and math.isfinite(x.half_adj):
                ax.errorbar(x.estimate, i + 0.15 * (j - 1), xerr=x.half_adj, fmt="o", ms=3, color=colors[d], lw=1)
        if math.isfinite(c.pooled) and math.isfinite(c.half_adj):
            ax.errorbar(c.pooled, i, xerr=c.half_adj, fmt="D", color="black", ms=5, lw=2)
        ax.plot(c.paper, i, "x", color="tab:red", ms=8)
    for d, col in colors.items():
        ax.plot([], [], "o", color=col, label=d)
    ax.plot([], [], "D", color="black", label="pooled (adjusted)")
    ax.plot([], [], "x", color="tab:red", label="paper")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(claims)), [f"{c.table}: {c.row}" for c in claims], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ΔAP vs the table's baseline (points)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else SWEEPS_DIR / "claims.yaml")
    out = Path(argv[1] if len(argv) > 1 else Path(CONFIG_DIR).parent / "reports")
    try:
        ledger = yaml.safe_load(path.read_text())
        if not isinstance(ledger, dict) or not isinstance(ledger.get("datasets"), dict):
            raise SweepError(f"{path}: a ledger file needs `datasets: {{name: [sweep, ...]}}`")
        base = compose_base()
        restore_committed(open_store(base.logger.tracking_uri, base.paths.root), base, project_root())
        claims, datasets, minutes, runs = gather(ledger)
    except (OSError, SweepError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    md = render(claims, datasets, minutes, runs, str(path.name))
    (out / "claims.md").write_text(md)
    plot(claims, datasets, out / "claims.png")
    print(md)
    print(f"ledger: {out / 'claims.md'}, {out / 'claims.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
