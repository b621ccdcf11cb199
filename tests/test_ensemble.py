"""Ensembles: vmapped members equal separate runs; the convergence and divergence rules."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.training import ConvergenceTracker, EnsembleTrainer, Member, Schedule, Shards


def _trainer(members, epochs=3, data="fresh", shards=None):
    task = ef.tasks.DelayedXOR(delay=4, pulse=4)
    schedule = Schedule(epochs=epochs, batch_size=16, train_trials=40, val_trials=8, data=data,
                        dataset_size=50, threshold=1e-9)
    return EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(3, 12, 1, key=k),
                           lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), ef.rules.BPTT(), optax.adam,
                           members, schedule, shards=shards)


@pytest.mark.parametrize("data", ["fresh", "fixed"])
def test_vmapped_ensemble_equals_separate_runs(data):
    members = [Member(0, 0.0, 1e-2), Member(1, 0.5, 1e-2), Member(0, 1.0, 3e-3), Member(2, 0.2, 1e-2)]
    together = _trainer(members, data=data).run()
    for i, m in enumerate(members):
        alone = _trainer([m], data=data).run()
        np.testing.assert_allclose(together.val_curves[i], alone.val_curves[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(together.train_curves[i], alone.train_curves[0], rtol=1e-5, atol=1e-7)
        for a, b in zip(jax.tree_util.tree_leaves(together.cells), jax.tree_util.tree_leaves(alone.cells)):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-7)
    # members differ (α, seed and lr are really used)
    assert len({round(float(v), 8) for v in together.val_curves[:, -1]}) == 4


def test_parallel_shards_equal_one_program():
    """3 members as 2 parallel shards of 2 (one padded copy, dropped) = one program of 3."""
    members = [Member(0, 0.0, 1e-2), Member(1, 0.5, 1e-2), Member(2, 1.0, 3e-3)]
    one, split = _trainer(members, shards=1).run(), _trainer(members, shards=2).run()
    np.testing.assert_allclose(split.val_curves, one.val_curves, rtol=1e-9)
    np.testing.assert_allclose(split.train_curves, one.train_curves, rtol=1e-9)
    for a, b in zip(jax.tree_util.tree_leaves(split.cells), jax.tree_util.tree_leaves(one.cells)):
        assert a.shape[0] == 3
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_shards_split_and_join():
    tree = {"x": jnp.arange(10.0).reshape(5, 2), "name": "static"}
    with Shards(5, 2) as shards:
        assert (shards.count, shards.size) == (2, 3)
        parts = shards.split(tree)
        np.testing.assert_array_equal(parts[1]["x"][:, 0], [6.0, 8.0, 8.0])  # padded with the last member
        np.testing.assert_array_equal(shards.join(parts)["x"], tree["x"])
        np.testing.assert_array_equal(np.concatenate(shards.split_mask(np.ones(5, bool))), [1, 1, 1, 1, 1, 0])
        sums = shards.map(eqx.filter_jit(lambda t, k: t["x"].sum() + k), parts, [10, 20])  # in two threads
        assert [float(v) for v in sums] == [15 + 10, 47 + 20]


def test_same_seed_different_alpha_starts_identical():
    tr = _trainer([Member(3, 0.0, 1e-2), Member(3, 1.0, 1e-2)])
    cells, forcings = tr.init()[:2]
    for leaf in jax.tree_util.tree_leaves(cells):
        np.testing.assert_array_equal(leaf[0], leaf[1])
    np.testing.assert_array_equal(forcings.alpha, [0.0, 1.0])


def test_convergence_needs_patience_consecutive_epochs():
    tr = ConvergenceTracker(3, threshold=0.1, patience=3)
    curves = np.array([[0.5, 0.05, 0.05, 0.2, 0.05, 0.05, 0.05, 0.05],   # converges at epoch 7
                       [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],  # converges at epoch 3
                       [0.5] * 8])                                         # never
    for e in range(8):
        tr.update(e + 1, curves[:, e])
    np.testing.assert_array_equal(tr.converged_epoch, [7, 3, -1])
    np.testing.assert_array_equal(tr.epochs_run, [7, 3, 8])
    np.testing.assert_array_equal(tr.active, [False, False, True])


def test_divergence_freezes_and_is_a_failure():
    tr = ConvergenceTracker(4, threshold=0.1, patience=2, divergence=1e4)
    tr.update(1, np.array([0.05, np.nan, 2e4, 0.5]), np.array([0.1, 0.1, 0.1, np.inf]))
    np.testing.assert_array_equal(tr.diverged, [False, True, True, True])
    tr.update(2, np.array([0.05, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(tr.converged_epoch, [2, -1, -1, -1])  # diverged ones never converge
    np.testing.assert_array_equal(tr.epochs_run, [2, 1, 1, 1])


def test_nan_member_does_not_disturb_the_others():
    """A member with an absurd learning rate diverges; the others train exactly as without it."""
    good = [Member(0, 0.5, 1e-2), Member(1, 0.5, 1e-2)]
    bad = Member(2, 0.5, 1e6)
    with_bad = _trainer(good + [bad], epochs=4).run()
    alone = _trainer(good, epochs=4).run()
    assert with_bad.tracker.diverged[2]
    assert not with_bad.tracker.diverged[:2].any()
    np.testing.assert_allclose(with_bad.val_curves[:2], alone.val_curves, rtol=1e-5)
    assert with_bad.tracker.epochs_run[2] < 4


def _with(tr, **changes):
    tr.schedule = Schedule(**{**tr.schedule.__dict__, **changes})
    return tr


def test_converged_members_freeze_and_training_stops():
    members = [Member(0, 0.5, 1e-2), Member(1, 0.5, 1e-2)]
    result = _with(_trainer(members, epochs=50), threshold=10.0, patience=2).run()
    assert result.epochs_done == 2
    np.testing.assert_array_equal(result.tracker.converged_epoch, [2, 2])

    # one member converges at epoch 2 (a threshold between the two members' losses), the
    # other trains on: the converged one's parameters, optimizer state and forcing stay
    # bit-identical to what they were after epoch 2
    two = _trainer(members, epochs=2).run()
    first = int(np.argmin(two.val_curves.max(axis=1)))
    threshold = float(two.val_curves[first].max()) * (1 + 1e-6)
    assert two.val_curves[1 - first].max() > threshold
    later = _with(_trainer(members, epochs=5), threshold=threshold, patience=2).run()
    assert later.tracker.converged_epoch[first] == 2 and later.tracker.epochs_run[1 - first] > 2
    assert np.all(np.isnan(later.val_curves[first, 2:]))
    assert np.all(np.isfinite(later.val_curves[1 - first, :later.tracker.epochs_run[1 - first]]))
    for a, b in zip(jax.tree.leaves(later.cells), jax.tree.leaves(two.cells)):
        np.testing.assert_array_equal(a[first], b[first])
    moved = max(float(jnp.max(jnp.abs(a[1 - first] - b[1 - first])))
                for a, b in zip(jax.tree.leaves(later.cells), jax.tree.leaves(two.cells)))
    assert moved > 1e-4


def test_padding_trials_do_not_change_the_gradient(getkey):
    """The last batch is padded with weight-0 trials: same loss and gradient as the bare batch."""
    from errorforcing.training import pad_into_batches

    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    cell = ef.models.LeakyRNN(3, 6, 1, key=getkey())
    trials = ef.tasks.sample_batch(task, 5, key=getkey())
    padded = jax.tree_util.tree_map(lambda x: x[1], pad_into_batches(trials, 2, 4))  # 1 real + 3 pad
    bare = jax.tree_util.tree_map(lambda x: x[4:5], trials)
    bare = bare._replace(info=dict(bare.info, weight=jnp.ones(1)))
    f = ef.forcing.ErrorForcing(alpha=0.3)
    l1, g1, _ = ef.rules.BPTT().value_and_grad(cell, f, padded, key=getkey())
    l2, g2, _ = ef.rules.BPTT().value_and_grad(cell, f, bare, key=getkey())
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(g1.W_rec, g2.W_rec, rtol=1e-10)


def test_weight_decay_leaves_frozen_parameters_bit_identical():
    """adamw decays every leaf it is given: only the trainable ones may reach it (W_in does
    not train by default; rec_mask is structure, not a parameter)."""
    task = ef.tasks.DelayedXOR(delay=4, pulse=4)
    schedule = Schedule(epochs=5, batch_size=16, train_trials=32, val_trials=8, threshold=1e-9)
    make_cell = lambda k: ef.models.LeakyRNN(3, 12, 1, key=k, density=0.5)
    tr = EnsembleTrainer(task, make_cell, lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), ef.rules.BPTT(),
                         lambda learning_rate: optax.adamw(learning_rate, weight_decay=0.5),
                         [Member(0, 0.5, 1e-2), Member(1, 0.0, 1e-2)], schedule)
    start = tr.init()[0]
    result = tr.run()
    assert result.epochs_done == 5
    np.testing.assert_array_equal(result.cells.W_in, start.W_in)
    np.testing.assert_array_equal(result.cells.rec_mask, start.rec_mask)
    for name in ("W_rec", "b", "W_out", "b_out"):
        moved = np.abs(np.asarray(getattr(result.cells, name)) - np.asarray(getattr(start, name)))
        assert moved.max() > 1e-4, name
    # absent connections stay absent
    assert not np.any(np.where(start.rec_mask == 0, result.cells.W_rec, 0.0))


def _random_feedback_job(seed, seeds):
    from errorforcing import TrainConfig

    return TrainConfig(task={"name": "delayed-xor", "delay": 4, "options": {"pulse": 4}}, model={"hidden": 8},
                       rule={"kind": "rflo", "feedback": "random"}, forcing={"kind": "none"}, seed=seed, seeds=seeds,
                       epochs=2, batch=16, train_trials=32, val_trials=8, optim={"lr": [1e-2]})


def _member(tree, i):
    return jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, tree)


def test_random_feedback_is_drawn_per_member_from_its_own_seed():
    """Seeds 0, 1, 2 in one job: three different B; seed 1 inside the job trains exactly like
    seed 1 run alone (same B, same curves, same weights), whatever the other members are."""
    from errorforcing.experiments import build_trainer

    together = build_trainer(_random_feedback_job(0, 3)).run()
    alone = build_trainer(_random_feedback_job(1, 1)).run()
    B = [_member(together.rules, i).feedback_matrix(_member(together.cells, i)) for i in range(3)]
    assert B[0].shape == (8, 1)
    assert all(float(jnp.max(jnp.abs(B[i] - B[j]))) > 1e-3 for i, j in ((0, 1), (0, 2), (1, 2)))
    B_alone = _member(alone.rules, 0).feedback_matrix(_member(alone.cells, 0))
    np.testing.assert_array_equal(B_alone, B[1])
    np.testing.assert_allclose(together.val_curves[1], alone.val_curves[0], rtol=1e-9)
    np.testing.assert_allclose(together.train_curves[1], alone.train_curves[0], rtol=1e-9)
    for a, b in zip(jax.tree.leaves(together.cells), jax.tree.leaves(alone.cells)):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(a[1], b[0], rtol=1e-9, atol=1e-12)
    assert together.extra_curves["cos_B_Wout"].shape == (3, 2)  # each member's own B


def test_members_differing_only_in_alpha_share_their_feedback():
    rule = ef.rules.RFLO(feedback="random", key=jax.random.key(99))
    task = ef.tasks.DelayedXOR(delay=4, pulse=4)
    tr = EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(3, 6, 1, key=k),
                         lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), rule, optax.adam,
                         [Member(4, 0.0, 1e-2), Member(4, 0.5, 1e-2), Member(5, 0.5, 1e-2)], Schedule(epochs=1))
    state = tr.init()
    cells, rules = state[0], state[4]
    B = [_member(rules, i).feedback_matrix(_member(cells, i)) for i in range(3)]
    np.testing.assert_array_equal(B[0], B[1])
    assert float(jnp.max(jnp.abs(B[0] - B[2]))) > 1e-3
    assert float(jnp.max(jnp.abs(B[0] - rule.feedback_matrix(_member(cells, 0))))) > 1e-3  # not the job's key


def test_online_rule_in_the_trainer_ends_at_its_end_of_trial_weights():
    """An online rule's batch step is the rule's own real-time run: the trainer keeps the
    weights where each batch ended and carries the per-step optimizer's state (here Adam) on,
    batch to batch and epoch to epoch; the epoch optimizer (SGD at a huge rate) is never used."""
    rule = ef.rules.RFLO(online=True, lr=0.05, optimizer=optax.adam)
    task = ef.tasks.DelayedXOR(delay=4, pulse=4)
    schedule = Schedule(epochs=2, batch_size=8, train_trials=16, val_trials=4, threshold=1e-9)
    tr = EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(3, 6, 1, key=k),
                         lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a, causal=True), rule, optax.sgd,
                         [Member(0, 0.5, 1e6)], schedule)
    result = tr.run()
    cell = _member(tr.init()[0], 0)
    opt_state, forcing = rule.online_init(cell), ef.forcing.ErrorForcing(alpha=0.5, causal=True)
    for epoch in (1, 2):
        batches, _ = tr._epoch_data(tr.data_keys[0], epoch, None)
        keys = jax.random.split(jax.random.fold_in(tr.noise_keys[0], epoch), schedule.n_batches)
        for i in range(schedule.n_batches):
            batch = jax.tree.map(lambda x: x[i], batches)
            _, cell, opt_state, _ = rule.online_run(cell, opt_state, forcing, batch, key=keys[i],
                                                    objective=tr.objective)
    for a, b in zip(jax.tree.leaves(result.cells), jax.tree.leaves(cell)):
        np.testing.assert_allclose(a[0], b, rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(cell.W_rec - _member(tr.init()[0], 0).W_rec))) > 1e-3


def test_continual_learning_is_one_unbroken_stream_with_checks():
    """Three checks of 20 steps: the same weights as one real-time run over the whole 60-step
    stream (state, influence matrix and optimizer state carried across the checks)."""
    from errorforcing.training import ContinualSchedule, ContinualTrainer

    task = ef.tasks.PipelinedXOR(lag=1)
    make_cell = lambda k: ef.models.WilliamsZipserNet(task.n_in, 3, task.n_out, key=k, init_scale=0.5)
    rule = ef.rules.RTRL(online=True, lr=0.5)
    members = [Member(0, 1.0, 0.5), Member(1, 1.0, 0.5)]
    tr = ContinualTrainer(task, make_cell, lambda a, cell, key: ef.forcing.WilliamsZipserTeacherForcing(alpha=a),
                          rule, members, ContinualSchedule(steps=60, val_every=20, val_steps=10, threshold=1e-9))
    result = tr.run()
    assert result.epochs_done == 3 and result.val_curves.shape == (2, 3)
    np.testing.assert_array_equal(result.extra_curves["step"], [[20, 40, 60]] * 2)
    assert np.all(np.isfinite(result.val_curves))
    for i, m in enumerate(members):
        cell = make_cell(ef.training.member_keys(m.seed)[0])
        whole = ef.tasks.stream(task, 60, key=jax.random.fold_in(ef.training.member_keys(m.seed)[1], 0))
        whole = jax.tree.map(lambda a: a[None], whole._replace(info={}))
        _, end, _, _ = rule.online_run(cell, rule.online_init(cell), ef.forcing.WilliamsZipserTeacherForcing(),
                                       whole, key=jax.random.key(0), objective=tr.objective, per_step_loss=True)
        np.testing.assert_allclose(result.cells.W[i], end.W, rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(result.cells.W[0] - result.cells.W[1]))) > 1e-3


def test_continual_train_writes_one_row_per_member_with_curves_per_check(tmp_path):
    import json

    from errorforcing import TrainConfig, train

    cfg = TrainConfig(task={"name": "pipelined-xor", "options": {"lag": 1}},
                      model={"kind": "williams-zipser", "hidden": 3}, forcing={"kind": "wz-tf", "alpha": [1.0]},
                      rule={"kind": "rtrl", "online": True, "online_lr": 0.5}, seeds=2, continual=True, steps=40,
                      val_every=20, out=str(tmp_path))
    rows = train(cfg, progress=False).rows
    assert [r["seed"] for r in rows] == [0, 1] and all(r["epochs_run"] == 2 for r in rows)
    assert all(r["lr"] == 0.5 for r in rows)  # the per-step rate
    assert all(r["test_loss"] is not None and np.isfinite(r["test_loss"]) for r in rows)
    curves = json.loads(rows[0]["curves"])
    assert curves["step"] == [20.0, 40.0] and len(curves["val_loss"]) == 2 and len(curves["train_loss"]) == 2
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg  # the stored config round-trips
