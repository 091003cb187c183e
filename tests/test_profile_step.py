"""scripts/profile_step.py: the trace is read back and attributed to layers."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_profile_attributes_every_instruction_to_a_layer_kind():
  # A tiny GoogLeNet (conv, batch norm, max-pool, 1x1s) and its CPU fast paths.
  run = subprocess.run(
      [sys.executable, 'scripts/profile_step.py', '--json', '--steps=1',
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
