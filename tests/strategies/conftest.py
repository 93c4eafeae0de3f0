"""The activations the scoring and chosen-rows tests share: one encoder pass per session."""

import pytest

from raysweep.backbone import Backbone, boundary_for
from raysweep.embed import ensure_activations, load_activations

TEXTS = ["a good movie .", "the plot is boring and not fun", "great film !", "awful , awful movie",
         "not very good but fun", "the film is very very very boring .", "bad", "a great plot , a good film",
         "fun", "the movie is not bad", "very good", "boring , boring plot"]
FREEZES = ("last-linear", "pooler", "last-attention")


@pytest.fixture(scope="session")
def acts(tiny_bert, tmp_path_factory):
    """Activations of 36 rows per freeze mode (12 texts x 3): 9 labeled, 27 in the pool.

    Session-scoped (test_scoring.py and test_chosen_rows.py each built their own), and all three
    freeze modes' boundaries from one encoder pass, as the product computes several at once."""
    backbone = Backbone(tiny_bert)
    cache = tmp_path_factory.mktemp("acts")
    bounds = [boundary_for(freeze, backbone.num_layers, "pooler", 32) for freeze in FREEZES]
    paths = ensure_activations(tiny_bert, TEXTS * 3, bounds, cache, use_ray=False, log=lambda *_: None)
    return {freeze: load_activations(path) for freeze, path in zip(FREEZES, paths)}
