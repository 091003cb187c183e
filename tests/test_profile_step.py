"""benchmarks/profile_step.py: the trace is read back, attributed to layers."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_profile_attributes_every_instruction_to_a_layer_kind():
  # A tiny GoogLeNet (conv, batch norm, max-pool, 1x1s) and its CPU fast paths.
  run = subprocess.run(
      [sys.executable, 'benchmarks/profile_step.py', '--json', '--steps=1',
       '--batch=8', '--config=configs/test.py'],
      cwd=REPO, capture_output=True, text=True, env=os.environ)
  assert run.returncode == 0, run.stderr[-3000:]
  p = json.loads(run.stdout)['models']['config']
  kinds = {(row['pass'], row['kind']): row['ms'] for row in p['by_kind']}
  for pass_ in ('forward', 'backward'):
    for kind in ('conv kxk', 'batch norm', 'pool', '1x1 (pointwise)'):
      assert kinds.get((pass_, kind), 0) > 0, (pass_, kind, kinds)
  # The kinds partition the instructions; threads are busy within the span.
  # (benchlib.print_json rounds every float to 4 decimals: 0.5e-4 per value.)
  rounding = 0.5e-4 * (len(kinds) + 1)
  assert abs(sum(kinds.values()) - p['op_ms']) <= rounding + 1e-9
  assert p['busy_ms'] and all(0 < b <= p['span_ms'] for b in p['busy_ms'])
  assert sum(p['busy_ms']) <= p['op_ms'] + 0.5e-4 * (len(p['busy_ms']) + 1)
  assert p['top_ops'] and p['top_ops'][0]['ms'] >= p['top_ops'][-1]['ms']


def test_busy_time_is_the_union_of_the_intervals():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  # [0, 4) and [2, 6) overlap in [2, 4); [10, 11) and [11, 13) touch.
  assert profile_step.busy_ps([(2, 6), (10, 11), (0, 4), (11, 13)]) == 9
  assert profile_step.busy_ps([(0, 10), (2, 3)]) == 10  # Nested.
  assert profile_step.busy_ps([]) == 0


def test_classify_reads_the_pass_and_the_layer_kind():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  step = 'jit(train_step)/jit(main)'
  assert profile_step.classify(
      f'{step}/jvp(GoogLeNet)/inception_3a/b3x3/conv/conv_general_dilated'
  ) == ('forward', 'conv kxk')
  assert profile_step.classify(
      f'{step}/transpose(jvp(GoogLeNet))/inception_3a/b3x3/bn/mul'
  ) == ('backward', 'batch norm')  # The batch norm inside a conv block.
  assert profile_step.classify(
      f'{step}/transpose(jvp(GoogLeNet))/max_pool/reduce_window_max'
  ) == ('backward', 'pool')
  assert profile_step.classify(
      f'{step}/jvp(GoogLeNet)/inception_3a/pointwise/dot_general'
  ) == ('forward', '1x1 (pointwise)')
  assert profile_step.classify(
      f'{step}/jvp(GoogLeNet)/inception_3a/concatenate') == ('forward',
                                                             'concat')
  assert profile_step.classify(f'{step}/augment_batch/select_n') == (
      'update', 'input')
  assert profile_step.classify(f'{step}/optax/mul') == ('update', 'other')
