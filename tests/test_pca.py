"""PCA against numpy's SVD on synthetic rank-2 data; condition labels and averages by hand."""

import numpy as np
import pytest

from errorforcing.analysis import condition_average, condition_labels, pca


def rank2(rng, n=400, N=10):
    basis = np.linalg.qr(rng.standard_normal((N, 2)))[0]
    latent = rng.standard_normal((n, 2)) * np.array([3.0, 1.0])
    return latent @ basis.T + rng.standard_normal(N) * 5.0  # an offset the mean must remove


def test_pca_matches_numpy_svd_on_rank_2_data():
    rng = np.random.default_rng(0)
    X = rank2(rng)
    fit = pca(X.reshape(20, 20, -1), 3)  # leading axes are all samples
    centred = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2 / (len(X) - 1)
    np.testing.assert_allclose(fit.explained_variance, var[:3], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fit.explained_variance_ratio, var[:3] / var.sum(), rtol=1e-10, atol=1e-12)
    assert fit.explained_variance_ratio[:2].sum() == pytest.approx(1.0, abs=1e-12)
    assert fit.participation_ratio == pytest.approx(var.sum() ** 2 / np.sum(var ** 2), rel=1e-10)
    assert 1.0 < fit.participation_ratio < 2.0  # variances 9 and 1: PR = 100/82
    for k in range(2):  # same axes up to sign
        assert abs(abs(fit.components[k] @ Vt[k]) - 1) < 1e-10
    proj = fit.project(X)
    np.testing.assert_allclose(np.abs(proj[:, :2]), np.abs(centred @ Vt[:2].T), atol=1e-8)
    np.testing.assert_allclose(proj[:, 2], 0.0, atol=1e-8)
    np.testing.assert_allclose(fit.directions(Vt[0]), fit.components @ Vt[0])


def test_isotropic_data_has_participation_ratio_near_n():
    X = np.random.default_rng(1).standard_normal((20000, 5))
    assert pca(X, 5).participation_ratio == pytest.approx(5.0, rel=0.02)


def test_pca_bad_arguments():
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match="k must be"):
        pca(X, 5)
    with pytest.raises(ValueError, match="at least 2"):
        pca(X[:1], 1)


def test_condition_labels_of_delayed_xor_info_and_averages():
    s1 = np.array([1, 1, -1, -1, 1, -1, 1, 1.0])
    s2 = np.array([1, -1, 1, -1, 1, 1, -1, 1.0])
    info = {"s1": s1, "s2": s2, "label": s1 * s2, "response_start": np.arange(8) + 30}
    codes, names = condition_labels(info)
    assert len(names) == 4 and all(n.startswith("s1=") and "s2=" in n and "label" not in n for n in names)
    for c, name in enumerate(names):  # each trial's name matches its s1, s2
        for i in np.flatnonzero(codes == c):
            assert name == f"s1={int(s1[i])} s2={int(s2[i])}"
    states = np.random.default_rng(2).standard_normal((8, 5, 3))
    avg = condition_average(states, codes)
    assert avg.shape == (4, 5, 3)
    for c in range(4):
        np.testing.assert_allclose(avg[c], states[codes == c].mean(axis=0))
    codes, names = condition_labels(info, keys=("label",))
    assert sorted(names) == ["label=-1", "label=1"]
    with pytest.raises(ValueError, match="keys"):
        condition_labels(info, keys=("nope",))
