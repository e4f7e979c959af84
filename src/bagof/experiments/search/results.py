"""What a search leaves behind: the best hyperparameters as conf/hparams/ga-<data>-<scale>.yaml (applied by
+bof=ga) with a header that says how they were found, and the fitness plot."""

from __future__ import annotations

import math
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .space import SearchSpace


def write_hparams(path: Path, params: dict, space: SearchSpace, study, cfg: DictConfig, best, default) -> None:
    nested: dict = {}
    for g in space.genes:
        if g.key not in params:
            continue
        node = nested
        *parents, leaf = g.key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        v = float(f"{params[g.key]:.6g}")
        node[leaf] = [v] * g.broadcast if g.broadcast else v
    s = cfg.search
    fraction = float(study.user_attrs.get("fraction", s.fraction))  # what the study's trials ran
    head = [
        "# @package _global_",
        f"# Hyperparameters found by the GA search (bagof.experiments.search), applied by +bof=ga. Study {s.study!r}",
        f"# ({s.storage.replace(str(cfg.paths.root), '<repo>')}), sampler {s.sampler}, data={cfg.data.name}, "
        f"scale={cfg.scale.name}, code {study.user_attrs.get('code_version', '?')}, each trial "
        f"{max(1, math.ceil(fraction * cfg.train.max_epochs))} epochs ({fraction:.0%} of the "
        f"{cfg.train.max_epochs}-epoch schedule, compressed to them), trained and scored on",
        f"# {study.user_attrs.get('holdout', 'data.val')}, overrides: {study.user_attrs.get('overrides') or 'none'},",
        f"# fitness {dict(s.fitness)}: best trial {best.number} = {best.value:.4f}"
        + (f", the defaults' trial = {default:.4f}" if default is not None else "")
        + f"; {time.strftime('%Y-%m-%d')}.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + "\n" + OmegaConf.to_yaml(OmegaConf.create(nested)))


def plot_fitness(trials, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted(trials, key=lambda t: t.number)
    xs, ys = [t.number for t in trials], [t.value for t in trials]
    best = [max(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, "o", label="trial")
    ax.plot(xs, best, "-", label="best so far")
    for t in trials:
        if t.user_attrs.get("defaults"):
            ax.plot(t.number, t.value, "s", color="tab:red", label="defaults")
    ax.set_xlabel("trial")
    ax.set_ylabel("fitness")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
