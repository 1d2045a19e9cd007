"""Every public construct documents its props where IDEs show them: in ``__init__``'s
docstring, one ``:param`` per keyword-only argument."""

from __future__ import annotations

import inspect

import pytest
from constructs import Construct

import llm_serving

CONSTRUCTS = [
    obj
    for name in llm_serving.__all__
    if inspect.isclass(obj := getattr(llm_serving, name)) and issubclass(obj, Construct)
]


@pytest.mark.parametrize("construct", CONSTRUCTS, ids=lambda c: c.__name__)
def test_init_docstring_lists_every_prop(construct: type[Construct]) -> None:
    init = construct.__dict__["__init__"]
    doc = inspect.getdoc(init) or ""
    keyword_only = [
        p.name
        for p in inspect.signature(init).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keyword_only, construct.__name__
    for name in keyword_only:
        assert f":param {name}:" in doc, f"{construct.__name__}.__init__: {name} undocumented"


def test_every_public_construct_is_checked() -> None:
    assert {c.__name__ for c in CONSTRUCTS} >= {
        "ModelArtifacts",
        "LlmEndpoint",
        "LmiModelPackage",
        "StreamingGateway",
        "QuotaTable",
        "InferenceDashboard",
        "SharedLlmEndpoint",
        "LlmInferenceComponent",
    }
