"""Edit recipes (:mod:`navcuda.recipe`): JSON round trip, exact rendering, named errors."""

from __future__ import annotations

import json

import pytest
import torch

from navcuda.discover import discover
from navcuda.models.stylegan2 import Generator
from navcuda.project import noise_buffers
from navcuda.recipe import (
    DirectionSource,
    LatentInput,
    Recipe,
    RecipeError,
    RecipeModelError,
    SeedInput,
    render_recipe,
)
from navcuda.shift import Combination, synthesize_shifted

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def source(svd_file):
    return DirectionSource.from_file(svd_file([2.0, 3.0, 4.0]))


def test_seed_recipe_round_trips_and_renders_the_combination(tiny_generator, source, tmp_path):
    g = tiny_generator
    recipe = Recipe.make(
        g, SeedInput(5, 0.7), [(source, 0, 1.5), (source, 2, -0.5), (source, 1, 0)]
    )
    assert [t.name for t in recipe.terms] == ["sv0", "sv2"]  # t = 0 changes nothing: left out
    assert recipe.terms[0].t == 3.0 and recipe.terms[0].t_relative == 1.5
    path = recipe.save(tmp_path / "r.json")
    loaded = Recipe.load(path)
    assert loaded.dumps() == recipe.dumps()
    assert json.loads(path.read_text())["input"] == {
        "kind": "seed", "seed": 5, "truncation": 0.7, "label": None,
    }  # fmt: skip
    got = render_recipe(g, loaded)  # the set is found from its path
    ds = source.directions
    with torch.no_grad():
        x = g.sample_seeds([5], truncation_psi=0.7)
        want = synthesize_shifted(g, x, Combination([(ds[0], 3.0), (ds[2], -2.0)]))
    assert torch.equal(got, want)
    with torch.no_grad():
        assert torch.equal(render_recipe(g, loaded, original=True), g.render(x))


def test_latent_recipe_is_exact(tiny_generator, source, tmp_path):
    g = tiny_generator
    ws = torch.randn(1, g.num_ws, 32, generator=torch.Generator().manual_seed(1))
    noise = {k: torch.randn_like(v) for k, v in noise_buffers(g).items()}
    recipe = Recipe.make(g, LatentInput(ws, noise, "photo.png"), [(source, 1, 2.0)])
    loaded = Recipe.load(recipe.save(tmp_path / "p.json"))
    assert torch.equal(loaded.input.ws, ws)
    assert all(torch.equal(loaded.input.noise[k], v) for k, v in noise.items())
    assert torch.equal(render_recipe(g, loaded, [source]), render_recipe(g, recipe, [source]))
    # The generator's own noise buffers are untouched.
    assert not any(torch.equal(noise[k], v) for k, v in noise_buffers(g).items())


def test_another_models_recipe_is_refused(tiny_generator, tiny_config, source):
    torch.manual_seed(1)
    other = Generator(tiny_config()).eval()
    recipe = Recipe.make(tiny_generator, SeedInput(0), [(source, 0, 1.0)])
    with pytest.raises(RecipeModelError, match="made on model"):
        render_recipe(other, recipe, [source])


def test_damaged_and_foreign_recipes_are_named_errors(tiny_generator, source, tmp_path):
    g = tiny_generator
    good = Recipe.make(g, SeedInput(0), [(source, 0, 1.0)]).to_json()
    bad_ws = {"dtype": "float32", "shape": [1, 32], "data": "!"}
    cases = {
        "not json": "{",
        "foreign": json.dumps({"a": 1}),
        "version": json.dumps({**good, "version": 99}),
        "seed": json.dumps({**good, "input": {"kind": "seed", "seed": -1}}),
        "t": json.dumps({**good, "directions": [{**good["directions"][0], "t": "big"}]}),
        "ws": json.dumps({**good, "input": {"kind": "latent", "ws": bad_ws}}),
    }  # fmt: skip
    for what, text in cases.items():
        with pytest.raises(RecipeError):
            Recipe.loads(text, what)
    # A changed set (another checksum) is refused, a renamed direction too.
    other = discover(g, 3, method="svd", k=2, calibrate=False)
    other.save(tmp_path / "dirs.nav")
    with pytest.raises(RecipeError, match="has changed"):
        render_recipe(g, Recipe.loads(json.dumps(good)))
    renamed = {**good, "directions": [{**good["directions"][0], "name": "smile"}]}
    with pytest.raises(RecipeError, match="the recipe says 'smile'"):
        render_recipe(g, Recipe.loads(json.dumps(renamed)), [source])


def test_save_into_a_read_only_folder_leaves_nothing(tiny_generator, source, read_only_folder):
    recipe = Recipe.make(tiny_generator, SeedInput(0), [(source, 0, 1.0)])
    with pytest.raises(PermissionError, match="cannot write .*r.json"):
        recipe.save(read_only_folder / "r.json")
    assert list(read_only_folder.iterdir()) == []


def test_save_over_a_read_only_file_is_refused(tiny_generator, source, tmp_path):
    target = tmp_path / "r.json"
    target.write_text("keep")
    target.chmod(0o444)
    with pytest.raises(PermissionError, match="read-only"):
        Recipe.make(tiny_generator, SeedInput(0), [(source, 0, 1.0)]).save(target)
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
