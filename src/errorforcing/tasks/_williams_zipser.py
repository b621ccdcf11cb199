"""The tasks of Williams & Zipser (1989), "A learning algorithm for continually running fully
recurrent neural networks", Neural Computation 1:270–280, §3.

These tasks have no trials in the paper: the network runs on one unending input stream. Here
each task is an `AbstractContinualTask`: `sample(key=...)` gives the first `n_steps` steps of a
fresh stream (a fixed-length trial, for batched training), and `stream(task, n_steps, key=...)`
gives one long sequence with no trial boundaries (for real-time learning).

Clock. Williams & Zipser's units compute y(t+1) = f(W z(t)), so the input x(t) first shows in
the outputs at t + 1. In this library a cell consumes `inputs[t]` in the update that produces
`outputs[t]`: one update separates them. The targets below are written in this library's clock,
so "immediately following" in the paper is "at the same index" here, and a delay of `lag` indices
gives the network `lag + 1` updates (Williams & Zipser's τ = lag + 1).

Targets are 0/1, for logistic output units. The paper states no convergence criterion; the
`threshold` of 0.01 (a root-mean-square error of 0.1 per output) is this library's choice.
"""

from __future__ import annotations

import abc
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from .._types import Array, Float, Key
from ._base import AbstractTask, Trials

_F = jnp.float32


def _delayed(x: Array, lag: int) -> Array:
    """x shifted `lag` steps later along time (axis 0), zero-filled at the start."""
    if lag == 0:
        return x
    pad = jnp.zeros((lag,) + x.shape[1:], x.dtype)
    return jnp.concatenate([pad, x], axis=0)[: x.shape[0]]


def _last_index_before(flag: Array) -> Array:
    """For each t, the last index s < t with flag[s] (-1 if none)."""
    t = jnp.arange(flag.shape[0])
    last_at_or_before = lax.cummax(jnp.where(flag, t, -1))
    return _delayed(last_at_or_before + 1, 1) - 1


class AbstractContinualTask(AbstractTask):
    """A task defined on one unending input stream (Williams & Zipser's continually running
    networks). Trials are the first `n_steps` steps of a fresh stream; `stream` draws longer ones."""

    @abc.abstractmethod
    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        """`n_steps` steps from the start of a stream. `continual=False` may end the sequence
        (pad with mask 0) where a task has a natural end; `continual=True` never does."""

    def sample(self, *, key: Key) -> Trials:
        return self._generate(self.n_steps, False, key)


def stream(task: AbstractContinualTask, n_steps: int, *, key: Key) -> Trials:
    """One long sequence of `n_steps` steps with no trial boundaries, for real-time learning.

    `n_steps` is static (it sets the shapes). Same key, same stream; for the tasks whose
    trials are windows of a stream, `stream(task, task.n_steps, key=k)` equals
    `task.sample(key=k)`; `BalancedParentheses` differs in that its stream presents a new tape
    right after each halt instead of padding.
    """
    if not isinstance(task, AbstractContinualTask):
        raise TypeError(f"stream needs a continual task (Williams–Zipser family), got {type(task).__name__}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return task._generate(int(n_steps), True, key)


def _check_n_steps(n_steps: int) -> None:
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")


class PipelinedXOR(AbstractContinualTask):
    """Pipelined XOR (Williams & Zipser 1989, §3.1).

        inputs[t] = (a_t, b_t),  a_t, b_t ~ Bernoulli(1/2), independent at every step
        targets[t] = a_{t-lag} XOR b_{t-lag}     mask 1 for t >= lag, 0 before (undefined)

    The paper uses delays τ ∈ {2, 3, 4}; in this library's clock (module docstring) `lag = τ - 1`
    gives the network exactly τ updates, e.g. `lag=1` is the paper's 3-unit, τ = 2 problem.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    lag: int = 2
    n_steps: int = 100

    def __check_init__(self):
        if self.lag < 0:
            raise ValueError(f"lag must be >= 0, got {self.lag}")
        _check_n_steps(self.n_steps)

    @property
    def n_in(self) -> int:
        return 2

    @property
    def n_out(self) -> int:
        return 1

    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        bits = jax.random.bernoulli(key, 0.5, (n_steps, 2))
        xor = _delayed(bits[:, 0] ^ bits[:, 1], self.lag)
        mask = jnp.arange(n_steps) >= self.lag
        info = {"xor": (bits[:, 0] ^ bits[:, 1]).astype(jnp.int32)}
        return Trials(bits.astype(_F), xor[:, None].astype(_F), mask[:, None].astype(_F), info)


class SequenceRecognition(AbstractContinualTask):
    """Simple sequence recognition (Williams & Zipser 1989, §3.2).

        inputs[t]: one-hot over 2 + n_distractors lines (line 0 = a, line 1 = b, the rest
                   distractors), the active line drawn uniformly and independently at each step
        armed_t  = an `a` has arrived since the last `b` that fired (or since the start)
        targets[t] = 1 if inputs[t] is `b` and armed_{t-1}, else 0    (mask 1 everywhere)

    A `b` that fires "uses up" its `a`; repeated `a`s before one `b` give one 1; a `b` with no
    pending `a` gives 0. "Immediately following the b" in the paper is the same index here
    (module docstring). `info["armed"]` is armed_t after step t.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    n_distractors: int = 2
    n_steps: int = 100

    def __check_init__(self):
        if self.n_distractors < 0:
            raise ValueError(f"n_distractors must be >= 0, got {self.n_distractors}")
        _check_n_steps(self.n_steps)

    @property
    def n_in(self) -> int:
        return 2 + self.n_distractors

    @property
    def n_out(self) -> int:
        return 1

    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        line = jax.random.randint(key, (n_steps,), 0, self.n_in)
        is_a, is_b = line == 0, line == 1
        t = jnp.arange(n_steps)
        last_a = lax.cummax(jnp.where(is_a, t, -1))
        # Every b disarms, whether or not it fired, so "an a since the last b" is the state.
        fire = is_b & (last_a > _last_index_before(is_b))
        armed = last_a > lax.cummax(jnp.where(is_b, t, -1))
        inputs = jax.nn.one_hot(line, self.n_in, dtype=_F)
        info = {"line": line, "armed": armed}
        return Trials(inputs, fire[:, None].astype(_F), jnp.ones((n_steps, 1), _F), info)


class DelayedNonmatch(AbstractContinualTask):
    """Delayed nonmatch to sample (Williams & Zipser 1989, §3.3).

        inputs[t] = (p_t, c_t): pattern bit p_t ~ Bernoulli(1/2), cue bit c_t ~ Bernoulli(cue_prob)
        stored_t  = p_s, s = the last cue step strictly before t
        r_t       = p_t XOR stored_t  (0 on match, 1 on nonmatch), defined once a cue has occurred
        targets[t] = r_{t-lag}, mask 1 where r_{t-lag} is defined

    A cued bit is compared with every later pattern bit up to and including the next cue step;
    the bit on that next cue step is compared with the old sample and then replaces it. The
    comparison is an XOR, which needs a computation delay: `lag=1` gives it two updates.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    lag: int = 1
    cue_prob: float = 0.5
    n_steps: int = 100

    def __check_init__(self):
        if self.lag < 0:
            raise ValueError(f"lag must be >= 0, got {self.lag}")
        if not 0.0 < self.cue_prob <= 1.0:
            raise ValueError(f"cue_prob must be in (0, 1], got {self.cue_prob}")
        _check_n_steps(self.n_steps)

    @property
    def n_in(self) -> int:
        return 2

    @property
    def n_out(self) -> int:
        return 1

    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        k_pattern, k_cue = jax.random.split(key)
        pattern = jax.random.bernoulli(k_pattern, 0.5, (n_steps,))
        cue = jax.random.bernoulli(k_cue, self.cue_prob, (n_steps,))
        last_cue = _last_index_before(cue)
        defined = last_cue >= 0
        nonmatch = pattern ^ pattern[jnp.maximum(last_cue, 0)]
        targets = _delayed(nonmatch & defined, self.lag)
        mask = _delayed(defined, self.lag)
        inputs = jnp.stack([pattern, cue], axis=-1).astype(_F)
        info = {"nonmatch": nonmatch & defined, "last_cue": last_cue}
        return Trials(inputs, targets[:, None].astype(_F), mask[:, None].astype(_F), info)


# Tape symbols; also the order of the one-hot input lines of BalancedParentheses.
OPEN, CLOSE, CROSSED, BLANK = 0, 1, 2, 3
# The controller's table, indexed [state, symbol read]:
# state 0 = scan right for ")", 1 = scan left for its "(", 2 = final scan left for a stray "(".
# (write X, move left, next state, halt, accept). Entries for ")" in states 1 and 2 are never
# reached: every ")" left of the head has been crossed out by then.
_WRITE_X = jnp.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
_MOVE_LEFT = jnp.array([[0, 1, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0]], bool)
_NEXT_STATE = jnp.array([[0, 1, 0, 2], [0, 1, 1, 1], [2, 2, 2, 2]], jnp.int32)
_HALT = jnp.array([[0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1]], bool)
_ACCEPT = jnp.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)


def _random_tape(key: Key, max_pairs: int) -> tuple[Array, Array]:
    """A tape [blank, s_1 .. s_L, blank, blank ...] of width 2 max_pairs + 2, and L.

    L = 2n, n ~ U{1..max_pairs}. With probability 1/3 each: a balanced string (n "(" and n ")"
    in random order, rotated to start after its lowest prefix sum — the cycle lemma makes
    that balanced), the unrotated random order (equal counts, usually unbalanced), or the
    balanced string with one random symbol flipped (unequal counts, never balanced).
    """
    width = 2 * max_pairs
    k_n, k_order, k_kind, k_flip = jax.random.split(key, 4)
    n = jax.random.randint(k_n, (), 1, max_pairs + 1)
    length = 2 * n
    i = jnp.arange(width)
    inside = i < length
    u = jnp.where(inside, jax.random.uniform(k_order, (width,)), 2.0)
    is_open = jnp.argsort(jnp.argsort(u)) < n
    height = jnp.cumsum(jnp.where(inside, jnp.where(is_open, 1, -1), 0))
    lowest = jnp.argmin(jnp.where(inside, height, width + 1))
    rotated = is_open[jnp.mod(i + lowest + 1, length)]
    flipped = rotated ^ (i == jax.random.randint(k_flip, (), 0, length))
    kind = jax.random.randint(k_kind, (), 0, 3)
    opens = jnp.select([kind == 0, kind == 1], [rotated, is_open], flipped)
    symbols = jnp.where(inside, jnp.where(opens, OPEN, CLOSE), BLANK)
    tape = jnp.concatenate([jnp.array([BLANK]), symbols, jnp.array([BLANK])])
    return tape.astype(jnp.int32), length


class BalancedParentheses(AbstractContinualTask):
    """Mimic the finite-state controller of a parenthesis-checking Turing machine (Williams &
    Zipser 1989, §3.4): the network sees the symbol under the head and must emit the
    controller's action; the controller's state stays hidden.

    The machine (the classic parenthesis checker, e.g. Minsky 1967, *Computation: Finite and
    Infinite Machines*): tape `_ s_1 … s_L _` with blanks `_` at both ends, head on s_1, state 0.

        state 0 (scan right):  "(" or X → move right;  ")" → write X, move left, state 1;
                               _ → move left, state 2
        state 1 (find "("):    X → move left;  "(" → write X, move right, state 0;
                               _ → halt, reject (a ")" has no partner)
        state 2 (final check): X → move left;  "(" → halt, reject;  _ → halt, accept

    It accepts exactly the balanced strings. The environment (the tape) is simulated along the
    correct actions, so the inputs are fixed given the key.

        inputs[t] (4, one-hot): the symbol read at step t: "(", ")", X, _
        targets[t] (4): move_left (1 = left, 0 = right), write_x, halt, accept
        mask: move_left on non-halting steps; write_x and halt on every step up to the halt;
              accept only on the halting step; all 0 after the halt (inputs 0 there)

    Tapes: L = 2n with n ~ U{1..max_pairs}, about 45 % of them balanced (`_random_tape`).
    A trial stops at the halt (padding after it) or at `n_steps`, whichever comes first
    (`info["halted"]`). The longest run over tapes of n pairs is 2 (n + 1)² steps, so the
    default n_steps = 50 covers max_pairs = 4.
    `stream` presents a new tape on the step right after each halt. `info["tape"]` holds the
    (first) tape, `info["tape_index"][t]` which tape step t reads.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    max_pairs: int = 4
    n_steps: int = 50

    def __check_init__(self):
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")
        _check_n_steps(self.n_steps)

    @property
    def n_in(self) -> int:
        return 4

    @property
    def n_out(self) -> int:
        return 4

    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        first_tape, _ = _random_tape(jax.random.fold_in(key, 0), self.max_pairs)

        def step(carry, _):
            tape, head, state, done, index = carry
            sym = tape[head]
            write, left = _WRITE_X[state, sym], _MOVE_LEFT[state, sym]
            halt, accept = _HALT[state, sym], _ACCEPT[state, sym]
            live = ~done
            x = jax.nn.one_hot(sym, 4, dtype=_F) * live
            y = jnp.stack([left & ~halt, write, halt, accept]).astype(_F) * live
            m = jnp.stack([~halt, live, live, halt]).astype(_F) * live
            tape = tape.at[head].set(jnp.where(write, CROSSED, sym))
            head = head + jnp.where(left, -1, 1)
            state = _NEXT_STATE[state, sym]
            if continual:
                new_tape, _ = _random_tape(jax.random.fold_in(key, index + 1), self.max_pairs)
                tape = jnp.where(halt, new_tape, tape)
                head = jnp.where(halt, 1, head)
                state = jnp.where(halt, 0, state)
                out_index, index = index, index + halt
            else:
                done = done | halt
                out_index = index
            return (tape, head, state, done, index), (x, y, m, out_index, halt & live)

        init = (first_tape, jnp.int32(1), jnp.int32(0), jnp.bool_(False), jnp.int32(0))
        _, (inputs, targets, mask, tape_index, halts) = lax.scan(step, init, None, length=n_steps)
        info = {
            "tape": first_tape,
            "tape_index": tape_index,
            "halted": jnp.any(halts),
            "halt_step": jnp.where(jnp.any(halts), jnp.argmax(halts), -1),
        }
        return Trials(inputs, targets, mask, info)


class Oscillation(AbstractContinualTask):
    """Learning to oscillate (Williams & Zipser 1989, §3.5). No input but a constant bias line.

        pattern "01":    1 output,  y_t = (t + φ) mod 2                          → 0101…
        pattern "0011":  2 outputs, y0_t = [(t + φ) mod 4 ≥ 2]                   → 0011…
                                    y1_t = [(t + φ + 1) mod 4 ≥ 2]  (one step ahead) → 0110…
        pattern "sine":  2 outputs, y0_t = 0.5 + A sin(2π (t + φ) / period)
                                    y1_t = 0.5 + A cos(2π (t + φ) / period)
                         (A = amplitude < 0.5 keeps targets inside (0, 1) for logistic units)
        inputs[t] = 1; mask = 1 everywhere

    φ = 0 by default, so every key gives the same trial: an unforced network started from
    rest cannot know a random phase. `random_phase=True` draws φ ~ U{0, …, cycle − 1}
    (cycle = 2, 4 or period), for training where teacher forcing sets the phase.
    The paper trains one unit of a 2-unit net for "0011" and the sinusoid;
    `train_partner=False` leaves the second output unsupervised (mask 0) to match that.

    Success up to phase (`phase_free`, default on; `held_out_error`). The paper judges an
    oscillator by the pattern it produces running free ("training a single unit to produce
    010101…") and states no phase, starting state or criterion. A network run free from rest
    reaches its oscillation at a phase its weights set (a 1-unit net from y = 0 cannot produce
    0, 1, 0, … from its first step), and from a state off its cycle it needs some steps to get
    there: the paper's reason for teacher forcing is that it "helps to control the initial
    conditions for the subsequent dynamics", i.e. the free run's start is not the teacher's.
    So the validation and test error is

        E = min over s ∈ {0, …, cycle − 1} of  Σ_{t ≥ settle} m_t (y_t − y*_{t+s})² / Σ_{t ≥ settle} m_t

    per trial (y*_{t+s} the target of phase s, whatever φ the trial had; trials weighted by
    their judged mask), after a settling transient of `settle` steps, by default one cycle
    (this library's choice: the shortest wait after which any phase is reachable; the paper
    gives none). The minimum cannot rescue a constant output: over whole cycles every shift
    sees the same target values, so a constant 0.5 scores A²/2 = 0.08 on the sinusoid, 0.25 on
    0101… and 00110011…, all far above `threshold`. `phase_free=False` is the plain masked MSE
    against the trial's own targets from the first step (the criterion of the other tasks).
    Training is unaffected: the loss is always against the trial's targets.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    pattern: Literal["01", "0011", "sine"] = "01"
    period: int = 25
    amplitude: float = 0.4
    random_phase: bool = False
    train_partner: bool = True
    phase_free: bool = True
    settle: int | None = None
    n_steps: int = 100

    def __check_init__(self):
        if self.pattern not in ("01", "0011", "sine"):
            raise ValueError(f"pattern must be one of '01', '0011', 'sine', got {self.pattern!r}")
        if self.period < 2:
            raise ValueError(f"period must be >= 2, got {self.period}")
        if not 0.0 < self.amplitude < 0.5:
            raise ValueError(f"amplitude must be in (0, 0.5), got {self.amplitude}")
        _check_n_steps(self.n_steps)
        if self.settle is not None:
            if not self.phase_free:
                raise ValueError("settle applies only to the phase-free criterion (phase_free = true)")
            if not 0 <= self.settle < self.n_steps:
                raise ValueError(f"settle must be in [0, n_steps = {self.n_steps}), got {self.settle}")

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 1 if self.pattern == "01" else 2

    @property
    def cycle(self) -> int:
        """Steps per cycle of the pattern."""
        return {"01": 2, "0011": 4, "sine": self.period}[self.pattern]

    @property
    def settle_steps(self) -> int:
        """Leading steps the phase-free error skips: `settle`, default one cycle; 0 without `phase_free`."""
        if not self.phase_free:
            return 0
        return self.cycle if self.settle is None else self.settle

    def _targets(self, t: Array) -> Float[Array, "T n_out"]:
        """The targets at (phase-shifted) steps t."""
        if self.pattern == "01":
            return jnp.mod(t, 2)[:, None].astype(_F)
        if self.pattern == "0011":
            return jnp.stack([jnp.mod(t, 4) >= 2, jnp.mod(t + 1, 4) >= 2], axis=-1).astype(_F)
        angle = 2 * jnp.pi * t / self.period
        return (0.5 + self.amplitude * jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1)).astype(_F)

    def _generate(self, n_steps: int, continual: bool, key: Key) -> Trials:
        phase = jax.random.randint(key, (), 0, self.cycle) if self.random_phase else jnp.int32(0)
        targets = self._targets(jnp.arange(n_steps) + phase)
        mask = jnp.ones((n_steps, self.n_out), _F)
        if self.n_out == 2 and not self.train_partner:
            mask = mask.at[:, 1].set(0.0)
        return Trials(jnp.ones((n_steps, 1), _F), targets, mask, {"phase": phase})

    def held_out_error(self, outputs: Float[Array, "*B T n_out"], trials: Trials) -> jax.Array:
        """E above (class docstring) with `phase_free`, else the masked MSE against `trials.targets`."""
        if not self.phase_free:
            return super().held_out_error(outputs, trials)
        T = outputs.shape[-2]
        if T <= self.settle_steps:
            raise ValueError(f"a phase-free check needs more than settle = {self.settle_steps} steps (one cycle by "
                             f"default), got {T}: raise n_steps (or val_steps), or set settle")
        t = jnp.arange(T)
        judged = trials.mask * (t >= self.settle_steps)[:, None].astype(trials.mask.dtype)  # [*B, T, n_out]
        shifted = jax.vmap(lambda s: self._targets(t + s))(jnp.arange(self.cycle))  # [cycle, T, n_out]
        shifted = shifted.reshape((self.cycle,) + (1,) * (outputs.ndim - 2) + shifted.shape[1:])
        squared = jnp.sum(judged * (outputs - shifted) ** 2, axis=(-2, -1))  # [cycle, *B]
        return jnp.sum(jnp.min(squared, axis=0)) / jnp.maximum(jnp.sum(judged), 1.0)
