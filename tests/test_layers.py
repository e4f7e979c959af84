"""The package's layers point down: no import cycle among bagof's modules, counting every import (a lazy one in
a function body too: it is a dependency all the same)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The bagof modules ``path`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycles():
    files = {_module(p): p for p in SRC.rglob("*.py") if "bagof" in p.parts}
    graph = {m: _imports(p, m, set(files)) for m, p in files.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def test_every_sweep_rows_identity_is_the_recorded_one(monkeypatch):
    """A refactor leaves every table row's config hash (its result-cache identity) as it was; a change meant to
    alter results bumps the code version and rewrites tests/data/row_hashes.json (`python -m tests.row_hashes`)."""
    import json

    from .conftest import DATASETS
    from .row_hashes import OUT, row_hashes

    monkeypatch.setenv("BAGOF_DATASETS", str(DATASETS))
    want = json.loads(OUT.read_text())
    got = row_hashes()
    changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    assert not changed, f"{len(changed)} rows changed identity, e.g. {changed[:5]}"


def test_only_the_command_line_imports_the_experiment_layer():
    """bagof.experiments (launcher, sweeps engine, GA search) sits above training: no module below it imports it,
    lazily or not; only the command-line entry points (bagof.cli, bagof.__main__) call into it."""
    files = {_module(p): p for p in SRC.rglob("*.py") if "bagof" in p.parts}
    up = {
        m: sorted(n for n in _imports(p, m, set(files)) if n.startswith("bagof.experiments"))
        for m, p in files.items()
        if not m.startswith(("bagof.experiments", "bagof.cli", "bagof.__main__"))
    }
    assert not {m: n for m, n in up.items() if n}
