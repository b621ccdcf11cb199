"""Analysis: Lyapunov spectra, gradient flossing, Jacobian norms and update diagnostics.

Pure functions of cells and arrays; nothing here depends on the training loop.
"""

from ._bench import bench_lyapunov
from ._diagnostics import cosine, global_alignment, local_alignment, update_efficiency
from ._flossing import floss, flossing_loss
from ._jacobian import AdaptiveAlpha, adaptive_alpha, jacobian_norms, update_alpha
from ._lyapunov import lyapunov_spectrum, max_lyapunov

__all__ = [
    "lyapunov_spectrum", "max_lyapunov",
    "flossing_loss", "floss",
    "jacobian_norms", "adaptive_alpha", "update_alpha", "AdaptiveAlpha",
    "update_efficiency", "cosine", "local_alignment", "global_alignment",
    "bench_lyapunov",
]
