"""Shared test set-up: a persistent XLA compilation cache across test runs."""

import os
import tempfile

import jax

# Tests compile the same tiny networks many times (each run of train.py, each
# subprocess); caching the compiled programs keeps the suite fast.
CACHE_DIR = os.path.join(tempfile.gettempdir(), 'pointwise-test-xla-cache')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', CACHE_DIR)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# XLA's backend optimisations (LLVM's) are not what the tests check, and
# without them the many small programs the tests build compile about twice
# as fast. Subprocesses inherit the flag (tests append theirs to it).
os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0']))
jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
