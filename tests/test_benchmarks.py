"""benchmarks/: the tools share one flags library and run as absl apps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_benchmarks_import_into_one_process():
  # Flags of the same name (--json, --repeats, --steps, --split) must not
  # clash when tests import several tools; a fresh process, so no earlier
  # import hides a clash. profile_step imports bench_train.
  code = ('from benchmarks import bench_input, bench_pointwise, '
          'profile_step, bench_train, benchlib\n'
          'from scripts import report\n'
          'from absl import flags\n'
          'print(sorted(n for n in ("json", "repeats", "steps", "split") '
          'if n in flags.FLAGS))\n')
  run = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                       capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.split('\n')[-2] == "['json', 'repeats', 'split', 'steps']"


def test_bench_input_reads_its_flags(tmp_path):
  # Two classes of four 8x8 images; --split takes the first half of each.
  rng = np.random.default_rng(0)
  for cls in ('cat', 'dog'):
    os.makedirs(tmp_path / 'images' / 'train' / cls)
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
          tmp_path / 'images' / 'train' / cls / f'{i}.png')
  source, cache = str(tmp_path / 'images'), tmp_path / 'cache'
  run = subprocess.run(
      [sys.executable, 'benchmarks/bench_input.py', '--json',
       f'--source={source}', '--split=train[:50%]', f'--cache_dir={cache}',
       '--batch_size=3', '--steps=2'],
      cwd=REPO, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  out = json.loads(run.stdout)
  assert out['source'] == f'{source}:train[:50%]'
  assert (out['num_examples'], out['image_shape'], out['class_names']) == (
      4, [8, 8, 3], ['cat', 'dog'])
  assert (out['batch_size'], out['steps']) == (3, 2)
  assert list(cache.glob('*.npz'))  # The decoded split was cached there.
