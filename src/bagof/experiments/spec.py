"""A sweep file (``sweeps/tableN.yaml``): the table's title, task, shared overrides, and its rows.

Row keys: ``label``; ``bof`` / ``bos`` (toggle names, configs in ``conf/bof`` / ``conf/bos``);
``overrides`` (plain Hydra overrides); ``scale_overrides`` (``{scale: [overrides]}``, for a row whose
setting depends on the scale, e.g. splitting the cpu scale's batch into mini-batches); ``paper`` (the
paper's figures); optional ``flags`` (the paper's columns, for the report), ``not_implemented`` (a
reason, for rows needing more than a toggle) and
``pretrain`` (Table 6: a classifier to train first, ``{data, bof, bos, overrides}``, whose backbone the
row's detector starts from; cached like any row, and shared with an identical row of Tables 2-3).
A row naming a toggle that has no config is a typo and fails the whole sweep at load time (with the
closest names), unless the row says ``not_implemented: <reason>``: such a row is kept in the report and
never trained.

File keys beside ``rows``: ``design`` (the study design, fixed before any result: seeds per row, alpha, the
multiplicity adjustment, test-image resamples; see ``stats.Design``), ``contrasts`` (``[[row a, row b], ...]``:
a - b from the same model, judged with the rows' contrasts in one family), ``extends`` (a base sweep file whose keys
and rows this one takes, its ``overrides`` appended) and ``only_rows`` (labels: keep just those rows, e.g. a
recheck of some rows of a table).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import CONFIG_DIR
from ..errors import BagofError
from .stats import Design, DesignError

TASKS = {"detection": "detect", "classification": "classify"}  # sweep file's `task` -> the config's task=


@dataclass
class Row:
    label: str
    paper: dict[str, float]
    bof: list[str] = field(default_factory=list)
    bos: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    scale_overrides: dict[str, list[str]] = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    not_implemented: str | None = None
    pretrain: dict | None = None

    def pretrain_row(self) -> Row | None:
        """The classifier this row starts from, as a row of its own (None without ``pretrain``)."""
        if self.pretrain is None:
            return None
        p = dict(self.pretrain)
        unknown = set(p) - {"data", "bof", "bos", "overrides"}
        if unknown:
            raise SweepError(f"row {self.label!r}: pretrain keys are data, bof, bos, overrides (not {sorted(unknown)})")
        return Row(
            label=f"{self.label} / classifier",
            paper={},
            bof=list(p.get("bof", [])),
            bos=list(p.get("bos", [])),
            overrides=list(p.get("overrides", [])),
        )

    def toggles(self) -> list[tuple[str, str]]:
        """(group, name) of every toggle the row and its pretrained classifier name."""
        pre = self.pretrain_row()
        return [
            (g, n)
            for g, names in (
                ("bof", self.bof),
                ("bos", self.bos),
                ("bof", pre.bof if pre else []),
                ("bos", pre.bos if pre else []),
            )
            for n in names
        ]

    def missing(self) -> str | None:
        """Why this row cannot run yet (None when it can)."""
        if self.not_implemented:
            return self.not_implemented
        gone = [f"{g}/{n}" for g, n in self.toggles() if not (Path(CONFIG_DIR) / g / f"{n}.yaml").is_file()]
        return f"toggle {', '.join(gone)} not implemented yet" if gone else None

    def hydra_overrides(self, scale: str | None = None) -> list[str]:
        out = []
        for group, names in (("bof", self.bof), ("bos", self.bos)):
            if names:
                out.append(f"+{group}=[{','.join(names)}]")
        return out + list(self.overrides) + list(self.scale_overrides.get(scale, []))


@dataclass
class Sweep:
    name: str
    title: str
    task: str
    metrics: list[str]
    rows: list[Row]
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None
    data: str = "bccd"
    report_scale: str = "cpu"  # with ``data``: the configuration whose report is committed in reports/
    path: Path | None = None
    design: Design = field(default_factory=Design)  # decided before results; the report's rule
    contrasts: list[tuple[str, str]] = field(default_factory=list)  # (a, b): a - b, beside each row - baseline

    def baseline_row(self) -> Row | None:
        return next((r for r in self.rows if r.label == self.baseline), None)


class SweepError(BagofError):
    pass


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.is_file():
        avail = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise SweepError(f"sweep file {path} not found (available: {avail})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    if isinstance(raw, dict) and raw.get("extends"):  # a variant: the base file's rows and keys, these on top
        base = path.parent / raw["extends"]
        if not base.is_file():
            raise SweepError(f"{path}: extends {raw['extends']!r}, but {base} does not exist")
        base_raw = yaml.safe_load(base.read_text())
        raw = {**base_raw, **raw, "overrides": list(base_raw.get("overrides", [])) + list(raw.get("overrides", []))}
    if raw.get("only_rows"):  # a variant that reruns some of its base's rows, named by label
        known = [r.get("label") for r in raw.get("rows", [])]
        missing = [label for label in raw["only_rows"] if label not in known]
        if missing:
            raise SweepError(f"{path}: only_rows names {missing}, which are not rows of it (rows: {known})")
        raw = {**raw, "rows": [r for r in raw["rows"] if r.get("label") in raw["only_rows"]]}
    try:
        rows = [Row(**r) for r in raw["rows"]]
        for r in rows:  # toggles every row of this sweep adds (e.g. a protocol setting of a variant)
            r.bof, r.bos = [*r.bof, *raw.get("bof", [])], [*r.bos, *raw.get("bos", [])]
    except (KeyError, TypeError) as e:
        raise SweepError(f"{path}: every row needs `label` and `paper` and only known keys ({e})") from None
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise SweepError(f"{path}: row labels must be unique, got {labels}")
    try:
        design = Design.from_dict(raw.get("design"), f"{path}: design")
    except (DesignError, TypeError) as e:
        raise SweepError(str(e)) from None
    pairs = raw.get("contrasts") or []
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise SweepError(f"{path}: contrasts is a list of [row, row] pairs (the first minus the second), got {pairs}")
    unknown = sorted({x for p in pairs for x in p} - {r.label for r in rows})
    if unknown:
        raise SweepError(f"{path}: contrasts name {unknown}, which are not rows (rows: {[r.label for r in rows]})")
    sweep = Sweep(
        design=design,
        contrasts=[(str(a), str(b)) for a, b in pairs],
        name=path.stem,
        title=raw.get("title", path.stem),
        task=raw.get("task", "detection"),
        metrics=list(raw.get("metrics", ["AP", "AP50", "AP75"])),
        rows=rows,
        overrides=list(raw.get("overrides", [])),
        baseline=raw.get("baseline"),
        data=raw.get("data", "bccd"),
        report_scale=raw.get("report_scale", "cpu"),
        path=path,
    )
    for r in rows:
        if r.not_implemented:
            continue
        for group, name in r.toggles():
            if not (Path(CONFIG_DIR) / group / f"{name}.yaml").is_file():
                avail = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
                close = difflib.get_close_matches(name, avail, n=3)
                raise SweepError(
                    f"{path}: row {r.label!r} names {group} toggle {name!r}, which does not exist"
                    f"{f' (did you mean {close}?)' if close else ''}; toggles in conf/{group}/: {avail}. "
                    "A row waiting for a toggle not written yet says `not_implemented: <reason>`."
                )
    if sweep.task not in TASKS:
        raise SweepError(f"{path}: task {sweep.task!r}: choose one of {sorted(TASKS)}")
    if sweep.baseline and sweep.baseline_row() is None:
        raise SweepError(f"{path}: baseline {sweep.baseline!r} is not a row label")
    return sweep
