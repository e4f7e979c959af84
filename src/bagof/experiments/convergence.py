"""The convergence plot of ``sweeps/convergence.yaml``: AP against the schedule length, one point per seed,
the mean and its 95% interval, and the 90%-of-plateau line used to choose the cpu protocol (issue 12).
``python -m bagof.experiments.convergence`` (after ``make convergence``) writes reports/convergence-curve.png;
it reads the runs from the MLflow store, as the report does."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .invocation import Invocation
from .launch import TAG_KIND
from .report import ci95
from .spec import load_sweep
from .store import collect, open_sweep_store


def epochs_of(row) -> int:
    for o in row.overrides:
        m = re.fullmatch(r"train\.max_epochs=(\d+)", o)
        if m:
            return int(m.group(1))
    raise ValueError(f"row {row.label!r} sets no train.max_epochs")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else "sweeps/convergence.yaml")
    out = Path(argv[1] if len(argv) > 1 else "reports/convergence-curve.png")
    sweep = load_sweep(path)
    st = open_sweep_store(sweep.name)
    parent = st.client.search_runs(
        [st.exp_id], f"tags.`{TAG_KIND}` = 'table'", order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    t = parent.data.tags
    inv = Invocation(t["scale"], t["data"], int(t["seeds"]), row_seeds=json.loads(t.get("row_seeds", "{}")))
    results = collect(sweep, inv, st.client, st.exp_id)
    points = {epochs_of(r.row): sorted(r.values.get("AP", {}).values()) for r in results if r.values.get("AP")}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(points)
    means = [ci95(points[x])[0] for x in xs]
    half = [ci95(points[x])[2] if len(points[x]) > 1 else 0.0 for x in xs]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for x in xs:
        ax.plot([x] * len(points[x]), points[x], "o", color="tab:blue", alpha=0.5, ms=4)
    ax.errorbar(xs, means, yerr=half, fmt="-s", color="tab:blue", capsize=3, label="mean, 95% interval")
    plateau = max(means)
    ax.axhline(0.9 * plateau, color="tab:red", ls="--", lw=1, label=f"90% of the best mean ({0.9 * plateau:.1f})")
    ax.set_xlabel("schedule length (epochs; each a whole schedule)")
    ax.set_ylabel("AP (%) on BCCD test" if inv.data == "bccd" else "AP (%)")
    ax.set_title(
        f"{sweep.title}\n{inv.scale} scale, seeds per length: {', '.join(str(len(points[x])) for x in xs)}", fontsize=8
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"{out}: " + "; ".join(f"{x} epochs {m:.1f} ± {h:.1f}" for x, m, h in zip(xs, means, half)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
