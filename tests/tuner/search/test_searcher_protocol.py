"""Both searchers implement the one declared interface, `tuner.search.Searcher`."""
import inspect

import pytest

from tuner.search import SEARCHERS, Searcher
from tuner.search.ga import GeneticAlgorithm
from tuner.search.optuna import SAMPLERS, SamplerSearch

MEMBERS = [name for name in vars(Searcher) if not name.startswith("_")]


@pytest.mark.parametrize("cls", [GeneticAlgorithm, SamplerSearch])
def test_each_searcher_has_every_member_of_the_protocol(cls):
    assert set(MEMBERS) == {"sizes", "done", "mean", "ask", "tell", "best"}
    for name in MEMBERS:
        declared, found = vars(Searcher)[name], getattr(cls, name, None)
        assert found is not None, f"{cls.__name__} lacks {name}"
        assert isinstance(found, property) == isinstance(declared, property), (cls.__name__, name)
        if inspect.isfunction(declared):
            assert list(inspect.signature(found).parameters)[:2] == list(inspect.signature(declared).parameters)[:2]


def test_searchers_are_listed_once():
    assert list(SEARCHERS) == ["ga", *SAMPLERS]
