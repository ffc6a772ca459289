"""The declared parameters of the discovery methods (navcuda.discover.params): tables that match
the code, named errors for unknown names and bad values, the same through the API and the CLI."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import warnings

import pytest
import torch

from navcuda.discover import METHODS, FewerDirectionsWarning, discover, max_directions
from navcuda.discover.hybrid import HYBRID_DEFAULTS
from navcuda.discover.optimize import OptimizeConfig, discover_optimize
from navcuda.discover.params import check_params, declare, describe, integer, table

pytestmark = pytest.mark.usefixtures("one_thread")


def _signature_defaults(method: str) -> dict[str, object]:
    """Every keyword of the method's function with its default, and for the optimisation
    methods (``**hparams`` -> OptimizeConfig) every config field (hybrid: over its defaults)."""
    module, fn_name, _ = METHODS[method]
    fn = getattr(importlib.import_module(module), fn_name)
    params = inspect.signature(fn).parameters.values()
    out = {p.name: p.default for p in params if p.default is not p.empty}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        assert method in ("optimize", "hybrid"), f"{fn_name} takes **kwargs: declare where to"
        fields = {f.name: f.default for f in dataclasses.fields(OptimizeConfig)}
        if method == "hybrid":
            fields.update(HYBRID_DEFAULTS)
        out = {**fields, **out}
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_keyword_is_declared_with_its_default(method):
    declared = table(method)
    expected = _signature_defaults(method)
    assert sorted(declared) == sorted(expected)
    for name, p in declared.items():
        assert p.name == name and p.help and p.type + p.rule
        same = p.default == expected[name] or p.default is expected[name]
        assert same, f"{method}.{name}: declared {p.default!r}, signature {expected[name]!r}"
        # the default itself passes the declared rule
        assert p.check(p.default, method) == p.default


def test_declare_refuses_a_table_that_does_not_match():
    def fn(generator, layer, k: int = 3, steps: int = 2):
        pass

    with pytest.raises(TypeError, match=r"undeclared \['steps'\]"):
        declare(fn, k=integer("k", 1))
    with pytest.raises(TypeError, match=r"not in the signature \['stepz'\]"):
        declare(fn, k=integer("k", 1), steps=integer("s", 0), stepz=integer("s", 0))


def test_unknown_names_get_the_closest_valid_ones():
    with pytest.raises(
        ValueError, match=r"optimize has no parameter 'stepz'; did you mean 'steps'"
    ):
        check_params("optimize", {"stepz": 3})
    with pytest.raises(ValueError, match=r"--method spectrum --list-params"):
        check_params("spectrum", {"n_latent": 3})
    with pytest.raises(ValueError, match=r"its parameters are k, calibrate"):
        check_params("svd", {"zzz": 1})
    with pytest.raises(ValueError, match=r"unknown method 'spectrm'; did you mean 'spectrum'"):
        check_params("spectrm", {})


@pytest.mark.parametrize(
    "method, given, message",
    [
        ("optimize", {"steps": "abc"}, "optimize parameter steps must be an integer >= 0, got 'ab"),
        ("optimize", {"lr": -1}, "lr must be a finite number > 0, got -1 \\(default 0.0001\\)"),
        ("optimize", {"k": 1}, "k must be an integer >= 2"),
        ("optimize", {"seed": 2**50}, r"seed must be an integer in \[0, 2\*\*44\)"),
        ("ganspace", {"n_samples": "abc"}, "n_samples must be an integer >= 2, got 'abc'"),
        ("svd", {"target_rms": math.nan}, "target_rms must be a finite number > 0, got nan"),
        ("svd", {"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*63\)"),
        ("svd", {"seed": -1}, r"seed must be an integer in \[0, 2\*\*63\)"),
        ("svd", {"calibrate": "yes"}, "calibrate must be true or false, got 'yes'"),
        ("svd", {"label": 1.5}, r"label must be an integer >= 0 or None \(null\), got 1.5"),
        ("spectrum", {"solver": "lbfgs"}, "solver must be one of 'lobpcg', 'block', 'power'"),
        ("spectrum", {"metric": 3}, "metric must be 'auto', 'lpips-vgg'"),
        ("spectrum", {"metric": "lpips"}, "got 'lpips'"),
        ("spectrum", {"block_dtype": "float16"}, "block_dtype must be 'auto', 'float64'"),
        ("spectrum", {"n_latents": True}, "n_latents must be an integer >= 1, got True"),
        ("hybrid", {"eigenvectors": 3}, "eigenvectors must be a .nav or"),
        ("hybrid", {"spectrum_params": {"n_latent": 2}}, "hybrid spectrum_params: spectrum has "
                                                         "no parameter 'n_latent'"),
        ("hybrid", {"spectrum_params": {"k": 2}}, "spectrum parameter k is not set here: use "
                                                  "basis_size"),
        ("hybrid", {"spectrum_params": [1]}, "spectrum_params must be a dict of spectrum"),
        ("sefa", {"layers": 3.5}, "layers must be a layer index or name, a list of them, or"),
        ("sefa", {"layers": []}, "layers must be"),
    ],
)  # fmt: skip
def test_bad_values_name_the_rule_and_the_default(method, given, message):
    with pytest.raises(ValueError, match=message):
        check_params(method, given)


def test_values_are_coerced_where_safe():
    got = check_params("optimize", {"steps": 1e3, "lr": 1, "checkpoint_stem": "TRUE"})
    assert got == {"steps": 1000, "lr": 1.0, "checkpoint_stem": True}
    assert type(got["steps"]) is int and type(got["lr"]) is float
    assert check_params("spectrum", {"resize": None, "tol": None}) == {"resize": None, "tol": None}
    assert check_params("spectrum", {"block_dtype": torch.float32})["block_dtype"] is torch.float32
    nested = check_params("hybrid", {"spectrum_params": {"n_latents": 4.0, "solver": "x"}})
    assert nested["spectrum_params"] == {"n_latents": 4.0, "solver": "x"}  # values: at the run


def test_the_api_takes_objects_the_cli_cannot_pass(tiny_generator):
    from navcuda.metrics.perceptual import METRIC_NAMES, make_metric

    metric = make_metric("pixel")
    assert check_params("spectrum", {"metric": metric})["metric"] is metric
    ds = discover(tiny_generator, 3, method="svd", k=2, calibrate=False)
    assert check_params("hybrid", {"eigenvectors": ds})["eigenvectors"] is ds
    basis = torch.randn(2, 16, 16, 3, 3)
    assert check_params("hybrid", {"eigenvectors": basis})["eigenvectors"] is basis
    assert check_params("sefa", {"layers": "all"}) == {"layers": "all"}
    assert check_params("sefa", {"layers": [3, "convs.2"]}) == {"layers": [3, "convs.2"]}
    rule = table("spectrum")["metric"].rule
    assert all(repr(name) in rule for name in METRIC_NAMES)  # the rule lists every metric


def test_discover_validates_before_any_work(tiny_generator):
    """Issue 22, item 8: raw exceptions (``OptimizeConfig.__init__() got an unexpected keyword
    argument 'stepz'``, ``'<' not supported between instances of 'str' and 'int'``) become named
    errors, through ``discover`` and the method functions themselves."""
    with pytest.raises(ValueError, match="did you mean 'steps'"):
        discover(tiny_generator, 3, method="optimize", k=2, stepz=3)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 2, got 'abc'"):
        discover(tiny_generator, method="ganspace", k=2, n_samples="abc")
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got 'abc'"):
        discover_optimize(tiny_generator, 3, k=2, steps="abc")
    with pytest.raises(ValueError, match="did you mean 'steps'"):
        discover_optimize(tiny_generator, 3, k=2, stepz=3)
    with pytest.raises(ValueError, match="svd parameter k must be an integer >= 1, got 0"):
        discover(tiny_generator, 3, method="svd", k=0)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        discover(tiny_generator, 3, method="nope")
    # the values of a hybrid's spectrum_params, where its spectrum run starts
    bad = {"spectrum_params": {"solver": "nope"}, "basis_size": 2, "steps": 1}
    with pytest.raises(ValueError, match="hybrid spectrum_params: spectrum parameter solver"):
        discover(tiny_generator, 3, method="hybrid", k=2, **bad)


@pytest.mark.parametrize("method, cap", [("svd", 16), ("ganspace", 32), ("sefa", 32)])
def test_k_beyond_what_the_method_finds_warns_and_is_capped(tiny_generator, method, cap):
    """Issue 22, item 10: ``k`` larger than the rank was capped without a word."""
    hp = {"n_samples": 64} if method == "ganspace" else {}
    assert max_directions(tiny_generator, 3, method)[0] == cap
    with pytest.warns(FewerDirectionsWarning, match=f"asked for k=100000 .* is {cap}: returning"):
        ds = discover(tiny_generator, 3, method=method, k=100_000, calibrate=False, **hp)
    assert len(ds) == cap
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewerDirectionsWarning)
        assert len(discover(tiny_generator, 3, method=method, k=cap, calibrate=False, **hp)) == cap
    assert max_directions(tiny_generator, 3, "optimize") is None  # learns any number


def test_describe_lists_name_type_default_rule_meaning():
    text = describe("spectrum")
    header = text.splitlines()[1].split()
    assert header == ["name", "type", "default", "rule", "meaning"]
    row = next(line for line in text.splitlines() if line.split()[:1] == ["n_latents"])
    assert row.split()[1:4] == ["int", "512", ">="] and "paper: 512" in row
