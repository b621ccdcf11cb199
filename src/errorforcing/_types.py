"""Shape aliases used in type hints throughout the package (jaxtyping)."""

from jaxtyping import Array, Float, PRNGKeyArray

Scalar = Float[Array, ""]
State = Float[Array, " n_rec"]
Input = Float[Array, " n_in"]
Output = Float[Array, " n_out"]
InputSeq = Float[Array, "T n_in"]
TargetSeq = Float[Array, "T n_out"]
StateSeq = Float[Array, "T n_rec"]
Key = PRNGKeyArray

__all__ = ["Array", "Float", "Key", "Scalar", "State", "Input", "Output", "InputSeq", "TargetSeq", "StateSeq"]
