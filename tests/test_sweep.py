"""Sweep tooling: failures are recorded, finished runs skipped, dry runs parse."""

import json
import os
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs.common import load_config, load_module
from configs.sweeps import common
from tests.conftest import CACHE_DIR
from tests.helpers import make_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = ['naive_vs_reduced', 'reduction_ratio', 'reduce_activation',
          'five_by_five', 'flops_matched']

SWEEP_FILE = '''
from configs.sweeps.common import Run

def get_sweep(arg=None):
  return [Run('good', 'configs/test.py', {'num_train_steps': 3}),
          Run('bad', 'configs/test.py', {'model.name': 'no_such_net'})]
'''


def sweep(*args):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE_DIR,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return subprocess.run([sys.executable, 'scripts/sweep.py', *args], cwd=REPO,
                        capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_failed_run_is_recorded_and_finished_run_skipped(tmp_path):
  make_folder(tmp_path / 'data', {'train': 10})
  (tmp_path / 'sweep.py').write_text(SWEEP_FILE)
  args = [f'--sweep={tmp_path}/sweep.py', f'--workdir={tmp_path}/runs',
          f'--config.data.source={tmp_path}/data',
          f'--config.data.cache_dir={tmp_path}/cache']
  first = sweep(*args)
  assert first.returncode != 0
  assert '1 of 2 runs did not finish: bad' in first.stderr
  summary = lambda run: json.loads((tmp_path / 'runs' / run / 'summary.json').read_text())
  assert summary('good')['status'] == 'ok'
  assert summary('good')['steps'] == 3
  assert summary('bad')['status'] == 'failed'
  assert 'no_such_net' in summary('bad')['error']
  mtime = os.path.getmtime(tmp_path / 'runs/good/summary.json')
  second = sweep(*args)
  assert '[good] already finished: skipped.' in second.stderr
  assert os.path.getmtime(tmp_path / 'runs/good/summary.json') == mtime


# flops_matched searches for its width when loaded: over 10 s.
@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n == 'flops_matched' else n
    for n in SWEEPS])
def test_dry_run_prints_commands_that_parse(name):
  out = sweep(f'--sweep=configs/sweeps/{name}.py:size=cpu', '--workdir=/tmp/x',
              '--dry_run', '--config.data.source=/data/cifar.tar.gz')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) >= 2
  for line in lines:
    argv = shlex.split(line)
    assert argv[:2] == ['python', 'train.py']
    fv, argv = flags.FlagValues(), ['train.py'] + argv[2:]
    config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv,
                                    lock_config=True)
    flags.DEFINE_string('workdir', None, '', flag_values=fv)
    fv(argv)  # Raises on a bad config file or an unknown key.
    assert fv.config.data.source == '/data/cifar.tar.gz'
    assert fv.workdir.startswith('/tmp/x/')


# Zhang et al.'s small Inception net (models/small_inception.py), written out
# again here: ('inception', c1, c3) or ('downsample', k).
SMALL_INCEPTION = [('inception', 32, 32), ('inception', 32, 48),
                   ('downsample', 80), ('inception', 112, 48),
                   ('inception', 96, 64), ('inception', 80, 80),
                   ('inception', 48, 96), ('downsample', 96),
                   ('inception', 176, 160), ('inception', 176, 160)]


def small_inception_macs(config) -> int:
  """MACs per image counted by hand: H_out * W_out * k * k * C_in * C_out per
  conv; no pool branch; a reduced module's 1x1 reduction to reduce_ratio *
  C_in channels reads the input alongside the 1x1 branch."""
  m = config.model
  w = lambda c: max(1, round(c * m.width))
  size, c = config.image_size, w(96)
  macs = size * size * 9 * 3 * c  # conv1, SAME.
  for kind, *widths in SMALL_INCEPTION:
    if kind == 'downsample':  # 3x3/2 VALID conv || max-pool.
      size = (size - 3) // 2 + 1
      macs += size * size * 9 * c * w(widths[0])
      c += w(widths[0])
      continue
    c1, c3 = map(w, widths)
    if m.module == 'naive':
      macs += size * size * (c * c1 + 9 * c * c3)
    else:
      r = max(1, round(c * m.reduce_ratio))
      macs += size * size * (c * (c1 + r) + 9 * r * c3)
    c = c1 + c3
  return macs + c * m.num_classes  # The dense head.


@pytest.mark.slow
def test_flops_matched_width_against_a_hand_count():
  reduced, naive, matched = load_sweep('flops_matched')
  reduced, naive = load_config(reduced.config), load_config(naive.config)
  config = load_config(matched.config)
  config.model.width = matched.overrides['model.width']
  assert config.model.name == 'small_inception' and config.model.pool == 'none'
  target = small_inception_macs(reduced)
  assert small_inception_macs(config) == pytest.approx(target, rel=0.02)
  assert small_inception_macs(naive) > 1.2 * target  # Unmatched: costs more.
  assert config.model.width < naive.model.width


def load_sweep(name):
  return load_module(f'configs/sweeps/{name}.py').get_sweep('size=cpu')


def test_grid_helpers():
  assert common.product(a=[1, 2], b=['x']) == [{'a': 1, 'b': 'x'},
                                               {'a': 2, 'b': 'x'}]
  assert common.zip_(a=[1, 2], b=['x', 'y']) == [{'a': 1, 'b': 'x'},
                                                 {'a': 2, 'b': 'y'}]
  with pytest.raises(ValueError, match='differ in length'):
    common.zip_(a=[1], b=[1, 2])
