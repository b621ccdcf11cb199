"""`leaky_dynamics`: the declared capability that selects the rules' hand-written leaky-RNN BPTT
and RTRL (it replaced `type(cell) is LeakyRNN`). A subclass that keeps LeakyRNN's step gets the
fast paths with bit-identical results; one that overrides the step is refused them (autodiff),
unless it declares `leaky_dynamics` itself."""

import jax
import jax.numpy as jnp
import pytest

import errorforcing.rules._bptt as bptt_module
import errorforcing.rules._rtrl as rtrl_module
from errorforcing import forcing as F
from errorforcing import models as M
from errorforcing import rules as R
from errorforcing.tasks import DelayedXOR, Trials, sample_batch


class NamedLeakyRNN(M.LeakyRNN):
    """The leaky RNN's step unchanged, plus a method: its fast paths still apply."""

    def describe(self) -> str:
        return f"leaky RNN, N = {self.n_rec}"


class HalvedStepRNN(M.LeakyRNN):
    """Another step (half the leaky update): the hand-written paths would compute the wrong gradient."""

    def __call__(self, h, x):
        return 0.5 * super().__call__(h, x)


def _problem(cls):
    task = DelayedXOR(delay=2)
    cell = cls(task.n_in, 5, task.n_out, key=jax.random.key(0), dtype=jnp.float64,
               trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    t = sample_batch(task, 3, key=jax.random.key(1))
    trials = Trials(*(a.astype(jnp.float64) for a in (t.inputs, t.targets, t.mask)), t.info)
    return cell, trials


def _spy(monkeypatch):
    calls = []
    for module, name in ((bptt_module, "leaky_bptt"), (rtrl_module, "leaky_rtrl")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1])
    return calls


def _grads(cell, forcing, trials, rule):
    return rule.value_and_grad(cell, forcing, trials, key=jax.random.key(2), objective=R.Objective(noise_std=0.05))[:2]


def test_the_declaration_follows_the_step():
    assert M.LeakyRNN.leaky_dynamics and NamedLeakyRNN.leaky_dynamics
    assert not HalvedStepRNN.leaky_dynamics
    assert not M.GRU.leaky_dynamics and not M.LSTM.leaky_dynamics and not M.WilliamsZipserNet.leaky_dynamics

    class DeclaredHalvedStep(HalvedStepRNN):  # an explicit declaration wins
        leaky_dynamics = True

    assert DeclaredHalvedStep.leaky_dynamics


@pytest.mark.parametrize("forcing", [F.NoForcing(), F.ErrorForcing(alpha=0.5)], ids=["none", "ef"])
def test_a_subclass_with_the_leaky_step_takes_the_fast_paths_bit_identically(forcing, monkeypatch):
    base, trials = _problem(M.LeakyRNN)
    sub = NamedLeakyRNN(*(base.W_in.shape[1], base.n_rec, base.W_out.shape[0]), key=jax.random.key(0),
                        dtype=jnp.float64, trainable=base.trainable)
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(sub)))
    calls = _spy(monkeypatch)
    for rule in (R.BPTT(), R.RTRL()):
        ref_loss, ref = _grads(base, forcing, trials, rule)
        loss, grads = _grads(sub, forcing, trials, rule)
        assert loss == ref_loss
        assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)))
    assert calls == ["leaky_bptt", "leaky_bptt", "leaky_rtrl", "leaky_rtrl"]


def test_a_subclass_with_another_step_is_refused_the_fast_paths(monkeypatch):
    cell, trials = _problem(HalvedStepRNN)
    forcing = F.ErrorForcing(alpha=0.5)
    calls = _spy(monkeypatch)
    assert not R.BPTT().uses_fast_path(cell, forcing)
    loss, grads = _grads(cell, forcing, trials, R.BPTT())
    rtrl_loss, rtrl_grads = _grads(cell, forcing, trials, R.RTRL())
    assert calls == []
    # the generic paths are exact for the halved step (RTRL = BPTT), and differ from the leaky gradient
    assert jnp.allclose(loss, rtrl_loss, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(rtrl_grads)):
        assert jnp.allclose(a, b, rtol=1e-9, atol=1e-12)
    leaky, _ = _problem(M.LeakyRNN)  # the same weights with the leaky step
    leaky_loss, _ = _grads(leaky, forcing, trials, R.BPTT())
    assert not jnp.allclose(loss, leaky_loss)
