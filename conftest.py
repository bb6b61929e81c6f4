"""Doctest setup: the examples in `zero_shot`'s modules use the tiny supernet and batch that the
package docstring's example builds; its setup lines (those before `import zero_shot as Z`) run once
per process and fill their namespace, so the setup is written once, where a reader meets it."""

import doctest

import pytest

_SETUP: dict = {}


@pytest.fixture(autouse=True)
def _zero_shot_doctest_namespace(request, doctest_namespace):
    if not request.node.name.startswith("zero_shot.") or not isinstance(request.node, pytest.Item):
        return
    if not _SETUP:
        import zero_shot
        examples = doctest.DocTestParser().get_examples(zero_shot.__doc__)
        for ex in examples[: next(i for i, e in enumerate(examples) if "import zero_shot" in e.source)]:
            exec(ex.source, _SETUP)
    doctest_namespace.update({k: v for k, v in _SETUP.items() if not k.startswith("__")})
