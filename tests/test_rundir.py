"""rundir.py: the run directory's names and its small readers and writers."""

import json
import pathlib
import subprocess
import sys

import numpy as np
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
  (tmp_path / rundir.CONFIG).write_text(json.dumps({'data': {'source': 'tfds'}}))
  config = rundir.load_run_config(str(tmp_path))
  assert config.data.source == 'tfds'


def test_data_stats_in_their_own_file_or_an_old_runs_config_json(tmp_path):
  with pytest.raises(ValueError) as error:  # Neither file.
    rundir.read_data_stats(str(tmp_path))
  assert str(error.value) == (
      f"{tmp_path / rundir.CONFIG} not found: is '{tmp_path}' a train.py "
      'workdir?')
  (tmp_path / rundir.CONFIG).write_text(json.dumps({'seed': 0}))
  with pytest.raises(ValueError) as error:
    rundir.read_data_stats(str(tmp_path))
  assert str(error.value) == (
      f'{tmp_path} has no data_stats.json (nor data stats in its '
      'config.json): rerun its train.py command to write it (a finished run '
      'takes no step).')
  # A run saved before data_stats.json: config.json carried them, as data,
  # not config.
  (tmp_path / rundir.CONFIG).write_text(json.dumps(
      {'seed': 0, 'data_stats': [[0.5] * 3, [0.25] * 3]}))
  assert rundir.read_data_stats(str(tmp_path)) == ((0.5,) * 3, (0.25,) * 3)
  today = rundir.with_added_keys({'seed': 0})
  assert rundir.load_run_config(str(tmp_path)).to_dict() == today
  assert rundir.saved_training_changes(str(tmp_path), today) == []
  # The file, where there is one, is what counts.
  stats = (np.float32([0.4, 0.5, 0.6]), (0.1, 0.2, 0.3))
  rundir.write_data_stats(str(tmp_path), stats)
  assert json.loads((tmp_path / 'data_stats.json').read_text()) == {
      'mean': [float(np.float32(v)) for v in (0.4, 0.5, 0.6)],
      'std': [0.1, 0.2, 0.3]}
  assert rundir.read_data_stats(str(tmp_path)) == (
      tuple(float(v) for v in stats[0]), (0.1, 0.2, 0.3))


def test_load_run_config_moves_old_op_keys_to_ops(tmp_path):
  """Runs saved before config.ops kept the op choices in model and at the
  top level; they are read back under ops."""
  (tmp_path / rundir.CONFIG).write_text(json.dumps(
      {'model': {'name': 'googlenet', 'conv_impl': 'im2col',
                 'pool_impl': 'slices', 'norm_impl': 'xla'},
       'cpu_vector_width': '256'}))
  config = rundir.load_run_config(str(tmp_path)).to_dict()
  for key in rundir.ADDED_KEYS:
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node.pop(leaf)
  assert config == {'model': {'name': 'googlenet'}, 'data': {},
                    'ops': {'conv': 'im2col', 'pool': 'slices',
                            'norm': 'xla', 'cpu_vector_width': '256'}}


def test_a_network_field_added_later_is_set_for_that_networks_runs_only(
    tmp_path):
  """A cifar_fast run saved before model.stem_pool_first resumes under
  today's config (the field's old behaviour, False); a GoogLeNet run, whose
  network has no such field, does not gain it."""
  from configs import cifar_fast, googlenet  # pylint: disable=g-import-not-at-top
  today = cifar_fast.get_config().to_dict()
  old = json.loads(json.dumps(today))
  del old['model']['stem_pool_first']
  (tmp_path / rundir.CONFIG).write_text(json.dumps(old))
  assert rundir.saved_training_changes(str(tmp_path), today) == []
  today['model']['stem_pool_first'] = True
  assert rundir.saved_training_changes(str(tmp_path), today) == [
      'model.stem_pool_first: False -> True']
  plain = googlenet.get_config().to_dict()
  assert 'stem_pool_first' not in rundir.with_added_keys(plain)['model']


def test_a_run_saved_before_added_keys_is_unchanged(tmp_path):
  """A config.json written before ema_decay and eval_flip existed trains as
  today's config with them off: resumable, not stale."""
  from configs import base  # pylint: disable=g-import-not-at-top
  today = base.get_config().to_dict()
  old = {k: v for k, v in today.items() if k not in ('ema_decay', 'eval_flip')}
  (tmp_path / rundir.CONFIG).write_text(json.dumps(old))
  assert rundir.saved_training_changes(str(tmp_path), today) == []
  assert rundir.load_run_config(str(tmp_path)).eval_flip is False
  assert rundir.saved_training_changes(
      str(tmp_path), today | {'ema_decay': 0.99}) == ['ema_decay: 0.0 -> 0.99']


def test_a_knob_added_with_a_dotted_key_keeps_a_saved_run_valid(
    tmp_path, monkeypatch):
  """Issue 25: a model knob added since a run was saved made it stale
  ('<absent>' -> its default), with no flag to give it back, and a dotted
  ADDED_KEYS entry raised. Here model.fuse_pointwise plays the knob: the run
  was saved before it existed, and its default trains as the run did."""
  from configs import base  # pylint: disable=g-import-not-at-top
  today = base.get_config().to_dict()
  old = json.loads(json.dumps(today))
  del old['model']['fuse_pointwise']
  (tmp_path / rundir.CONFIG).write_text(json.dumps(old))
  assert rundir.saved_training_changes(str(tmp_path), today) == [
      "model.fuse_pointwise: '<absent>' -> True"]  # Stale without the entry.
  monkeypatch.setitem(rundir.ADDED_KEYS, 'model.fuse_pointwise', True)
  assert rundir.saved_training_changes(str(tmp_path), today) == []
  assert rundir.load_run_config(str(tmp_path)).model.fuse_pointwise is True
  # The knob's other value still changes training.
  unfused = json.loads(json.dumps(today))
  unfused['model']['fuse_pointwise'] = False
  assert rundir.saved_training_changes(str(tmp_path), unfused) == [
      'model.fuse_pointwise: True -> False']
  # A group the saved config lacks altogether is made.
  monkeypatch.setitem(rundir.ADDED_KEYS, 'model.extra.depth', 2)
  added = rundir.with_added_keys({})['model']
  assert added['fuse_pointwise'] is True and added['extra'] == {'depth': 2}


# A saved config.json (as JSON reads it back) and the same config in Python.
SAVED = {'learning_rate': 0.05, 'step_epochs': [0.5, 0.75],
         'model': {'name': 'googlenet', 'width': 0.25},
         'data': {'source': '/data/cifar10', 'cache_dir': '/cache'},
         'ops': {'conv': 'im2col'}, 'log_every_steps': 50}


def current(**changes):
  """SAVED as a Python config, with tuples, and `changes` ('a.b': value)."""
  config = json.loads(json.dumps(SAVED))
  config['step_epochs'] = tuple(config['step_epochs'])
  for key, value in changes.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return config


def test_training_changes_none_for_the_same_config():
  # Tuples against the lists JSON gives back.
  assert rundir.training_changes(SAVED, current()) == []


def test_training_changes_lists_each_training_key():
  changes = current(learning_rate=0.3, step_epochs=(0.3, 0.6),
                    **{'model.width': 0.5, 'model.module': 'naive'})
  assert rundir.training_changes(SAVED, changes) == [
      'learning_rate: 0.05 -> 0.3',
      "model.module: '<absent>' -> 'naive'",
      'model.width: 0.25 -> 0.5',
      'step_epochs: [0.5, 0.75] -> [0.3, 0.6]']


def test_training_changes_a_key_gone_from_the_config():
  changes = current()
  del changes['model']['width']
  assert rundir.training_changes(SAVED, changes) == [
      "model.width: 0.25 -> '<absent>'"]


def test_training_changes_ignores_bookkeeping():
  bookkeeping = {
      'log_every_steps': 1, 'eval_every_steps': 7, 'eval_batch_size': 64,
      'checkpoint_every_steps': 9, 'keep_checkpoints': 1,
      'stop_after_steps': 3, 'distributed': True, 'data.data_dir': '/tfds',
      'data.cache_dir': '/elsewhere', 'data.num_workers': 4,
      'ops.conv': 'xla', 'ops.pool': 'slices'}
  assert rundir.training_changes(SAVED, current(**bookkeeping)) == []
  # Only top-level and ops.* keys are bookkeeping, not a model's namesake.
  assert rundir.training_changes(
      SAVED, current(**bookkeeping, **{'model.log_every_steps': 1})) == [
          "model.log_every_steps: '<absent>' -> 1"]


def test_training_changes_data_source():
  moved = current(**{'data.source': 'other/cifar10-train.tar.gz'})
  assert rundir.training_changes(SAVED, moved) == []  # The same data, moved.
  for builtin in ('tfds', 'synthetic'):
    assert rundir.training_changes(
        SAVED, current(**{'data.source': builtin})) == [
            f"data.source: '/data/cifar10' -> '{builtin}'"]
    saved = current(**{'data.source': builtin})
    assert rundir.training_changes(saved, SAVED) == [
        f"data.source: '{builtin}' -> '/data/cifar10'"]
  assert rundir.training_changes(
      current(**{'data.source': 'tfds'}),
      current(**{'data.source': 'synthetic'})) == [
          "data.source: 'tfds' -> 'synthetic'"]


def test_training_changes_nan_equals_nan():
  # A run saved with a NaN value resumes with that value, and only that.
  nan = float('nan')
  assert rundir.training_changes({'learning_rate': nan},
                                 {'learning_rate': nan}) == []
  assert rundir.training_changes({'learning_rate': nan},
                                 {'learning_rate': 0.1}) == [
                                     'learning_rate: nan -> 0.1']


def test_load_run_config_corrupt_file_names_it(tmp_path):
  (tmp_path / rundir.CONFIG).write_text('{"seed": ')
  with pytest.raises(ValueError, match='config.json is not valid JSON'):
    rundir.load_run_config(str(tmp_path))


def test_training_changes_counts_source_keys_only_for_their_source():
  # A run saved before the synthetic source existed has none of its keys.
  old = {'data': {'source': '/data/cifar.tar.gz', 'dataset': 'cifar10'}}
  new = {'data': {'source': '/data/cifar.tar.gz', 'dataset': 'mnist',
                  'synthetic_seed': 0, 'synthetic_size': [50, 10]}}
  assert rundir.training_changes(old, new) == []
  synthetic = {'data': {'source': 'synthetic', 'synthetic_seed': 1,
                        'synthetic_size': [50, 10]}}
  assert rundir.training_changes(new, synthetic) == [  # Neither reads TFDS.
      "data.source: '/data/cifar.tar.gz' -> 'synthetic'",
      'data.synthetic_seed: 0 -> 1']
  tfds = {'data': {'source': 'tfds', 'dataset': 'cifar100'}}
  assert rundir.training_changes(new, tfds) == [
      "data.dataset: 'mnist' -> 'cifar100'",
      "data.source: '/data/cifar.tar.gz' -> 'tfds'"]


def test_eval_file():
  assert rundir.eval_file('test') == 'eval_test.json'
  assert rundir.eval_file('train[90%:]') == 'eval_train_90-100.json'
  # Issue 25: the two halves of a split shared one file name.
  assert rundir.eval_file('train[:90%]') == 'eval_train_0-90.json'
  assert rundir.eval_file('train[10%:20%]') == 'eval_train_10-20.json'


def test_the_readme_documents_the_eval_file_names():
  readme = (pathlib.Path(rundir.__file__).parent / 'README.md').read_text()
  assert (f"`train[90%:]` → `{rundir.eval_file('train[90%:]')}`"
          in readme.replace('\n  ', ' '))


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
