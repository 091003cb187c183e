"""ops/onednn: where the oneDNN convolutions are used, and the errors when
they can't be. Their values and gradients against lax are in
tests/test_ops.py (every conv case, whole networks, the loss curve)."""

import os

import jax
import jax.numpy as jnp
import pytest

import config_checks
import ops
from configs import base
from ops import conv as conv_ops, onednn
from tests.helpers import ops_config


@pytest.fixture
def fresh_reason():
  """unavailable_reason() re-evaluated inside the test, and again after."""
  onednn.unavailable_reason.cache_clear()
  yield
  onednn.unavailable_reason.cache_clear()


def test_built_by_setup_in_ci():
  """make setup builds the library: in CI it must be there and current, or
  every oneDNN test would be skipped without anyone noticing (they still
  skip on a CPU without AVX-512, which says so)."""
  if not os.environ.get('CI'):
    pytest.skip('only CI guarantees the set-up ran')
  assert onednn.LIBRARY.exists()
  assert onednn.LIBRARY.stat().st_mtime >= onednn.SOURCE.stat().st_mtime


def test_needs_avx512(monkeypatch, fresh_reason):
  monkeypatch.setattr(onednn.cpu, 'has_avx512', lambda: False)
  assert 'AVX-512' in onednn.unavailable_reason()
  with pytest.raises(ValueError, match='AVX-512.*falls back'):
    ops.resolve(ops_config(conv='onednn'))


def test_missing_library_is_refused_with_the_fix(monkeypatch, tmp_path,
                                                 fresh_reason):
  monkeypatch.setattr(onednn, 'LIBRARY', tmp_path / 'onednn_conv.so')
  assert 'is not built' in onednn.unavailable_reason()
  auto = ops.resolve(ops_config(), 'cpu')  # auto falls back.
  assert (auto.conv, auto.pool) == ('im2col', 'slices')
  for key in ('conv', 'pool'):
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


def test_float32_only():
  x, kernel = jnp.zeros((1, 4, 4, 2), jnp.bfloat16), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match='float32'):
    conv_ops.onednn_conv(x, kernel.astype(jnp.bfloat16))
  with pytest.raises(ValueError, match="not dtype='bfloat16'"):
    ops.resolve(ops_config('bfloat16', conv='onednn'))
