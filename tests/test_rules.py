"""Every learning rule × every forcing under jit and an ensemble vmap (table-driven), with the
rules that have an exact oracle checked against it; truncated BPTT; gradient alignment."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.experiments import FORCINGS as FORCING_ENTRIES
from errorforcing.experiments import RULES as RULE_ENTRIES
from errorforcing.experiments import ForcingConfig, RuleConfig
from errorforcing.experiments._registry import ONLINE_RULES as ONLINE_RULE_KINDS
from errorforcing.forcing import NoForcing, TeacherForcing, process_noise
from errorforcing.rules import BPTT, AbstractLearningRule, Objective, TruncatedBPTT, gradient_alignment

from rule_helpers import ALL, BATCH, N, T, assert_trees_close, make_cell, make_trials

OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)


pytestmark = pytest.mark.usefixtures("fast_compile")


class DetachedBPTT(AbstractLearningRule):
    """Oracle for e-prop with B = W_outᵀ: autodiff BPTT of the leaky RNN in which only each unit's
    dependence on the other units' past is detached (their rates enter as constants; the
    weights that multiply them still get gradients):

        h_t = (1 - a) h̃ + a (diag(W) φ(h̃) + (W - diag(W)) sg(φ(h̃)) + W_in x_t + b)
    """

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)

        def detached(c, h, x):
            a, r = c.leak, c.phi(h)
            diag = jnp.diagonal(c.W_rec)
            return (1 - a) * h + a * (diag * r + (c.W_rec - jnp.diag(diag)) @ jax.lax.stop_gradient(r)
                                      + c.W_in @ x + c.b)

        def loss(c):
            def trial(x, y, m, xi):
                def step(state, xs):
                    h_prev, fcarry = state
                    x_t, y_t, m_t, xi_t = xs
                    h = detached(c, h_prev, x_t) + xi_t
                    out = c.readout(h)
                    h_forced, fcarry = forcing(h, out, y_t, m_t, c, fcarry)
                    return (h_forced, fcarry), (h_forced, out)

                return jax.lax.scan(step, (c.init_state(), forcing.init(c)), (x, y, m, xi))[1]

            states, outputs = jax.vmap(trial)(trials.inputs, trials.targets, trials.mask, noise)
            return objective(c, states, outputs, trials)

        value, grads = eqx.filter_value_and_grad(loss)(cell)
        return value, grads, {}


# The table is the registry's (experiments.RULES / FORCINGS, each built by its entry from its
# config class), so a rule or forcing is tested here the moment it is registered. The options a
# variant is tested with, where its defaults are not the ones wanted:
RULE_OPTIONS = {"tbptt": dict(truncation=3), "rflo": dict(feedback="random")}
ONLINE_OPTIONS = dict(online=True, online_lr=0.05)
FORCING_OPTIONS = {"kalman": dict(process_noise=1.0, obs_noise=0.5 ** 0.5)}
# forcing cases beyond one per kind: (kind, options)
FORCING_EXTRAS = {"ef-causal": ("ef", dict(causal=True))}
# registered forcings this table cannot run, with the reason (a stale entry fails a test below)
NOT_IN_TABLE = {"wz-tf": "acts on the Williams-Zipser network only (tests/test_wz_phase.py)"}


def _forcing_builder(kind: str, options: dict):
    config = ForcingConfig(kind=kind, **options)
    return lambda cell, alpha, key: FORCING_ENTRIES[kind].build(config, alpha, cell, key)


# forcings are built per member (α differs between members, as in the ensemble trainer)
FORCINGS = {kind: _forcing_builder(kind, FORCING_OPTIONS.get(kind, {}))
            for kind in FORCING_ENTRIES if kind not in NOT_IN_TABLE}
FORCINGS |= {name: _forcing_builder(kind, options) for name, (kind, options) in FORCING_EXTRAS.items()}
RULES = {kind: RULE_ENTRIES[kind].build(RuleConfig(kind=kind, **RULE_OPTIONS.get(kind, {})), jax.random.key(3))
         for kind in RULE_ENTRIES}
RULES["oracle"] = DetachedBPTT()
ONLINE_RULES = {f"{kind}-online": RULE_ENTRIES[kind].build(
                    RuleConfig(kind=kind, **RULE_OPTIONS.get(kind, {}), **ONLINE_OPTIONS), jax.random.key(4))
                for kind in ONLINE_RULE_KINDS}
# rule -> the rule whose gradient it must equal, and for which forcings (the oracle of e-prop
# is checked where the trace sees a different forcing Jacobian: none, a causal correction, a
# correction through F; error and Kalman forcing act like feedback forcing, and teacher
# forcing's flowing W⁺ path is one e-prop does not follow)
REFERENCE = {"rtrl": ("bptt", tuple(FORCINGS)), "eprop": ("oracle", ("none", "ef-causal", "feedback")),
             # SnAp-2 on this dense net is RTRL, SnAp-1 is e-prop's trace, except for teacher forcing's
             # flowing W⁺ path, which neither follows beyond one step (tests/test_snap.py)
             "snap2": ("rtrl", tuple(f for f in FORCINGS if f != "tf")),
             "snap1": ("eprop", tuple(f for f in FORCINGS if f != "tf"))}
ALL_CASES = [(r, f) for r in {**RULES, **ONLINE_RULES} if r != "oracle" for f in FORCINGS]
# By default every rule runs under error forcing and one other forcing in turn (each forcing met by
# 3 rules), e-prop under each forcing its oracle is checked on; the whole table is `-m slow`
# (RTRL = BPTT under every forcing is also tests/test_rtrl.py's, SnAp's equalities tests/test_snap.py's).
_OTHERS = [f for f in FORCINGS if f != "ef"]
DEFAULT_CASES = {(r, f) for i, r in enumerate(r for r in {**RULES, **ONLINE_RULES} if r != "oracle")
                 for f in ("ef", _OTHERS[i % len(_OTHERS)])}
DEFAULT_CASES |= {("eprop", f) for f in REFERENCE["eprop"][1]} | {("rtrl", "tf"), ("rtrl-online", "tf")}
CASES = [pytest.param(r, f, marks=() if (r, f) in DEFAULT_CASES else pytest.mark.slow) for r, f in ALL_CASES]


def _with_references(cases: set[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The cases and, transitively, the (reference rule, forcing) pairs they are checked against."""
    needed, todo = set(), list(cases)
    while todo:
        rule_name, forcing_name = todo.pop()
        if (rule_name, forcing_name) not in needed:
            needed.add((rule_name, forcing_name))
            reference, forcings = REFERENCE.get(rule_name, (None, ()))
            if forcing_name in forcings:
                todo.append((reference, forcing_name))
    return frozenset(needed)


@functools.cache
def ensemble():
    """Two members: different networks and forcing strengths α, one shared batch."""
    keys = jax.random.split(jax.random.key(2024), 2)
    cells = eqx.filter_vmap(make_cell)(keys)
    trials = make_trials(jax.random.key(99))
    return keys, cells, jnp.array([0.3, 0.8]), trials


def run(rule_name: str, forcing_name: str):
    """(loss, grads) of each member, for one rule and forcing."""
    default = _with_references(DEFAULT_CASES)
    return run_table(default if (rule_name, forcing_name) in default else _with_references(set(ALL_CASES)))[
        rule_name, forcing_name]


@functools.cache
def run_table(pairs: frozenset[tuple[str, str]]):
    # the table is one compiled program: with programs this small, compiling is what costs, and
    # one program compiles in about half the time of one per rule
    keys, cells, alphas, trials = ensemble()
    rules = {**RULES, **ONLINE_RULES}

    @eqx.filter_jit
    @eqx.filter_vmap
    def member(cell, alpha, key):
        out = {}
        for rule_name, forcing_name in sorted(pairs):
            forcing = FORCINGS[forcing_name](cell, alpha, key)
            loss, grads, _ = rules[rule_name].value_and_grad(cell, forcing, trials, key=jax.random.key(5),
                                                             objective=OBJECTIVE)
            out[rule_name, forcing_name] = loss, grads
        return out

    return member(cells, alphas, keys)


def test_the_table_is_every_registered_variant():
    """A rule or forcing registered without being run here would be untested: the table's kinds
    are the registries', and each exclusion names a registered kind."""
    assert set(RULES) - {"oracle"} == set(RULE_ENTRIES)
    assert set(ONLINE_RULES) == {f"{k}-online" for k in ONLINE_RULE_KINDS} and ONLINE_RULE_KINDS
    assert set(FORCING_ENTRIES) == (set(FORCINGS) - set(FORCING_EXTRAS)) | set(NOT_IN_TABLE)
    assert set(NOT_IN_TABLE) <= set(FORCING_ENTRIES) and not set(NOT_IN_TABLE) & set(FORCINGS)
    assert {r for r, _ in DEFAULT_CASES} == set(RULES) - {"oracle"} | set(ONLINE_RULES)
    assert all(type(rule).__name__ != "RFLO" or rule.feedback == "random" for rule in RULES.values())


@pytest.mark.parametrize("rule_name, forcing_name", CASES)
def test_rule_runs_jitted_over_an_ensemble(rule_name, forcing_name):
    loss, grads = run(rule_name, forcing_name)
    _, cells, _, _ = ensemble()
    assert loss.shape == (2,) and bool(jnp.all(jnp.isfinite(loss)))
    # BPTT's gradient structure: an array on every float leaf of the cell
    assert jax.tree.structure(grads) == jax.tree.structure(eqx.filter(cells, eqx.is_inexact_array))
    for g in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.max(jnp.abs(grads.W_rec))) > 0
    reference, forcings = REFERENCE.get(rule_name, (None, ()))
    if forcing_name in forcings:
        ref_loss, ref_grads = run(reference, forcing_name)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
        assert_trees_close(grads, ref_grads)


def test_local_rules_are_not_exact_for_a_real_recurrence():
    """e-prop and RFLO drop terms; with a dense W_rec they must differ from BPTT (the table's
    equalities are not vacuous)."""
    _, bptt = run("bptt", "ef")
    for name in ("eprop", "rflo", "tbptt"):
        _, grads = run(name, "ef")
        assert not np.allclose(grads.W_rec, bptt.W_rec, rtol=1e-3)
    _, rtrl = run("rtrl", "tf")
    _, online = run("rtrl-online", "tf")
    assert not np.allclose(online.W_rec, rtrl.W_rec, rtol=1e-3)


# ----- truncated BPTT -----


def test_truncation_at_or_beyond_trial_length_is_bptt(getkey):
    cell, trials, key = make_cell(getkey(), readout="rate"), make_trials(getkey()), getkey()
    forcing = TeacherForcing(alpha=0.5)  # its W⁺ gradient must survive the truncation

    @eqx.filter_jit
    def all_rules(cell):
        return [rule.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)[:2]
                for rule in (BPTT(), TruncatedBPTT(T), TruncatedBPTT(T + 5))]

    (ref_loss, ref_grads), *truncated = all_rules(cell)
    for loss, grads in truncated:
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        assert_trees_close(grads, ref_grads, rtol=1e-12)


def test_truncation_one_is_the_one_step_gradient(getkey):
    """TBPTT(1), no forcing, state readout, derived by hand: with g_t = ∂ℓ_t/∂h_t,
    ∂L/∂W_rec = Σ a g_t φ(h_{t-1})ᵀ, ∂L/∂W_in = Σ a g_t x_tᵀ, ∂L/∂b = Σ a g_t,
    ∂L/∂W_out = Σ δ_t h_tᵀ + readout penalty, ∂L/∂b_out = Σ δ_t, δ_t = 2 m_t (y_t - y*_t) / Σ m."""
    cell, trials = make_cell(getkey()), make_trials(getkey())
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2)
    loss, grads, _ = eqx.filter_jit(TruncatedBPTT(1).value_and_grad)(cell, NoForcing(), trials, key=getkey(),
                                                                      objective=objective)

    W, W_in, b, W_out, b_out = (np.asarray(getattr(cell, f)) for f in ALL)
    x, target, m = (np.asarray(a) for a in trials[:3])
    a = cell.leak
    n_mask = m.sum()
    rate = objective.rate_reg / (T * N * BATCH)
    g = {f: np.zeros_like(getattr(cell, f)) for f in ALL}
    for i in range(BATCH):
        h_prev = np.zeros(N)
        for t in range(T):
            h = (1 - a) * h_prev + a * (W @ np.tanh(h_prev) + W_in @ x[i, t] + b)
            y = W_out @ h + b_out
            delta = 2 * m[i, t] * (y - target[i, t]) / n_mask
            g_h = W_out.T @ delta + 2 * rate * h
            g["W_rec"] += a * np.outer(g_h, np.tanh(h_prev))
            g["W_in"] += a * np.outer(g_h, x[i, t])
            g["b"] += a * g_h
            g["W_out"] += np.outer(delta, h)
            g["b_out"] += delta
            h_prev = h
    # readout penalty for n_out > 1: (1 - s_max/(s_min + 1e-8))², with ∂s_i/∂W = u_i v_iᵀ
    U, s, Vt = np.linalg.svd(W_out, full_matrices=False)
    ratio = s[0] / (s[-1] + 1e-8)
    d_ratio = np.outer(U[:, 0], Vt[0]) / (s[-1] + 1e-8) - s[0] * np.outer(U[:, -1], Vt[-1]) / (s[-1] + 1e-8) ** 2
    g["W_out"] += objective.readout_reg * 2 * (1 - ratio) * (-d_ratio)
    for f in ALL:
        np.testing.assert_allclose(getattr(grads, f), g[f], rtol=1e-10, atol=1e-14)


def test_truncation_rejects_nonpositive_window():
    with pytest.raises(ValueError, match="k must be >= 1"):
        TruncatedBPTT(0)


# ----- gradient alignment -----


def test_gradient_alignment_per_group():
    _, bptt = run("bptt", "ef")
    one = jax.tree.map(lambda g: g[0], bptt)
    same = gradient_alignment(one, one)
    assert set(same) == {"W_rec", "W_in", "b", "W_out", "b_out", "all"}
    for v in same.values():
        np.testing.assert_allclose(v, 1.0, rtol=1e-12)
    flipped = gradient_alignment(one, jax.tree.map(lambda g: -g, one))
    np.testing.assert_allclose(flipped["W_rec"], -1.0, rtol=1e-12)
    half = eqx.tree_at(lambda g: g.W_rec, one, jnp.where(jnp.eye(N, dtype=bool), one.W_rec, 0.0))
    cos = gradient_alignment(half, one)["W_rec"]
    expected = np.linalg.norm(np.diag(one.W_rec)) / np.linalg.norm(one.W_rec)
    np.testing.assert_allclose(cos, expected, rtol=1e-12)
    # works on vmapped (ensemble) gradients too
    _, eprop = run("eprop", "ef")
    cos = jax.jit(jax.vmap(gradient_alignment))(eprop, bptt)
    assert cos["W_rec"].shape == (2,) and bool(jnp.all(jnp.abs(cos["W_rec"]) <= 1))
