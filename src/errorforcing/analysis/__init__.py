"""Analysis: Lyapunov spectra, gradient flossing, Jacobian norms, update diagnostics, fixed
points and PCA.

Pure functions of cells and arrays; nothing here depends on the training loop.
"""

from ._diagnostics import cosine, global_alignment, local_alignment, update_efficiency
from ._fixed_points import FixedPoints, find_fixed_points, linearise, sample_states, speed, unforced_states
from ._flossing import floss, flossing_loss
from ._jacobian import (ALPHA_ESTIMATORS, DEFAULT_ALPHA_ESTIMATOR, AdaptiveAlpha, adaptive_alpha, alpha_from_growth,
                        growth_estimate, jacobian_norms, jacobian_upper_bound, jacobians, spectral_norm,
                        update_alpha)
from ._lyapunov import lyapunov_spectrum, max_lyapunov
from ._pca import PCA, condition_average, condition_labels, pca

__all__ = [
    "lyapunov_spectrum", "max_lyapunov",
    "flossing_loss", "floss",
    "jacobian_norms", "adaptive_alpha", "update_alpha", "AdaptiveAlpha",
    "ALPHA_ESTIMATORS", "DEFAULT_ALPHA_ESTIMATOR", "jacobians", "spectral_norm", "growth_estimate",
    "jacobian_upper_bound", "alpha_from_growth",
    "update_efficiency", "cosine", "local_alignment", "global_alignment",
    "FixedPoints", "find_fixed_points", "linearise", "sample_states", "speed", "unforced_states",
    "PCA", "pca", "condition_average", "condition_labels",
]
