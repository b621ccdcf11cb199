"""Williams & Zipser's teacher forcing: output units take the teacher's value (SPEC §2)."""

from __future__ import annotations

import jax

from ._base import AbstractForcing


class WilliamsZipserTeacherForcing(AbstractForcing):
    """Teacher forcing of Williams & Zipser (1989, eq. 2.17): where a target d_k(t) exists, the
    output unit's value is replaced by it in all later computation,

        h̃_k = (1 - c_k) h_k + c_k d_k    for output units k (the first n_out units),  c_k = α m_k
        h̃_k = h_k                        for the other units

    With α = 1 (the paper) forced units take exactly d_k and carry no gradient to the past,
    so their RTRL sensitivities are zeroed (eq. 2.19) — which is what autodiff of the
    replaced trajectory gives too. Unlike the linear-readout forcings, the mask is used per
    unit. Needs a cell whose outputs are its first units (`forcing_geometry == "units"`, e.g.
    `WilliamsZipserNet`).
    """

    alpha: float | jax.Array = 1.0

    def __check_init__(self):
        if isinstance(self.alpha, (int, float)) and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"WilliamsZipserTeacherForcing.alpha must be in [0, 1], got {self.alpha}")

    def init(self, cell):
        if cell.forcing_geometry != "units":
            raise TypeError(f"WilliamsZipserTeacherForcing needs a cell whose outputs are its first units "
                            f"(forcing_geometry 'units'); {type(cell).__name__} has {cell.forcing_geometry!r}")
        return None

    def __call__(self, h, y, target, mask, cell, carry):
        n_out = target.shape[-1]
        c = self.alpha * mask
        outputs = (1 - c) * h[:n_out] + c * target
        return h.at[:n_out].set(outputs), carry
