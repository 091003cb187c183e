"""ops/onednn: where the oneDNN convolutions are used, and the errors when
they can't be. Their values and gradients against lax are in
tests/test_ops.py (every conv case, whole networks, the loss curve)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import config_checks
import ops
from configs import base
from ops import conv as conv_ops, onednn, pool as pool_ops
from tests.helpers import assert_close, normal, ops_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason=f'oneDNN: {onednn.unavailable_reason()}')


@pytest.fixture
def fresh_reason():
  """unavailable_reason() re-evaluated inside the test, and again after."""
  onednn._library.cache_clear()
  onednn.has_native_bf16.cache_clear()
  yield
  onednn._library.cache_clear()
  onednn.has_native_bf16.cache_clear()


def run_python(code: str, **env) -> subprocess.CompletedProcess:
  """`code` in a fresh interpreter at the repo root, with `env` added."""
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                        cwd=ROOT, env=os.environ | env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_built_by_setup_in_ci():
  """make setup builds the library: in CI it must be there and current, or
  every oneDNN test would be skipped without anyone noticing."""
  if not os.environ.get('CI'):
    pytest.skip('only CI guarantees the set-up ran')
  assert onednn.LIBRARY.exists()
  assert onednn.LIBRARY.stat().st_mtime >= onednn.SOURCE.stat().st_mtime


@needs_onednn
def test_bfloat16_follows_the_isa_onednn_dispatches(fresh_reason):
  """bfloat16 runs where oneDNN's ISA has bfloat16 instructions: read here
  from /proc/cpuinfo, and capped by ONEDNN_MAX_CPU_ISA, which float32 still
  runs under."""
  if 'ONEDNN_MAX_CPU_ISA' not in os.environ:  # (make test runs it capped.)
    cpu_bf16 = bool({'avx512_bf16', 'amx_bf16'} & ops.cpu.flags())
    assert onednn.supports('bfloat16') == cpu_bf16
  assert onednn.supports('float32') and not onednn.supports('float16')
  capped = run_python('''
      import ops
      from ops import onednn
      from tests.helpers import ops_config
      print(onednn.supports('float32'), onednn.supports('bfloat16'))
      print(ops.resolve(ops_config('bfloat16'), 'cpu'))
      try:
        ops.resolve(ops_config('bfloat16', conv='onednn'))
      except ValueError as e:
        print(e)
      ''', ONEDNN_MAX_CPU_ISA='AVX2')
  lines = capped.stdout.splitlines()
  assert lines[:2] == ['True False', "Ops(conv='im2col', pool='slices', "
                       "norm='custom_vjp', pointwise='xla')"], capped.stderr
  assert 'needs a CPU with bfloat16 instructions' in lines[2]
  # The run says once, in its log, that bfloat16 will be slow here.
  assert capped.stderr.count('slower than float32 here') == 1


@needs_onednn
def test_a_plan_made_on_one_thread_runs_on_another():
  """XLA runs a call on any of its threads. oneDNN's default scratchpad is
  per thread and sized when a primitive is made, so a GEMM-based weight
  gradient (what oneDNN picks for this shape on AVX2) made on one thread
  wrote past the scratchpad of the next and crashed the process."""
  done = run_python('''
      import threading
      import jax, jax.numpy as jnp
      from ops.conv import onednn_conv
      x, w = jnp.ones((8, 4, 4, 1)), jnp.ones((5, 5, 1, 3))
      grad = jax.jit(jax.grad(
          lambda x, w: jnp.sum(onednn_conv(x, w, 1, 'SAME')), argnums=1))
      sums = []
      thread = threading.Thread(target=lambda: sums.append(grad(x, w).sum()))
      thread.start()
      thread.join()
      sums.append(grad(x, w).sum())
      print(*map(float, sums))
      ''', ONEDNN_MAX_CPU_ISA='AVX2')
  assert done.returncode == 0, done.stderr[-2000:]
  # With x and dy all ones, dw at a tap counts the outputs whose input
  # there falls inside the 4x4 map: per axis, `taps` summed over the 5.
  taps = sum(sum(0 <= o + t - 2 < 4 for o in range(4)) for t in range(5))
  assert done.stdout.split() == [str(8.0 * 3 * taps**2)] * 2


def test_missing_library_is_refused_with_the_fix(monkeypatch, tmp_path,
                                                 fresh_reason):
  monkeypatch.setattr(onednn, 'LIBRARY', tmp_path / 'onednn_conv.so')
  assert 'is not built' in onednn.unavailable_reason()
  auto = ops.resolve(ops_config(), 'cpu')  # auto falls back.
  assert (auto.conv, auto.pool, auto.pointwise) == ('im2col', 'slices', 'xla')
  for key in ('conv', 'pool', 'pointwise'):
    with pytest.raises(ValueError,
                       match=r'not available.*python -m ops\.onednn\.build'):
      ops.resolve(ops_config(**{key: 'onednn'}))
  config = base.get_config()
  config.ops.conv = 'onednn'
  with pytest.raises(ValueError, match='make setup'):
    config_checks.check_config(config)  # Before any data or compilation.


def test_stale_library_is_refused(monkeypatch, tmp_path, fresh_reason):
  library = tmp_path / 'onednn_conv.so'
  library.write_bytes(b'')
  os.utime(library, (0, 0))  # Older than ops/onednn/onednn_conv.cc.
  monkeypatch.setattr(onednn, 'LIBRARY', library)
  assert 'is older than' in onednn.unavailable_reason()


def test_cpu_only(monkeypatch, fresh_reason):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert 'CPU only' in onednn.unavailable_reason()
  assert ops.resolve(ops_config()).conv == 'xla'


def test_build_without_headers_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, 'PREFIX', tmp_path)
  with pytest.raises(RuntimeError, match='pip install -r requirements.txt'):
    onednn.build()


def test_float32_or_bfloat16_only():
  x = jnp.zeros((1, 4, 4, 2), jnp.float16)
  with pytest.raises(ValueError, match="float32 or bfloat16, not dtype='fl"):
    conv_ops.onednn_conv(x, jnp.zeros((3, 3, 2, 2), jnp.float16))


@needs_onednn
def test_bfloat16_conv_and_pool_against_float32_lax():
  """bfloat16 in, bfloat16 out; the weight gradient summed in float32. On a
  CPU without bfloat16 instructions, the refusal instead."""
  x = normal(0, (4, 9, 9, 16)).astype(jnp.bfloat16)
  kernel = (normal(1, (3, 3, 16, 8)) / 6).astype(jnp.bfloat16)
  if not onednn.supports('bfloat16'):
    with pytest.raises(ValueError, match='bfloat16 instructions'):
      conv_ops.onednn_conv(x, kernel)
    return
  wide = lambda a: a.astype(jnp.float32)
  ref = lambda x, k: conv_ops.lax_conv(wide(x), wide(k), 2, 'SAME')
  g = normal(2, ref(x, kernel).shape)
  y0, vjp0 = jax.vjp(ref, x, kernel)
  y1, vjp1 = jax.jit(lambda x, k: jax.vjp(
      lambda x, k: conv_ops.onednn_conv(x, k, 2, 'SAME'), x, k))(x, kernel)
  assert y1.dtype == jnp.bfloat16
  assert_close(wide(y1), y0, rtol=1e-2, atol=1e-2)
  (dx0, dk0), (dx1, dk1) = vjp0(g), vjp1(g.astype(jnp.bfloat16))
  assert dx1.dtype == dk1.dtype == jnp.bfloat16
  assert_close(wide(dx1), dx0, rtol=1e-2, atol=2e-2)
  assert_close(wide(dk1), dk0, rtol=1e-2, atol=5e-2)
  # A max is exact in any dtype, and so is where its gradient goes.
  pool = lambda x: pool_ops.onednn_max_pool(x, 3, 2, 'SAME')
  slices = lambda x: pool_ops.max_pool(wide(x), 3, 2, 'SAME')
  y, vjp = jax.vjp(pool, x)
  np.testing.assert_array_equal(wide(y), slices(x))
  gp = normal(3, y.shape).astype(jnp.bfloat16)
  np.testing.assert_array_equal(wide(vjp(gp)[0]),
                                jax.vjp(slices, x)[1](wide(gp))[0])
