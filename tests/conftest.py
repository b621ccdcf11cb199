import atexit
import itertools
import os
import shutil
import tempfile

# The suite compiles hundreds of tiny programs, where XLA's optimisations cost more compile time
# than they save (measured: 35 % less CPU for tests/test_cli.py and test_report.py); set before
# jax is imported so that the CLI subprocesses the tests start inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Many tests build programs identical to another test's (a trainer per run, a CLI process per
# command): XLA's persistent compilation cache, private to this test process and the CLI
# processes it starts, compiles each once (measured: tests/test_ensemble.py's ensemble =
# separate runs 53 → 30 user CPU-s). No size limit: a limit turns on eviction, which scans the
# whole cache directory at every write (the suite took 16.6 instead of 12 minutes). An entry
# read while another process writes it fails to decompress, and jax then compiles (a warning).
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="errorforcing-tests-xla-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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
