"""The package layering of the developers' guide: hwmodel <- supernet <- zero_shot <- experiments
(a package imports only packages to its left), and no module imports another module's private
(`_name`) names. Read from the source with `ast`, so lazy imports inside functions count too."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ORDER = ["hwmodel", "supernet", "zero_shot", "experiments"]


def _imports(path: pathlib.Path):
    """(module imported, names imported from it, line) for every import in the file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [a.name for a in node.names], node.lineno


def _files(*packages):
    for pkg in packages:
        yield from sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", ORDER)
def test_packages_import_only_the_layers_below(pkg):
    above = set(ORDER[ORDER.index(pkg) + 1:])
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for f in _files(pkg) for mod, _, line in _imports(f) if mod.split(".")[0] in above]
    assert not bad, bad


def test_no_private_names_are_imported_across_modules():
    ours = set(ORDER)
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}.{n}"
           for f in _files(*ORDER, "benchmarks") for mod, names, line in _imports(f)
           if mod.split(".")[0] in ours for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def _graph(*packages) -> dict[str, set[str]]:
    mods = {_module(f): f for f in _files(*packages)}
    graph = {}
    for m, f in mods.items():
        deps = set()
        for mod, names, _ in _imports(f):
            subs = {f"{mod}.{n}" for n in names} & mods.keys()  # `from pkg import module`
            deps |= subs or ({mod} & mods.keys())
        # a package's `__init__` re-exports its modules; their imports of the package's other
        # modules pass through it, which is Python's loading, not a cycle of the design
        graph[m] = {d for d in deps if d != m and not m.startswith(d + ".")}
    return graph


def test_no_import_cycles():
    """No module imports itself through others (lazy imports inside functions count: a cycle is a
    tangle a reader has to hold in their head even when Python happens to load it)."""
    assert _cycle(_graph(*ORDER)) is None, " -> ".join(_cycle(_graph(*ORDER)))


def test_the_checks_see_a_violation(tmp_path, monkeypatch):
    """The walk above is not vacuous: an upward and a private import are found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from experiments.pipeline import _x\n")
    assert list(_imports(f)) == [("experiments.pipeline", ["_x"], 2)]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_a_warning_from_our_code_fails_the_tests():
    """pyproject's filterwarnings turns a warning issued in our packages into an error (a test
    that triggers one fails), and leaves other modules' warnings alone."""
    import warnings
    code = compile("import warnings\nwarnings.warn('from our code', UserWarning)", "<ours>", "exec")
    with pytest.raises(UserWarning, match="from our code"):
        exec(code, {"__name__": "hwmodel.somewhere"})
    with warnings.catch_warnings(record=True) as seen:  # the filters stay pytest's
        exec(code, {"__name__": "thirdparty.module", "__warningregistry__": {}})
    assert [str(w.message) for w in seen] == ["from our code"]


def test_benchmarks_import_the_installed_package():
    """Benchmarks run against `pip install -e .`, never a path edit that could pick another copy."""
    bad = [f"{f.relative_to(ROOT)}" for f in _files("benchmarks") if "sys.path" in f.read_text()]
    assert not bad, bad
