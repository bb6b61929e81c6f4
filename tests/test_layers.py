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


def test_the_checks_see_a_violation(tmp_path, monkeypatch):
    """The walk above is not vacuous: an upward and a private import are found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from experiments.pipeline import _x\n")
    assert list(_imports(f)) == [("experiments.pipeline", ["_x"], 2)]
