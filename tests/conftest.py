import itertools
import os

# The suite compiles hundreds of tiny programs, where XLA's optimisations cost more compile time
# than they save (measured: 35 % less CPU for tests/test_cli.py and test_report.py); set before
# jax is imported so that the CLI subprocesses the tests start inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import pytest

# Gradient comparisons need float64; every test runs in it (the library itself takes its
# dtype from the arrays it is given, float32 by default).
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A fresh, deterministic key per call: `getkey()`."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture(scope="module")
def fast_compile():
    """For modules that compile dozens of tiny programs, where XLA's optimisations cost more
    than they save (`pytestmark = pytest.mark.usefixtures("fast_compile")`)."""
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Each xdist worker runs dozens of modules in one process; without this, every program
    they compiled stays cached (a worker reached 5 GiB), though no module reuses another's."""
    yield
    jax.clear_caches()
