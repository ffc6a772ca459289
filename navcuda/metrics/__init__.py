"""Metrics: perceptual distances (LPIPS with a supplied backbone; documented fallbacks), Fréchet
distances (toy-FD on the factor regressor's features; Inception FID from a supplied weights file),
the toy world's factor regressor and the factor scores of edits."""

from navcuda.metrics.factor_regressor import (
    FactorRegressor,
    FactorRegressorError,
    load_factor_regressor,
    train_factor_regressor,
)
from navcuda.metrics.factor_scores import (
    EditScore,
    score_edit,
    score_image_edit,
    score_latent_edit,
)
from navcuda.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    inception_fd,
    toy_fd,
)
from navcuda.metrics.perceptual import (
    FeatureLPIPS,
    LPIPSMetric,
    PerceptualMetric,
    PixelMSE,
    RandomFeatureLPIPS,
    make_metric,
)

__all__ = [
    "EditScore",
    "FactorRegressor",
    "FactorRegressorError",
    "FeatureLPIPS",
    "LPIPSMetric",
    "PerceptualMetric",
    "PixelMSE",
    "RandomFeatureLPIPS",
    "feature_statistics",
    "frechet_distance",
    "inception_fd",
    "load_factor_regressor",
    "make_metric",
    "score_edit",
    "score_image_edit",
    "score_latent_edit",
    "toy_fd",
    "train_factor_regressor",
]
