"""rundir.py: the run directory's names and its small readers and writers."""

import json
import pathlib
import subprocess
import sys

import pytest

import rundir


def test_flatten():
  tree = {'model': {'name': 'x', 'width': 0.5, 'opts': {'a': True}},
          'steps': (0.5, 0.75), 'dir': None, 'empty': {}}
  assert rundir.flatten(tree) == {
      'model.name': 'x', 'model.width': 0.5, 'model.opts.a': True,
      'steps': (0.5, 0.75), 'dir': None, 'empty': {}}
  # For TensorBoard's hparams: scalars stay, anything else becomes text.
  assert rundir.flatten(tree, stringify=True) == {
      'model.name': 'x', 'model.width': 0.5, 'model.opts.a': True,
      'steps': '(0.5, 0.75)', 'dir': 'None', 'empty': '{}'}


def test_json_round_trip_and_status(tmp_path):
  assert rundir.read_status(tmp_path) is None  # No summary.json.
  rundir.write_json_atomic(tmp_path / rundir.SUMMARY,
                           {'status': 'ok', 'stats': (1, 2)})
  assert rundir.read_json(tmp_path / rundir.SUMMARY) == {
      'status': 'ok', 'stats': [1, 2]}
  assert [p.name for p in tmp_path.iterdir()] == [rundir.SUMMARY]  # No .tmp.
  assert rundir.read_status(tmp_path) == 'ok'
  (tmp_path / rundir.SUMMARY).write_text('{"status": ')  # Cut short.
  assert rundir.read_status(tmp_path) is None
  (tmp_path / rundir.SUMMARY).write_text('["ok"]')
  assert rundir.read_status(tmp_path) is None


def test_load_run_config(tmp_path):
  with pytest.raises(ValueError, match='not found: is .* a train.py workdir'):
    rundir.load_run_config(str(tmp_path))
  (tmp_path / rundir.CONFIG).write_text(json.dumps(
      {'data': {'source': 'tfds'}, rundir.STATS_KEY: [[0.5] * 3, [0.25] * 3]}))
  config = rundir.load_run_config(str(tmp_path))
  assert config.data.source == 'tfds'
  assert config[rundir.STATS_KEY][1] == [0.25] * 3


def test_load_run_config_moves_old_op_keys_to_ops(tmp_path):
  """Runs saved before config.ops kept the op choices in model and at the
  top level; they are read back under ops."""
  (tmp_path / rundir.CONFIG).write_text(json.dumps(
      {'model': {'name': 'googlenet', 'conv_impl': 'im2col',
                 'pool_impl': 'slices', 'norm_impl': 'xla'},
       'cpu_vector_width': '256'}))
  config = rundir.load_run_config(str(tmp_path)).to_dict()
  assert config == {'model': {'name': 'googlenet'},
                    'ops': {'conv': 'im2col', 'pool': 'slices',
                            'norm': 'xla', 'cpu_vector_width': '256'}}


def test_eval_file():
  assert rundir.eval_file('test') == 'eval_test.json'
  assert rundir.eval_file('train[90%:]') == 'eval_train_90.json'


def test_summary_keys_are_unique():  # One CSV column each.
  assert len(set(rundir.SUMMARY_KEYS)) == len(rundir.SUMMARY_KEYS)


def test_imports_nothing_heavy():
  code = ('import sys, rundir; print(sorted({m.split(".")[0] for m in '
          'sys.modules} & {"jax", "flax", "matplotlib", "numpy", '
          '"tensorflow"}))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True,
                       cwd=pathlib.Path(rundir.__file__).parent)
  assert out.stdout.strip() == '[]'
