"""The Lyapunov-spectrum figure of `errorforcing analyze lyapunov`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def spectrum_figure(spectra: np.ndarray, alphas: list[float], path: str | Path, *, title: str = "",
                    formats=("png",)) -> list[Path]:
    """λ_i against i (per step), one line per member ([M, k] `spectra`) coloured by its α; the
    dashed line is λ = 0 (the edge of chaos gradient flossing aims for)."""
    spectra = np.asarray(spectra, float)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    levels = sorted(set(alphas))
    cmap = plt.get_cmap("viridis", max(len(levels), 2))
    index = np.arange(1, spectra.shape[1] + 1)
    seen = set()
    for lam, alpha in zip(spectra, alphas):
        label = None if alpha in seen else f"α={alpha:g}"
        seen.add(alpha)
        ax.plot(index, lam, marker="o" if len(index) <= 20 else None, ms=3, lw=0.9, alpha=0.8,
                color=cmap(levels.index(alpha)), label=label)
    ax.axhline(0.0, ls="--", color="k", lw=0.8)
    ax.set_xlabel("exponent index i")
    ax.set_ylabel("Lyapunov exponent λ_i (per step)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        p = path if path.suffix.lstrip(".") == fmt else path.with_suffix("." + fmt)
        fig.savefig(p, dpi=120, bbox_inches="tight")
        written.append(p)
    plt.close(fig)
    return written
