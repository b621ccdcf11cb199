"""One typed config per variant (issue 12): each model, forcing and rule kind has its own
config class, declared beside its registry entry, that takes only its own options; records,
job ids and the objects built from configs are those of before the split."""

import dataclasses
import hashlib
import json
import re

import jax
import numpy as np
import pytest
from pydantic import ValidationError

from errorforcing.experiments import TrainConfig
from errorforcing.experiments._config import (APPLIES, BPTTConfig, CustomRuleConfig, ForcingConfig,
                                              NoForcingConfig, RuleConfig, TBPTTConfig, inapplicable, is_read)
from errorforcing.experiments._registry import FORCINGS, MODELS, RULES, TASKS, Entry
from errorforcing.experiments._sweep import expand, job_id, parse_spec
from errorforcing.experiments._train import config_record
from errorforcing.experiments._variants import RECORD_LAYOUT, SECTIONS, config_class
from errorforcing.rules import AbstractTraceRule
from errorforcing.training import Analysis, Flossing

# Captured at the commit before the split (5ab775e, one flat class per section), by building
# each config there: sha256 of json.dumps(config.model_dump()) (the "config" of the stored
# record), the sweep job id, and a digest of the built cell, forcing (its first α) and rule
# in float64, with XLA's optimisations off (True: the suite's default, conftest.py) and on.
BEFORE = [
    ({},
     '188b145298a7b238', 'jb4b822ee3c8d9462',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'rule': {'kind': 'bptt', 'checkpoint': True}},
     '142173c20e69f8a3', 'j9ad745079963756c',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '78f799ca214a8ea8fd47'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '78f799ca214a8ea8fd47')}),
    ({'rule': {'kind': 'tbptt', 'truncation': 7}},
     'bb0e60af797a4e9b', 'jf33f55390bea612e',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '95aa8146bc1081bebe6d'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '95aa8146bc1081bebe6d')}),
    ({'rule': {'kind': 'tbptt', 'truncation': 50, 'checkpoint': True}},
     '2638479779fedcdb', 'jcb2255b5f7724fa3',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', 'a0f66c47e440f23df3ad'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', 'a0f66c47e440f23df3ad')}),
    ({'rule': {'kind': 'rtrl'}},
     '1a8efd757892bd3b', 'j2e20673c9ad5ce57',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '1924b3391af6daf3b2ee'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '1924b3391af6daf3b2ee')}),
    ({'rule': {'kind': 'rtrl', 'online': True, 'online_lr': 0.1}},
     'a6f619a37cfba57e', 'jc421ab1531426908',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '9745186d373813a0985d'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '9745186d373813a0985d')}),
    ({'rule': {'kind': 'eprop', 'feedback': 'random'}},
     'a7320d1e43951c0a', 'j25846776933315ae',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '99c978776e338beca718'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '99c978776e338beca718')}),
    ({'rule': {'kind': 'eprop', 'online': True, 'online_lr': 0.05, 'online_optimizer': 'adam'}},
     'be07678544bcddd8', 'j34d10d9a0c526405',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5e0e9f65e2ff2eb118e6'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5e0e9f65e2ff2eb118e6')}),
    ({'rule': {'kind': 'rflo', 'feedback': 'random', 'online': True, 'online_lr': 0.01}},
     'bc2765346565ed29', 'je63758700cf6be7a',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '17e83f3c5042f0db3e48'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '17e83f3c5042f0db3e48')}),
    ({'rule': {'kind': 'uoro'}},
     '887b774dbdcf9cfd', 'j60b085e023cbb91c',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '8c094974195b96d4fe2a'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '8c094974195b96d4fe2a')}),
    ({'rule': {'kind': 'kf-rtrl'}},
     '30e114f445201850', 'j7565a1e697474da5',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', 'a8041993e82b758823cb'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', 'a8041993e82b758823cb')}),
    ({'rule': {'kind': 'snap1'}},
     '32a9a228bde4ac71', 'jf9ba1d985f0e92d8',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '38672dc267fc36bf8f96'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '38672dc267fc36bf8f96')}),
    ({'rule': {'kind': 'snap2', 'online': True, 'online_lr': 0.2}},
     'a2f6fae8e2f0fd59', 'jfacbf8c849ed3d4d',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', 'c0f6b19a61ea2843ff59'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', 'c0f6b19a61ea2843ff59')}),
    ({'rule': {'kind': 'bptt', 'log_alignment': True}},
     '8046f18bea6dcd89', 'jbedeb56cb03976d9',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'none'}},
     'dde5fa01cffcda8b', 'ja5f69eeb1ace9ab9',
     {True: ('5a18f2b49bad60a9f1a8', 'cfc1d0964899f8fd7d84', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'cfc1d0964899f8fd7d84', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'none', 'alpha': [0.0]}},
     'dde5fa01cffcda8b', 'ja5f69eeb1ace9ab9',
     {True: ('5a18f2b49bad60a9f1a8', 'cfc1d0964899f8fd7d84', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'cfc1d0964899f8fd7d84', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'tf', 'alpha': [0.1, 0.5]}},
     'b0b7c928bec3cd68', 'j5b7a93f9ef8fe83d',
     {True: ('5a18f2b49bad60a9f1a8', '1273508fb786feea9ff9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '1273508fb786feea9ff9', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'tf', 'alpha': 0.3, 'stop_gradient': True, 'interval': 3, 'units': 10}},
     '9b81d3fad3eede1d', 'j5286ff986682ca40',
     {True: ('5a18f2b49bad60a9f1a8', '05f252dccf3ec30371fd', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '05f252dccf3ec30371fd', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'ef', 'causal': True, 'alpha': [0.2]}},
     'b6e2df1589255073', 'j8f27ea4a5ebc64f7',
     {True: ('5a18f2b49bad60a9f1a8', '55b5b1ea1634431919d9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '55b5b1ea1634431919d9', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'ef', 'adaptive': True}},
     '0cb0ca6b4055fa82', 'jb954280859850795',
     {True: ('5a18f2b49bad60a9f1a8', 'e2ee2b39aac579615dc4', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'e2ee2b39aac579615dc4', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'ef', 'adaptive': True, 'alpha': [0.9], 'alpha_estimator': 'batch-maximum'}},
     '7fde748445271995', 'j4569314fc9205cb1',
     {True: ('5a18f2b49bad60a9f1a8', 'c97527f690cc144d8d95', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'c97527f690cc144d8d95', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'ef', 'eps': 1e-05, 'stop_gradient': False}},
     '95c6c4312a931096', 'j7b052c7e0fc4e261',
     {True: ('5a18f2b49bad60a9f1a8', '27cc2e535389e5dff140', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '27cc2e535389e5dff140', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'kalman', 'process_noise': 0.1}},
     '69dfcff649e93310', 'j7b044fd3911c9064',
     {True: ('5a18f2b49bad60a9f1a8', '0ebd26617faefd89db84', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '0ebd26617faefd89db84', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'kalman', 'process_noise': 0.1, 'obs_noise': 0.3, 'causal': True, 'units': 5}},
     'eae5a226f523aef7', 'j66a26f21d1c7a554',
     {True: ('5a18f2b49bad60a9f1a8', 'c05f387694f04ee08d48', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'c05f387694f04ee08d48', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'feedback', 'learn_feedback': True, 'causal': True}},
     '0bb6b6356e9d67c2', 'j14f52c29df81cf04',
     {True: ('5a18f2b49bad60a9f1a8', 'a90e89569dc9a608ece1', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'b184ac08914d516c51f0', '5c033e3a69a7394b78c9')}),
    ({'forcing': {'kind': 'feedback', 'options': {'feedback_lr': 0.01}}, 'rule': {'kind': 'rflo'}},
     '8e9a2b0be08f3d96', 'j8fc7d8384830f224',
     {True: ('5a18f2b49bad60a9f1a8', 'b2a0fb5265610fe09521', 'cac1e26fef81ebadc2be'),
      False: ('77e9ae475c93a6c0e5bb', '7696683a3b5e76c2f701', 'cac1e26fef81ebadc2be')}),
    ({'forcing': {'kind': 'tf', 'adaptive': True}},
     '221c69c253b7aae7', 'j8c46911b2c50bb5d',
     {True: ('5a18f2b49bad60a9f1a8', 'a9a792d655204d0649b7', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', 'a9a792d655204d0649b7', '5c033e3a69a7394b78c9')}),
    ({'model': {'kind': 'leaky', 'hidden': 8, 'gain': 0.9, 'tau': 5.0, 'dt': 0.5, 'activation': 'relu', 'readout': 'rate', 'density': 0.5, 'trainable': ['W_rec', 'W_out'], 'noise_std': 0.1}},
     '4edd706aafb3008c', 'j10ade7f99514cfa3',
     {True: ('5d087ba40b41d2c93d0f', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('27c93239dbfaa34a8890', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'model': {'kind': 'leaky', 'excitatory': 0.8}},
     '172296c9e6f307fb', 'j0f7d8652f5044bca',
     {True: ('9fff36ba451ca03fb45b', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('246d2692dd925c8927b3', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'model': {'kind': 'gru', 'hidden': 6}},
     'e4f66a48f7aff4f3', 'jecbe86e70a82e6d3',
     {True: ('2a4e59592c1b6f5545d3', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('07694405b3c6533cdd4b', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'model': {'kind': 'lstm', 'hidden': 6, 'noise_std': 0.05}},
     '5fc0234f92d11737', 'j02a902fab5f9ed14',
     {True: ('5e5c452beff98e37ee1b', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('ff0d351bce10d81d2bcc', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'task': {'name': 'pipelined-xor'}, 'model': {'kind': 'williams-zipser', 'hidden': 5}, 'forcing': {'kind': 'wz-tf', 'alpha': [1.0]}, 'rule': {'kind': 'rtrl', 'online': True, 'online_lr': 0.5}, 'continual': True, 'steps': 100, 'val_every': 50},
     '8d5d1c15dc212cd1', 'jdb3a4a2ab6eb2531',
     {True: ('c662f97de13c0b84f3ec', 'a5fc9ed7a070c882a7fa', '5b0be00b9b0baed5a728'),
      False: ('50ca4df677a67e1e6309', 'a5fc9ed7a070c882a7fa', '5b0be00b9b0baed5a728')}),
    ({'task': {'name': 'sine', 'shift': 0.5}, 'forcing': {'kind': 'tf'}},
     '1b0550fdb5cc8e81', 'jb16a92e88d901cda',
     {True: ('db2476f7db116ca42bd3', '4141273e480fc620fc9b', '5c033e3a69a7394b78c9'),
      False: ('98f6d0179bb1bbfcb91f', '4141273e480fc620fc9b', '5c033e3a69a7394b78c9')}),
    ({'task': {'name': 'delayed-xor', 'delay': 20}, 'floss': {'pre': 5, 'k': 2}, 'analysis': {'lyapunov': True}},
     'f57e0d43a5c32107', 'jf3ff9de43ef372fc',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'optim': {'name': 'sgd', 'lr': [0.1, 0.01], 'clip_norm': 1.0}, 'seeds': 3, 'seed': 5, 'epochs': 4},
     'd9caf01f70dc5577', 'jb7f3dbffa994e946',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
    ({'data': 'fixed', 'dataset_size': 64, 'out': 'somewhere'},
     'f4feb17c29de94de', 'j6116202566f0e836',
     {True: ('5a18f2b49bad60a9f1a8', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9'),
      False: ('77e9ae475c93a6c0e5bb', '762098028fddfec1d2c9', '5c033e3a69a7394b78c9')}),
]


def _digest(obj, added_static=None) -> str:
    """`added_static`: the value of a static field added last, after the pins were captured,
    left out of the structure hashed (it must be there)."""
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    structure = re.sub(r" at 0x[0-9a-f]+", "", str(treedef))  # function addresses vary
    if added_static is not None:
        structure, n = re.subn(re.escape(f", {added_static!r})]"), ")]", structure, count=1)
        assert n == 1, structure
    h = hashlib.sha256(structure.encode())
    for leaf in leaves:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            a = np.asarray(leaf)
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:20]


@pytest.mark.parametrize("data, record, job, built", BEFORE, ids=[str(i) for i in range(len(BEFORE))])
def test_records_job_ids_and_built_objects_are_those_of_before(data, record, job, built):
    cfg = TrainConfig.model_validate(data)
    stored = json.loads(config_record(cfg))["config"]
    assert hashlib.sha256(json.dumps(stored).encode()).hexdigest()[:16] == record
    assert job_id(cfg) == job
    task = TASKS[cfg.task.kind].build(cfg.task)
    cell = MODELS[cfg.model.kind].build(cfg.model, task, jax.random.key(1))
    forcing = FORCINGS[cfg.forcing.kind].build(cfg.forcing, cfg.forcing.alpha[0], cell, jax.random.key(2))
    rule = RULES[cfg.rule.kind].build(cfg.rule, jax.random.key(3))
    # The trace rules' `fast` field (the offline fast path, 3dcef05) came after the pins; every
    # config builds it True, and the fast path's gradients are the generic path's
    # (tests/test_trace_fast_path.py).
    fast = None
    if isinstance(rule, AbstractTraceRule):
        assert rule.fast is True
        fast = True
    assert (_digest(cell), _digest(forcing), _digest(rule, fast)) == built[jax.config.values["jax_disable_most_optimizations"]]
    # a stored record reads back as the same config (layout placeholders dropped)
    assert TrainConfig.model_validate(stored) == cfg
    assert TrainConfig.model_validate_json(cfg.model_dump_json()) == cfg


def _sections():
    return [(s, k) for s in SECTIONS for k in (MODELS, FORCINGS, RULES)[["model", "forcing", "rule"].index(s)]]


@pytest.mark.parametrize("section, kind", _sections())
def test_every_variant_has_its_own_class_that_refuses_the_others_options(section, kind):
    cls = config_class(section, kind)
    assert issubclass(cls, SECTIONS[section].base) and cls is not SECTIONS[section].custom
    assert cls.model_config["extra"] == "forbid"
    required = {"forcing": {"kalman": {"process_noise": 0.1}}}.get(section, {}).get(kind, {})
    cfg = SECTIONS[section].base(kind=kind, **required)
    assert type(cfg) is cls and cfg.kind == kind
    others = {f for f in RECORD_LAYOUT[section] if f not in cls.model_fields}
    for field in others:  # any value but the one the variant stands for is refused, naming the field
        with pytest.raises(ValidationError, match=rf"{section}\.{field} applies only to"):
            cls.model_validate({"kind": kind, **required, field: "not-the-default"})
        assert inapplicable(section, cfg, field) and not is_read({section: {"kind": kind}}, f"{section}.{field}")
    for field in cls.model_fields:
        assert inapplicable(section, cfg, field) is None


def test_a_field_the_variant_does_not_declare_is_not_read_as_a_default():
    # no silent placeholder: BPTT has no truncation (its record's 50 is the layout's, not an option)
    required = {("forcing", "kalman"): {"process_noise": 0.1}}
    configs = [SECTIONS[s].base(kind=k, **required.get((s, k), {})) for s, k in _sections()]
    undeclared = [(cfg, f) for cfg in configs for f in RECORD_LAYOUT[cfg.section]
                  if f not in type(cfg).model_fields and (cfg.section, cfg.kind, f) != ("forcing", "none", "alpha")]
    assert len(undeclared) > 50  # (no forcing's α = 0 is declared: below)
    for cfg, field in undeclared:
        with pytest.raises(AttributeError, match=field):
            getattr(cfg, field)
    # a reader outside the variant asks whether it declares the field
    for cfg in configs:
        assert all(cfg.own(f, "absent") == (getattr(cfg, f) if f in type(cfg).model_fields else "absent")
                   for f in RECORD_LAYOUT[cfg.section])
    assert NoForcingConfig().alpha == [0.0] and "alpha" not in NoForcingConfig.model_fields
    assert TBPTTConfig().own("truncation") == 50 and BPTTConfig().own("truncation") is None


def test_the_lyapunov_figure_names_a_gain_only_for_a_model_that_has_one():
    from errorforcing.cli._analysis import spectrum_title

    leaky, gru = TrainConfig(model={"gain": 0.9}), TrainConfig(model={"kind": "gru", "hidden": 6})
    assert spectrum_title("r1", leaky, 8) == "run r1: bptt/ef on delayed-xor, N = 50, g = 0.9, 8 trials"
    assert spectrum_title("r2", gru, 8) == "run r2: bptt/ef on delayed-xor, N = 6, 8 trials"  # was "g = 1.5"


def test_alpha_and_lr_take_a_number_as_a_one_element_grid():
    cfg = TrainConfig(forcing={"kind": "tf", "alpha": 0.3}, optim={"lr": 0.01})
    assert (cfg.forcing.alpha, cfg.optim.lr) == ([0.3], [0.01])
    cfg.forcing.alpha, cfg.optim.lr = 1, 2  # validate_assignment: the same on assignment
    assert (cfg.forcing.alpha, cfg.optim.lr) == ([1.0], [2.0])
    with pytest.raises(ValidationError, match="lr must be a non-empty list"):
        TrainConfig(optim={"lr": -1.0})


def test_the_section_class_dispatches_on_kind():
    assert type(RuleConfig(kind="tbptt", truncation=5)) is TBPTTConfig
    assert type(RuleConfig()) is BPTTConfig and type(ForcingConfig(kind="none")) is NoForcingConfig
    assert ForcingConfig(kind="none").alpha == [0.0]  # no forcing: one member per seed at α = 0
    assert type(TrainConfig(rule={"kind": "tbptt", "truncation": 3}).rule) is TBPTTConfig
    with pytest.raises(ValidationError, match="rule.truncation applies only to rule.kind 'tbptt'; 'bptt' ignores it"):
        TrainConfig(rule={"kind": "bptt", "truncation": 5})
    with pytest.raises(ValidationError, match="rule.online applies only to rule.kind 'rtrl'"):
        TrainConfig(rule={"online": True, "online_lr": 0.1})  # no kind: bptt
    with pytest.raises(ValidationError, match="forcing.causal applies only to forcing.kind 'ef' or 'kalman' or 'feedback'"):
        TrainConfig(forcing={"kind": "tf", "causal": True})
    with pytest.raises(ValidationError, match="model.gain applies only to model.kind 'leaky'"):
        TrainConfig(model={"kind": "gru", "gain": 0.5})
    with pytest.raises(ValidationError, match="rule.kind: unknown rule 'nope'"):
        TrainConfig(rule={"kind": "nope"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        TrainConfig(rule={"kind": "tbptt", "truncaton": 5})
    with pytest.raises(ValidationError, match="'tbptt' is configured by TBPTTConfig, not BPTTConfig"):
        BPTTConfig(kind="tbptt")


def test_the_derived_tables_follow_the_config_classes():
    assert APPLIES["rule"]["truncation"] == ("tbptt",)
    assert APPLIES["rule"]["feedback"] == ("eprop", "rflo")
    assert APPLIES["forcing"]["process_noise"] == ("kalman",)
    assert set(APPLIES["model"]) == set(RECORD_LAYOUT["model"]) - {"kind", "hidden", "noise_std"}
    from errorforcing.experiments._registry import ONLINE_RULES
    assert ONLINE_RULES == ("rtrl", "eprop", "rflo", "uoro", "kf-rtrl", "snap1", "snap2")


def test_a_rule_registered_without_a_class_takes_free_options(monkeypatch):
    monkeypatch.setitem(RULES, "my-rule", Entry(lambda c, key: c.options, "a test rule"))
    cfg = TrainConfig(rule={"kind": "my-rule", "options": {"sigma": 0.1}})
    assert type(cfg.rule) is CustomRuleConfig and RULES["my-rule"].build(cfg.rule, None) == {"sigma": 0.1}
    with pytest.raises(ValidationError, match="rule.truncation applies only to rule.kind 'tbptt'"):
        TrainConfig(rule={"kind": "my-rule", "truncation": 5})


def test_toml_holds_only_the_variants_own_options_and_round_trips(tmp_path):
    cfg = TrainConfig(model={"kind": "gru", "hidden": 6}, rule={"kind": "tbptt", "truncation": 9},
                      forcing={"kind": "none"})
    text = cfg.to_toml()
    assert "gain" not in text and "online" not in text and "alpha" not in text and "truncation = 9" in text
    (tmp_path / "c.toml").write_text(text)
    assert TrainConfig.from_toml(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize("twin, section", [(Flossing, "floss"), (Analysis, "analysis")])
def test_the_training_layers_twins_match_their_config_sections(twin, section):
    config = type(getattr(TrainConfig(), section))
    fields = {f.name: f.default for f in dataclasses.fields(twin)}
    assert fields == {n: f.default for n, f in config.model_fields.items()}


def test_sweep_dotted_fields_reach_each_variant():
    spec = parse_spec('[base]\nseeds = 1\nepochs = 1\nmodel.hidden = 4\ntask.delay = 2\n[grid]\n'
                      '"rule.kind" = ["bptt", "tbptt"]\n"rule.truncation" = [5, 10]\n'
                      '"forcing.kind" = ["none", "ef"]\n"forcing.alpha" = [0.2]\n')
    jobs = expand(spec).jobs
    rules = sorted({(j.config.rule.kind, j.config.model_dump()["rule"]["truncation"]) for j in jobs})
    assert rules == [("bptt", 50), ("tbptt", 5), ("tbptt", 10)]  # bptt ignores the truncation axis
    # the store keeps each job's label: it reads the record (bptt's truncation as stored, 50)
    assert sorted({j.label for j in jobs if j.config.forcing.kind == "none"}) == [
        "rule.kind=bptt rule.truncation=50 forcing.kind=none", "rule.kind=tbptt rule.truncation=10 forcing.kind=none",
        "rule.kind=tbptt rule.truncation=5 forcing.kind=none"]
    assert sorted({(j.config.forcing.kind, tuple(j.config.forcing.alpha)) for j in jobs}) == [("ef", (0.2,)),
                                                                                              ("none", (0.0,))]


def test_feedback_forcing_options_are_checked():
    assert TrainConfig(forcing={"kind": "feedback", "options": {"feedback_lr": 0.1}}).forcing.options == {"feedback_lr": 0.1}
    with pytest.raises(ValidationError, match="feedback forcing takes options.feedback_lr only, got feedbak_lr"):
        TrainConfig(forcing={"kind": "feedback", "options": {"feedbak_lr": 0.1}})


def test_the_example_sweeps_job_ids_are_those_of_before():
    # captured at 5ab775e: a rerun of examples/sweep.toml resumes the jobs run before the split
    from pathlib import Path

    from errorforcing.experiments._sweep import load_spec

    spec = load_spec(Path(__file__).parents[1] / "examples" / "sweep.toml")
    assert [j.job_id for j in expand(spec).jobs] == ["jb5cf2a7b9f611f9a", "j7fe4b3e54758ff5c", "ja7b8ea8d34a68518",
                                                     "j62f6ab7c8640ea71", "j651e16bb8b3f8c74", "jded5f4747e531e84"]


def _respelled(data: dict) -> dict:
    """`data` with the task given as `task.kind` instead of its old spelling `task.name`."""
    task = dict(data["task"])
    return data | {"task": {"kind": task.pop("name"), **task}}


@pytest.mark.parametrize("data, record, job", [(d, r, j) for d, r, j, _ in BEFORE if "name" in d.get("task", {})],
                         ids=lambda v: v["task"]["name"] if isinstance(v, dict) else "")
def test_task_kind_and_its_old_spelling_give_the_record_and_job_id_of_before(data, record, job):
    cfg = TrainConfig.model_validate(_respelled(data))
    assert cfg == TrainConfig.model_validate(data)
    stored = json.loads(config_record(cfg))["config"]
    assert hashlib.sha256(json.dumps(stored).encode()).hexdigest()[:16] == record
    assert job_id(cfg) == job
    assert list(stored["task"])[0] == "name" and "kind" not in stored["task"]  # the record keeps its key
    assert TrainConfig.model_validate(stored) == cfg


def test_the_task_kind_is_spelled_kind_except_in_the_record(tmp_path):
    cfg = TrainConfig(task={"kind": "sine", "shift": 0.5})
    assert cfg.task.kind == "sine" and not hasattr(cfg.task, "name")
    assert "[task]\nkind = \"sine\"" in cfg.to_toml()  # what a user reads back writes the new spelling
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert TrainConfig.from_toml(tmp_path / "c.toml") == cfg
    with pytest.raises(ValidationError, match=r"unknown task 'nope'; choose one of: .*delayed-xor") as e:
        TrainConfig(task={"kind": "nope"})
    assert e.value.errors()[0]["loc"] == ("task", "kind")
    with pytest.raises(ValidationError, match="task.delay applies only to task.kind 'delayed-xor' or "
                                              "'evidence-integration'; 'sine' ignores it"):
        TrainConfig(task={"kind": "sine", "delay": 5})


def test_both_spellings_of_the_task_kind_is_an_error_naming_the_field(tmp_path):
    from errorforcing.cli._config import build_config
    from errorforcing.cli._errors import BadInput
    from errorforcing.experiments._sweep import SpecError

    both = "task.kind: give task.kind or its old spelling task.name, not both"
    with pytest.raises(ValidationError, match=both):
        TrainConfig(task={"kind": "sine", "name": "sine"})
    with pytest.raises(SpecError, match="given in both its spellings") as e:
        parse_spec('[base]\ntask.kind = "sine"\ntask.name = "sine"\n')
    assert e.value.field == "base.task.kind"
    with pytest.raises(SpecError, match="varied in more than one place") as e:
        parse_spec('[grid]\n"task.kind" = ["sine"]\n[zip]\n"task.name" = ["sine"]\n')
    assert e.value.field == "task.kind"
    (tmp_path / "both.toml").write_text('[task]\nkind = "sine"\nname = "sine"\n')
    with pytest.raises(BadInput, match=both):
        build_config(tmp_path / "both.toml", {})
    # an old --config file's [task] name = ... is overridden by --task, not given twice
    (tmp_path / "old.toml").write_text('[task]\nname = "sine"\n')
    assert build_config(tmp_path / "old.toml", {"task.kind": "evidence-integration"}).task.kind == "evidence-integration"
    assert build_config(tmp_path / "old.toml", {}).task.kind == "sine"


def test_task_kind_is_a_sweep_dotted_field_with_the_job_ids_of_task_name():
    spec = ('[base]\nseeds = 1\nepochs = 1\nmodel.hidden = 4\n[grid]\n'
            '"task.{}" = ["delayed-xor", "sine", "nope"]\n"task.delay" = [2, 3]\n')
    new, old = (expand(parse_spec(spec.format(k)), skip_unregistered=True) for k in ("kind", "name"))
    assert [j.job_id for j in new.jobs] == [j.job_id for j in old.jobs]
    # sine ignores the delay axis: three jobs, labelled from the record in the spec's spelling
    assert [j.label for j in new.jobs] == ["task.kind=delayed-xor task.delay=2", "task.kind=delayed-xor task.delay=3",
                                           "task.kind=sine task.delay=100"]
    assert [j.label.replace("name", "kind") for j in old.jobs] == [j.label for j in new.jobs]
    assert new.skipped == old.skipped == ["skipped 2 point(s) of sweep 'sweep': task.kind = 'nope' is not registered yet"]
    # an axis overrides the base in either spelling
    override = parse_spec('[base]\ntask.name = "sine"\nepochs = 1\n[grid]\n"task.kind" = ["delayed-xor"]\n')
    assert [j.config.task.kind for j in expand(override).jobs] == ["delayed-xor"]
