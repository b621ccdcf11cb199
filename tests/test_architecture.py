"""Capabilities are declared, not guessed (issue 12, item 1).

(a) No module probes a cell, forcing or rule with `hasattr`/`getattr(…, default)` or tests it
    against a concrete forcing or cell class outside that class's own module (an AST scan,
    with a short allow-list whose entries say why).
(b) Every registered forcing, model and rule declares what it is consistently.
(c) A new additive forcing, defined here in one class, gets the leaky RNN's hand-written BPTT
    and RTRL (checked by spying on the path that runs) and equals autodiff in float64.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import errorforcing
from errorforcing import forcing as F
from errorforcing import models as M
from errorforcing import rules as R
from errorforcing.experiments import FORCINGS, METHOD_COLORS, MODELS, RULES, ForcingConfig, ModelConfig, RuleConfig
from errorforcing.experiments import method_label
from errorforcing.experiments._config import ADAPTIVE_FORCINGS, APPLIES, SELECTIVE_FORCINGS
from errorforcing.tasks import DelayedXOR, Trials, sample_batch

SRC = Path(errorforcing.__file__).parent

# ---------------------------------------------------------------------------------------------
# (a) the AST scan
# ---------------------------------------------------------------------------------------------

# Names a cell, forcing or rule goes by in this code base: a 3-argument getattr on one of them
# is a capability probe.
PROBED_NAMES = {"cell", "c", "forcing", "rule", "model"}

# (module relative to src/errorforcing, the call's source text) → why it is allowed
ALLOWED = {
    ("training/_shards.py", 'hasattr(os, "sched_getaffinity")'): "the OS, not a cell: Linux-only call",
    ("tasks/_neurogym.py", 'hasattr(type(layer), "new_trial")'): "walks a third-party gym wrapper stack",
    ("tasks/_neurogym.py", 'hasattr(layer, "env")'): "walks a third-party gym wrapper stack",
    ("experiments/_preflight.py", 'hasattr(leaf, "size")'): "pytree leaves of an eval_shape result, not a cell",
    ("rules/_eprop.py", "hasattr(cell, f)"): "trace rules check the LeakyRNN fields their equations read, "
                                             "naming the missing ones in the error",
    ("rules/_kfrtrl.py", 'getattr(cell, "phi", None)'): "as above, for KF-RTRL's leaky-RNN equations",
    ("rules/_eprop.py", 'getattr(cell, "phi", None)'): "as above",
    ("forcing/_control.py", 'getattr(cell, "leak", None)'): "the control input is scaled by the leak a = dt/τ, "
                                                          "which only leaky cells have",
    ("rules/_online_bptt.py", 'getattr(forcing, "stop_gradient", True)'): "a forcing without the field has "
                                                                         "no correction to stop",
    ("analysis/_jacobian.py", 'getattr(cell, "activation", None)'): "the bound needs a named activation's "
                                                                    "slope bound; others are refused",
}


def _concrete_classes():
    """{name: module} of the concrete (final) forcing and cell classes."""
    out = {}
    for package in (F, M):
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isclass(obj) and issubclass(obj, (F.AbstractForcing, M.AbstractCell)) \
                    and not name.startswith("Abstract"):
                out[name] = obj.__module__
    return out


def _class_names(node):
    """The class names a type test's second argument mentions (Name, Attribute or a tuple of them)."""
    if isinstance(node, ast.Tuple):
        return [n for e in node.elts for n in _class_names(e)]
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def _scan(module: str, source: str, concrete: dict[str, str]) -> list[str]:
    """The source text of every probe and concrete-class test in one module's `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name, args = node.func.id, node.args
            if name == "hasattr":
                hit = True
            elif name == "getattr" and len(args) == 3:
                hit = isinstance(args[0], ast.Name) and args[0].id in PROBED_NAMES and isinstance(args[1], ast.Constant)
            elif name in ("isinstance", "issubclass") and len(args) == 2:
                hit = any(n in concrete and concrete[n] != module for n in _class_names(args[1]))
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Call) \
                and isinstance(node.left.func, ast.Name) and node.left.func.id == "type":
            hit = any(n in concrete and concrete[n] != module for c in node.comparators for n in _class_names(c))
        if hit:
            found.append(ast.get_source_segment(source, node))
    return found


def _violations():
    concrete = _concrete_classes()
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        module = "errorforcing." + rel[:-3].replace("/", ".").removesuffix(".__init__")
        found += [(rel, text) for text in _scan(module, path.read_text(), concrete)]
    return found


def test_no_capability_is_guessed():
    found = _violations()
    unexplained = [f for f in found if f not in ALLOWED]
    assert not unexplained, "probe a declared capability instead (an abstract class or a ClassVar): " + \
        "; ".join(f"{m}: {t}" for m, t in unexplained)


def test_the_allow_list_is_not_stale():
    """Every allow-list entry still matches code (a removed probe takes its entry with it)."""
    found = set(_violations())
    stale = [k for k in ALLOWED if k not in found]
    assert not stale, f"remove these ALLOWED entries, their code is gone: {stale}"


def test_the_scan_finds_what_it_forbids():
    """The scan is not vacuous: planted probes and concrete-class tests are caught, the same
    test in the class's own module and a test against an abstract class are not."""
    planted = ("def f(cell, forcing):\n"
               "    a = hasattr(cell, 'W_out') or isinstance(forcing, (F.NoForcing, AbstractAdditiveForcing))\n"
               "    b = getattr(cell, 'leak', None) or type(cell) is LeakyRNN\n"
               "    return a or b or isinstance(cell, AbstractLinearReadoutCell) or isinstance(forcing, TeacherForcing)\n")
    concrete = _concrete_classes()
    assert _scan("errorforcing.rules._new", planted, concrete) == [
        "hasattr(cell, 'W_out')", "isinstance(forcing, (F.NoForcing, AbstractAdditiveForcing))",
        "getattr(cell, 'leak', None)", "type(cell) is LeakyRNN", "isinstance(forcing, TeacherForcing)"]
    own = "def f(forcing):\n    return isinstance(forcing, TeacherForcing)\n"
    assert _scan(concrete["TeacherForcing"], own, concrete) == []


# ---------------------------------------------------------------------------------------------
# (b) the registries declare their capabilities consistently
# ---------------------------------------------------------------------------------------------

TASK = DelayedXOR(delay=2)


def _cells():
    cells = {}
    for kind, entry in MODELS.items():
        cells[kind] = entry.build(ModelConfig(kind=kind, hidden=4), TASK, jax.random.key(0))
    return cells


def _forcing_config(kind):
    extra = {"process_noise": 0.1} if kind == "kalman" else {}
    return ForcingConfig(kind=kind, **extra) if kind == "none" else ForcingConfig(kind=kind, alpha=[0.5], **extra)


def _has_class_attribute(obj, name):
    return any(name in vars(k) or name in getattr(k, "__annotations__", {}) for k in type(obj).__mro__)


def test_capability_classes_add_no_fields():
    """A capability class must not add dataclass fields: a base-class field comes first in every
    subclass's field order, which is its pytree leaf order, the order of stored checkpoints
    (`eqx.tree_serialise_leaves`) and of RTRL's flattened θ."""
    import dataclasses

    names = lambda cls: [f.name for f in dataclasses.fields(cls)]  # noqa: E731
    assert names(M.AbstractLinearReadoutCell) == names(M.AbstractCell) == ["trainable"]
    assert names(F.AbstractTeacherForcing) == names(F.AbstractSelectiveForcing) == ["alpha", "interval", "units"]
    # the additive family's fields are those its private predecessor had, in the same order
    assert names(F.AbstractAdditiveForcing) == ["alpha", "interval", "units", "stop_gradient", "causal"]
    assert names(M.LeakyRNN) == ["trainable", "W_rec", "W_in", "b", "W_out", "b_out", "rec_mask", "dale_sign",
                                 "leak", "activation", "readout_mode"]
    assert names(M.LSTM) == ["trainable", "W_x", "W_h", "bias", "W_out_h", "b_out"]  # W_out is a property
    assert names(F.TeacherForcing) == ["alpha", "interval", "units", "eps", "stop_gradient"]
    assert names(F.ControlledCell) == ["trainable", "cell", "control", "learn_feedback"]


def test_every_model_declares_its_readout():
    for kind, cell in _cells().items():
        linear = isinstance(cell, M.AbstractLinearReadoutCell)
        assert linear == _has_class_attribute(cell, "W_out"), kind
        assert linear == (type(cell).forcing_geometry == "linear"), kind
        if linear:
            assert cell.W_out.shape == (TASK.n_out, cell.n_rec) and cell.b_out.shape == (TASK.n_out,), kind
        # the teacher family refuses exactly the cells that declare supports_teacher_forcing = False
        if linear and not type(cell).supports_teacher_forcing:
            with pytest.raises(TypeError, match="overwrite"):
                F.TeacherForcing().init(cell)
        elif linear:
            F.TeacherForcing().init(cell)
        # a controlled cell is a linear-readout cell exactly when the cell it wraps is one
        control = F.FeedbackControl(jnp.zeros((cell.n_rec, TASK.n_out)))
        if linear:
            assert isinstance(F.ControlledCell(cell, control), M.AbstractLinearReadoutCell)
        else:
            with pytest.raises(TypeError, match="linear readout"):
                F.ControlledCell(cell, control)


def test_every_forcing_entry_declares_what_it_builds():
    cell = _cells()["leaky"]
    for kind, entry in FORCINGS.items():
        forcing = entry.build(_forcing_config(kind), 0.5, cell, jax.random.key(1))
        assert entry.causal == isinstance(forcing, F.AbstractAdditiveForcing), kind  # the causal form is additive's
        if entry.selective:
            assert isinstance(forcing, F.AbstractSelectiveForcing), kind
            built = entry.build(_forcing_config(kind).model_copy(update={"interval": 2, "units": 3}), 0.5, cell,
                                jax.random.key(1))
            assert (built.interval, built.units) == (2, 3), kind
        if entry.adaptive:
            assert isinstance(forcing, (F.AbstractAdditiveForcing, F.AbstractTeacherForcing)), kind
        assert forcing.is_identity == (kind == "none"), kind
        assert method_label(kind, "bptt") == entry.prefix + "BPTT"
    assert set(METHOD_COLORS) <= set(FORCINGS) and len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    # the tables keyed by kind are the registry's
    assert ADAPTIVE_FORCINGS == tuple(k for k, e in FORCINGS.items() if e.adaptive)
    assert SELECTIVE_FORCINGS == APPLIES["forcing"]["interval"] == tuple(k for k, e in FORCINGS.items() if e.selective)
    assert APPLIES["forcing"]["causal"] == tuple(k for k, e in FORCINGS.items() if e.causal)


def test_every_rule_with_step_updates_is_stepwise():
    for kind in RULES:
        cfg = RuleConfig(kind=kind, **({"feedback": "random"} if kind in ("eprop", "rflo") else {}))
        rule = RULES[kind].build(cfg, jax.random.key(2))
        assert isinstance(rule, R.AbstractStepwiseRule) == _has_class_attribute(rule, "step_updates"), kind
    for name in R.__all__:
        obj = getattr(R, name)
        if inspect.isclass(obj) and issubclass(obj, R.AbstractStepwiseRule) and not name.startswith("Abstract"):
            assert not getattr(obj.step_updates, "__isabstractmethod__", False), name


# ---------------------------------------------------------------------------------------------
# (c) a new additive forcing is one class
# ---------------------------------------------------------------------------------------------


class ScaledTransposeForcing(F.AbstractAdditiveForcing):
    """A forcing only this test knows: h̃_t = h_t + c_t sg(P s W_outᵀ e_t), gain G = s W_outᵀ."""

    alpha: float | jax.Array = 0.5
    scale: float = 3.0
    stop_gradient: bool = True
    causal: bool = False

    def gain(self, cell):
        return self.scale * cell.W_out.T


def _problem(getkey):
    task = DelayedXOR(delay=2)
    cell = M.LeakyRNN(task.n_in, 5, task.n_out, key=getkey(), dtype=jnp.float64)
    trials = sample_batch(task, 3, key=getkey())
    trials = Trials(trials.inputs.astype(jnp.float64), trials.targets.astype(jnp.float64),
                    trials.mask.astype(jnp.float64), trials.info)
    return cell, trials


@pytest.mark.parametrize("forcing", [ScaledTransposeForcing(),
                                     ScaledTransposeForcing(alpha=0.7, causal=True, interval=2, units=(0, 3))],
                         ids=["plain", "causal-sparse-partial"])
def test_a_new_additive_forcing_gets_the_fast_paths(getkey, forcing, monkeypatch):
    import errorforcing.rules._bptt as bptt_module
    import errorforcing.rules._rtrl as rtrl_module

    calls = []

    def spy(name, real):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(bptt_module, "leaky_bptt", spy("bptt", bptt_module.leaky_bptt))
    monkeypatch.setattr(rtrl_module, "leaky_rtrl", spy("rtrl", rtrl_module.leaky_rtrl))
    cell, trials = _problem(getkey)
    key, objective = getkey(), R.Objective(noise_std=0.05)

    assert R.BPTT().uses_fast_path(cell, forcing)
    loss, grads, _ = R.BPTT().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    assert calls == ["bptt"]
    ref_loss, ref, _ = R.BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=objective)
    assert calls == ["bptt"]  # the oracle is plain autodiff
    assert jnp.allclose(loss, ref_loss, rtol=1e-12, atol=0)
    for field in cell.trainable:
        assert jnp.allclose(getattr(grads, field), getattr(ref, field), rtol=1e-9, atol=1e-12), field
    assert float(jnp.linalg.norm(grads.W_rec)) > 0

    rtrl_objective = R.Objective()
    _, g_fast, _ = R.RTRL().value_and_grad(cell, forcing, trials, key=key, objective=rtrl_objective)
    assert calls == ["bptt", "rtrl"]
    _, g_bptt, _ = R.BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=rtrl_objective)
    for field in cell.trainable:
        assert jnp.allclose(getattr(g_fast, field), getattr(g_bptt, field), rtol=1e-9, atol=1e-12), field

    # the trace rules' κ and the diagnostics' gain come from the declared family too
    h = jnp.ones(cell.n_rec)
    assert jnp.array_equal(forcing.state_jacobian_diagonal(h, trials.targets[0, 0], trials.mask[0, 0], cell,
                                                           forcing.init(cell)), jnp.ones(cell.n_rec))
    from errorforcing.training import forcing_gain

    p = jnp.ones(cell.n_rec) if forcing.units is None else jnp.zeros(cell.n_rec).at[jnp.array(forcing.units)].set(1.0)
    assert jnp.array_equal(forcing_gain(forcing, cell), p[:, None] * (3.0 * cell.W_out.T))  # P G, as applied


def test_a_new_additive_forcing_with_flowing_gradient_takes_autodiff(getkey):
    """Not stopped, the correction's gradient flows: the fast paths are not for it, and the trace
    rules' κ is the exact diagonal of its Jacobian, 1 - c s (W_outᵀ diag(m) W_out)_ii."""
    forcing = ScaledTransposeForcing(stop_gradient=False)
    cell, trials = _problem(getkey)
    assert not R.BPTT().uses_fast_path(cell, forcing)
    m = jnp.ones(cell.W_out.shape[0])
    kappa = forcing.state_jacobian_diagonal(jnp.zeros(cell.n_rec), m, m, cell, forcing.init(cell))
    expected = 1 - 0.5 * 3.0 * jnp.sum(cell.W_out * cell.W_out, axis=0)
    assert jnp.allclose(kappa, expected, rtol=1e-12)
