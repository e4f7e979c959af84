"""The statistics of a table: a fixed design, one linear model per table, a test-set component, Holm.

The rule, decided before any result is seen and written in the sweep file (``design:``):

- **Design.** Every row trains ``seeds`` seeds (0 .. seeds-1); nothing is added or stopped on what the
  results show (no optional stopping). Every finished run of a row's config in the store counts, whichever
  invocation trained it (one per seed: the latest).
- **Model.** ``AP ~ row + seed`` by ordinary least squares over all of a table's rows (seeds as blocks: a seed
  fixes the initialisation and the data order of every row). A row's contrast with the baseline is its
  coefficient; its standard error uses the residual variance pooled over the whole table, on
  ``n - rows - seeds + 1`` degrees of freedom, not the 2-3 differences of one row. This is the randomised
  complete block analysis (Montgomery, *Design and Analysis of Experiments*, ch. 4); unbalanced tables
  (a seed missing in one row) are handled by the same least squares.
- **Test-set component.** The intervals above cover seed-to-seed variation on one fixed test set. The test
  images are resampled with replacement (the same resample for every row and seed: the rows stay paired),
  each run's AP recomputed on the resample, and the contrasts refitted; their variance across resamples is
  the test-set component, added to the seed component (independent sources). The t quantile takes the
  Welch-Satterthwaite degrees of freedom of the sum.
- **Multiplicity.** Holm's step-down adjustment (statsmodels ``multipletests``) over the table's contrasts
  controls the family-wise error at ``alpha``. The adjusted interval shown beside each contrast is the
  Bonferroni one (level ``1 - alpha / m``): it excludes zero only where Holm also rejects.
- **Verdict.** ``holds`` (Holm rejects and the sign is the paper's), ``contradicts`` (Holm rejects, the
  other sign), ``differs`` (Holm rejects, a row the paper has no figure for), else ``inconclusive``. No
  verdict says "no effect": a wide interval around zero is not evidence of none.

Everything here is plain numbers in, numbers out: testable without MLflow (tests/test_stats.py simulates
thousands of rows through ``analyse`` and checks the coverage and the family-wise error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ADJUSTMENTS = ("holm", "bonferroni", "fdr_bh")


class DesignError(ValueError):
    """A ``design:`` block that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Design:
    """A table's study design, declared in its sweep file before any result is seen."""

    seeds: int = 5  # seeds per row, fixed in advance
    alpha: float = 0.05  # family-wise error rate (Holm) or false discovery rate (fdr_bh) of the verdicts
    adjust: str = "holm"  # statsmodels.stats.multitest.multipletests method
    bootstrap: int = 200  # test-image resamples for the test-set component (0: seed component only)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "design") -> Design:
        d = dict(d or {})
        unknown = set(d) - {"seeds", "alpha", "adjust", "bootstrap"}
        if unknown:
            raise DesignError(f"{where}: unknown keys {sorted(unknown)} (seeds, alpha, adjust, bootstrap)")
        out = cls(**d)
        if not isinstance(out.seeds, int) or out.seeds < 1:
            raise DesignError(f"{where}.seeds: {out.seeds!r}: a whole number of seeds per row (one gives no interval)")
        if not 0 < float(out.alpha) < 1:
            raise DesignError(f"{where}.alpha: {out.alpha!r}: a level between 0 and 1, e.g. 0.05")
        if out.adjust not in ADJUSTMENTS:
            raise DesignError(f"{where}.adjust: {out.adjust!r}: one of {', '.join(ADJUSTMENTS)}")
        if not isinstance(out.bootstrap, int) or out.bootstrap < 0 or 0 < out.bootstrap < 50:
            raise DesignError(f"{where}.bootstrap: {out.bootstrap!r}: 0 (off) or 50 resamples or more")
        return out

    def describe(self) -> str:
        adj = {"holm": "Holm (family-wise)", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini-Hochberg (FDR)"}
        boot = (
            f"plus the test-set component from {self.bootstrap} resamples of the test images"
            if self.bootstrap
            else "seed component only"
        )
        return (
            f"fixed: {self.seeds} seeds per row (0..{self.seeds - 1}), no optional stopping; AP ~ row + seed "
            f"(seeds as blocks, variance pooled over the table), {boot}; {adj[self.adjust]} at "
            f"{self.alpha:g} over the table's contrasts"
        )


@dataclass
class Contrast:
    """One row's difference from the baseline, with both variance components and its verdict."""

    row: str
    estimate: float  # points
    se_seed: float  # standard error from the seed-to-seed variation (pooled)
    df_seed: int  # its degrees of freedom
    var_test: float = 0.0  # test-set component (variance of the contrast across test-image resamples)
    n_boot: int = 0
    p: float = math.nan  # two-sided, unadjusted
    p_adj: float = math.nan  # after the table's adjustment
    half95: float = math.nan  # unadjusted 95% half-width (both components)
    half_adj: float = math.nan  # simultaneous (Bonferroni) half-width at the table's alpha
    verdict: str = "inconclusive"
    seeds: list[int] = field(default_factory=list)

    @property
    def se(self) -> float:
        return math.sqrt(self.se_seed**2 + self.var_test)

    @property
    def df(self) -> float:
        """Welch-Satterthwaite degrees of freedom of se² = se_seed² + var_test."""
        if self.var_test <= 0 or self.n_boot < 2:
            return float(self.df_seed)
        a, b = self.se_seed**2, self.var_test
        return (a + b) ** 2 / (a**2 / self.df_seed + b**2 / (self.n_boot - 1))


def design_matrix(values: dict[str, dict[int, float]], baseline: str):
    """(y, X, row names, seeds) for ``y ~ row + seed`` with the baseline and the first seed as references."""
    rows = [baseline] + [r for r in values if r != baseline and values[r]]
    seeds = sorted({s for r in rows for s in values.get(r, {})})
    y, X = [], []
    for i, r in enumerate(rows):
        for s, v in sorted(values.get(r, {}).items()):
            x = np.zeros(len(rows) + len(seeds) - 1)
            x[0] = 1.0
            if i > 0:
                x[i] = 1.0
            j = seeds.index(s)
            if j > 0:
                x[len(rows) - 1 + j] = 1.0
            y.append(v)
            X.append(x)
    return np.asarray(y, float), np.asarray(X, float), rows, seeds


def contrast_name(a: str, b: str) -> str:
    return f"{a} − {b}"


def contrasts(
    values: dict[str, dict[int, float]], baseline: str, extra: list[tuple[str, str]] = ()
) -> dict[str, Contrast]:
    """Each row's contrast with the baseline from ``y ~ row + seed`` (statsmodels OLS), keyed by row, and each
    ``extra`` pair (a, b), a - b from the same fit (its standard error from the coefficients' covariance), keyed
    ``"a − b"``. The model needs residual degrees of freedom (else no interval)."""
    import statsmodels.api as sm

    if not values.get(baseline):
        return {}
    y, X, rows, seeds = design_matrix(values, baseline)
    if len(rows) < 2:
        return {}
    fit = sm.OLS(y, X).fit()
    df = int(round(fit.df_resid))
    cov = fit.cov_params() if df > 0 else None
    out = {}
    for i, r in enumerate(rows[1:], start=1):
        se = float(fit.bse[i]) if df > 0 else math.nan
        out[r] = Contrast(r, float(fit.params[i]), se, df, seeds=sorted(values[r]))
    for a, b in extra:
        if a not in rows or b not in rows:
            continue
        w = _weights(rows, X.shape[1], a, b)
        se = float(math.sqrt(w @ cov @ w)) if cov is not None else math.nan
        out[contrast_name(a, b)] = Contrast(contrast_name(a, b), float(w @ fit.params), se, df)
    return out


def _weights(rows: list[str], p: int, a: str, b: str) -> np.ndarray:
    """The linear combination of the coefficients that is row a - row b (the baseline's coefficient is 0)."""
    w = np.zeros(p)
    for r, sign in ((a, 1.0), (b, -1.0)):
        i = rows.index(r)
        if i > 0:
            w[i] += sign
    return w


def point_contrasts(
    values: dict[str, dict[int, float]], baseline: str, extra: list[tuple[str, str]] = ()
) -> dict[str, float]:
    """The contrasts' point estimates alone (the bootstrap refits them many times): least squares in numpy,
    the same estimates as ``contrasts``."""
    y, X, rows, _ = design_matrix(values, baseline)
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    out = {r: float(beta[i]) for i, r in enumerate(rows[1:], start=1)}
    for a, b in extra:
        if a in rows and b in rows:
            out[contrast_name(a, b)] = float(_weights(rows, X.shape[1], a, b) @ beta)
    return out


def decide(cs: dict[str, Contrast], design: Design, paper: dict[str, float | None]) -> dict[str, Contrast]:
    """Fills p-values, the adjusted ones, both half-widths and the verdicts of a table's contrasts, in place.
    ``paper``: each row's paper delta (None: the paper has none)."""
    from statsmodels.stats.multitest import multipletests

    live = [c for c in cs.values() if c.df_seed > 0 and math.isfinite(c.se) and c.se > 0]
    m = len(live)
    for c in live:
        t = abs(c.estimate) / c.se
        c.p = float(2 * stats.t.sf(t, c.df))
        c.half95 = float(stats.t.ppf(0.975, c.df) * c.se)
        c.half_adj = float(stats.t.ppf(1 - design.alpha / (2 * m), c.df) * c.se)
    if not live:
        return cs
    reject, p_adj, _, _ = multipletests([c.p for c in live], alpha=design.alpha, method=design.adjust)
    for c, rej, pa in zip(live, reject, p_adj):
        c.p_adj = float(pa)
        pd = paper.get(c.row)
        if not rej:
            c.verdict = "inconclusive"
        elif pd is None or pd == 0:
            c.verdict = "differs"
        else:
            c.verdict = "holds" if (c.estimate > 0) == (pd > 0) else "contradicts"
    return cs


def analyse(
    values: dict[str, dict[int, float]],
    baseline: str,
    design: Design,
    paper: dict[str, float | None] | None = None,
    boot: list[dict[str, dict[int, float]]] | None = None,
    extra: list[tuple[str, str]] = (),
) -> dict[str, Contrast]:
    """The table's decision: contrasts with the baseline and the ``extra`` pairs (one family), the test-set
    component from ``boot`` (the same values recomputed on each test-image resample; None or empty: none),
    adjusted verdicts. ``paper``: the paper's delta of each contrast, by its key."""
    cs = contrasts(values, baseline, extra)
    if boot:
        reps = [point_contrasts(b, baseline, extra) for b in boot]
        for r, c in cs.items():
            xs = [rep[r] for rep in reps if r in rep and math.isfinite(rep[r])]
            if len(xs) >= 2:
                c.var_test, c.n_boot = float(np.var(xs, ddof=1)), len(xs)
    return decide(cs, design, paper or {})
