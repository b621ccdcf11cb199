"""Shape aliases used in type hints throughout the package (jaxtyping).

Dimension names, as in SPEC.md: `N` the state size (hidden units), `n_in` inputs, `n_out`
outputs, `T` time steps, `B` trials in a batch. The tests run under jaxtyping's import hook
(tests/conftest.py), so an annotated shape that does not hold fails the test."""

from jaxtyping import Array, Float, PRNGKeyArray

Scalar = Float[Array, ""]
State = Float[Array, " N"]
Input = Float[Array, " n_in"]
Output = Float[Array, " n_out"]
Key = PRNGKeyArray

__all__ = ["Array", "Float", "Key", "Scalar", "State", "Input", "Output"]
