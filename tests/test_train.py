"""End-to-end tests of train.py and eval.py.

No downloads and no local data set: runs train on configs/test.py's default
source, the built-in synthetic data (made in memory). The tests whose subject
is a local source (eval.py on another folder, a moved data folder, a corrupt
image) write tiny folders of 8x8 PNGs in tmp_path; one uses TFDS mock data.
One 6-step run of configs/test.py (the `run6` fixture) is shared by the tests
that only read or copy it.
Subprocesses (the CLIs, SIGTERM, more devices, jax.distributed) share the
persistent XLA compilation cache of tests/conftest.py.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

import allocator
import checkpoints
import eval as eval_tool
import input_pipeline
import ops
import optim
import rundir
import trainer
from configs import test as test_config
from models import build_model
from tests.conftest import CACHE_DIR
from tests.helpers import CLASSES, make_folder

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 6  # configs/test.py: num_train_steps; eval and checkpoint every 3.
# configs/test.py's synthetic data: labels cycle through the classes, so each
# class holds a tenth of a split, and train[:90%] / train[90%:] keep the first
# 90% / the last 10% of every class.
SYNTHETIC_CLASSES = input_pipeline.SYNTHETIC_CLASSES
TRAIN_SIZE, TEST_SIZE = test_config.get_config().data.synthetic_size
TRAIN_PER_CLASS = TRAIN_SIZE // len(SYNTHETIC_CLASSES)
TRAIN_EXAMPLES = len(SYNTHETIC_CLASSES) * (TRAIN_PER_CLASS * 90 // 100)
VAL_PER_CLASS = TRAIN_PER_CLASS - TRAIN_PER_CLASS * 90 // 100
TEST_PER_CLASS = TEST_SIZE // len(SYNTHETIC_CLASSES)


# --- Helpers -----------------------------------------------------------------


def make_config(**overrides):
  """configs/test.py (synthetic data) with flattened `overrides`, e.g.
  make_config(learning_rate=0.3, **{'model.width': 0.125})."""
  config = test_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def runner_of(config, stats) -> trainer.Runner:
  return trainer.Runner(config, stats,
                        build_model(config.model, ops.resolve(config)))


def local_source(folder, cache) -> dict:
  """Overrides that train on an image folder, decoded into `cache`."""
  return {'data.source': str(folder), 'data.cache_dir': str(cache)}


def subprocess_env(devices=None):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE_DIR,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             TF_CPP_MIN_LOG_LEVEL='2')
  if devices:  # A CPU with this many devices, whatever this machine has.
    env['XLA_FLAGS'] = (f'{env.get("XLA_FLAGS", "")} '
                        f'--xla_force_host_platform_device_count={devices}')
    env['JAX_PLATFORMS'] = 'cpu'
  return env


def run_python(*args, devices=None, timeout=300):
  """Runs `python args...` in the repo root; fails with its stderr if rc != 0."""
  proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT,
                        env=subprocess_env(devices), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, (
      f'{args} exited with {proc.returncode}:\n{proc.stderr[-6000:]}')
  return proc


def train_cli(workdir, *overrides):
  return ['train.py', '--config=configs/test.py', f'--workdir={workdir}',
          *overrides]


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def train_steps_logged(workdir):
  return [m['step'] for m in read_metrics(workdir) if 'train/loss' in m]


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def flat_state(state) -> dict:
  """{'params/<path>': array, ...} of params, batch_stats, opt_state, step."""
  out = {'step': np.asarray(jax.device_get(state.step))}
  for name in ('params', 'batch_stats', 'opt_state'):
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        getattr(state, name))[0]:
      out[f'{name}/{jax.tree_util.keystr(path)}'] = np.asarray(
          jax.device_get(leaf))
  return out


def restored(workdir) -> dict:
  """The latest checkpoint of `workdir`, as eval.py restores it."""
  _, state = trainer.restore_for_eval(rundir.load_run_config(workdir), workdir)
  return flat_state(state)


def assert_states_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  different = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not different, f'{len(different)} leaves differ, e.g. {different[:3]}'


def assert_states_close(a: dict, b: dict, rtol, atol):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def snapshot(directory) -> dict:
  """{relative path: (sha256, mtime_ns)} of every file under `directory`:
  equal snapshots mean nothing was changed, rewritten, added or removed."""
  out = {}
  for dirpath, _, filenames in os.walk(directory):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      mtime = os.stat(path).st_mtime_ns
      out[os.path.relpath(path, directory)] = (digest, mtime)
  return out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


# --- Fixtures ----------------------------------------------------------------


@pytest.fixture(scope='module')
def run6(tmp_path_factory):
  """(workdir, summary) of configs/test.py trained for 6 steps in one go."""
  workdir = tmp_path_factory.mktemp('run6') / 'workdir'
  summary = trainer.train_and_evaluate(make_config(), str(workdir))
  return workdir, summary


def copy_run(run6, tmp_path):
  """A copy of the run6 workdir (file mtimes kept) to modify."""
  workdir = tmp_path / 'copy'
  shutil.copytree(run6[0], workdir)
  return workdir


def test_time_to_target_is_the_wall_time_of_the_first_evaluation_reaching_it(
    monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(trainer.time, 'perf_counter', lambda: clock[0])
  timer = trainer.Timer({'wall_seconds': 50.0}, started=100.0)  # Resumed.
  for now, accuracy in [(130.0, 0.85), (160.0, 0.91), (200.0, 0.95)]:
    clock[0] = now
    timer.evaluated(accuracy, target=0.9, step=int(now))
  assert timer.time_to_target == 50.0 + 60.0  # At 160 s, not 200 s.
  assert timer.wall_seconds == 50.0 + 100.0
  # A later session keeps the first time; a target of 0 records none.
  later = trainer.Timer({'time_to_target_s': 110.0}, started=200.0)
  later.evaluated(0.99, target=0.9, step=1)
  assert later.time_to_target == 110.0
  off = trainer.Timer({}, started=0.0)
  off.evaluated(1.0, target=0.0, step=1)
  assert off.time_to_target is None


# --- A run and its outputs ---------------------------------------------------


@pytest.mark.slow
def test_run_writes_summary_metrics_config_events_and_checkpoints(run6):
  workdir, summary = run6
  assert read_json(workdir / 'summary.json') == json.loads(json.dumps(summary))
  assert summary['status'] == 'ok'
  assert summary['model'] == 'googlenet' and summary['module'] == 'reduced'
  for key in ('params', 'macs_per_image', 'xla_flops_per_image',
              'train_step_flops', 'train_images_per_s', 'compile_seconds',
              'train_seconds'):
    assert summary[key] > 0, key
  # The keys the report reads, in their order.
  assert list(summary) == [k for k in rundir.SUMMARY_KEYS if k in summary]
  assert summary['steps'] == STEPS
  assert summary['epochs'] == STEPS / (TRAIN_EXAMPLES // 8)
  assert summary['val_split'] == 'train[90%:]'
  for key in ('val_accuracy', 'best_val_accuracy', 'test_accuracy'):
    assert 0 <= summary[key] <= 1, key
  assert summary['best_val_accuracy'] >= summary['val_accuracy']
  # Wall time spans data, the init's compile and evaluations too (training
  # time holds the step's compile); no target was set.
  assert summary['wall_seconds'] > summary['train_seconds']
  assert summary['train_seconds'] > summary['compile_seconds']
  assert summary['time_to_target_s'] is None
  assert summary['device_kind'] == jax.devices()[0].device_kind
  assert summary['device_count'] == jax.device_count()
  assert summary['jax_version'] == jax.__version__
  assert summary['schedule_warning'] is None  # No warmup: it runs its course.
  # configs/test.py: 3 reduced modules, their 1x1 heads fused.
  assert summary['implementation'] == {
      **dataclasses.asdict(ops.resolve(make_config())),
      'cpu_vector_width': summary['implementation']['cpu_vector_width'],
      'allocator': allocator.current(),  # The process's: pytest's own.
      'fused_1x1': 3, 'unfused_1x1': 0}

  metrics = read_metrics(workdir)  # Every line parses.
  assert train_steps_logged(workdir) == list(range(1, STEPS + 1))
  assert all(np.isfinite(m['train/loss']) for m in metrics if 'train/loss' in m)
  assert [m['step'] for m in metrics if 'val/accuracy' in m] == [3, 6]
  assert metrics[-1]['val/accuracy'] == summary['val_accuracy']

  config = rundir.load_run_config(str(workdir))
  assert config.data.source == 'synthetic' and config.num_train_steps == STEPS
  stats = read_json(workdir / rundir.DATA_STATS)  # Numbers, not strings.
  assert all(isinstance(v, float) and 0 < v < 1
             for v in [*stats['mean'], *stats['std']])
  assert rundir.LEGACY_STATS_KEY not in read_json(workdir / rundir.CONFIG)
  assert list(workdir.glob('events.out.tfevents*'))
  assert checkpoint_steps(workdir) == [3, 6]
  assert len(checkpoint_steps(workdir)) <= config.keep_checkpoints

  # The validation split: the last 10% of every class, scored by the last
  # checkpoint as the end of training measured.
  runner, state = trainer.restore_for_eval(config, str(workdir))
  val = runner.evaluate(state, input_pipeline.load_split(
      config.data, config.data.eval_split))
  check_eval_result(val, SYNTHETIC_CLASSES, VAL_PER_CLASS)
  assert val['accuracy'] == summary['val_accuracy']


def check_eval_result(result, class_names, per_class):
  """An evaluation of `per_class` examples of each of `class_names` (the
  data's classes, maybe fewer than the model's)."""
  confusion = np.array(result['confusion_matrix'])
  num_examples = len(class_names) * per_class
  assert result['num_examples'] == num_examples == confusion.sum()
  absent = len(confusion) - len(class_names)  # The model's other classes.
  assert confusion.sum(1).tolist() == (
      [per_class] * len(class_names) + [0] * absent)
  assert result['accuracy'] == pytest.approx(np.trace(confusion) / num_examples)
  assert np.isfinite(result['loss']) and result['loss'] > 0
  assert list(result['per_class_accuracy']) == list(class_names)
  per_class_accuracy = confusion.diagonal() / per_class
  assert list(result['per_class_accuracy'].values()) == pytest.approx(
      per_class_accuracy[:len(class_names)].tolist(), abs=1e-4)


@pytest.mark.slow
def test_eval_cli_on_the_test_split_and_on_another_folder(run6, tmp_path):
  workdir, summary = run6
  other = tmp_path / 'other'
  make_folder(other, {'test': 4}, seed=1)  # Only test/, 3 classes.
  other_run = copy_run(run6, tmp_path)
  # eval.py decodes the folder into the run's cache_dir: here, not ~/.cache.
  saved = read_json(other_run / rundir.CONFIG)
  saved['data']['cache_dir'] = str(tmp_path / 'cache')
  rundir.write_json_atomic(other_run / rundir.CONFIG, saved)
  config_json = (other_run / rundir.CONFIG).read_bytes()

  commands = [[f'--workdir={workdir}', '--split=test'],
              [f'--workdir={other_run}', '--split=test', f'--data={other}']]
  procs = [subprocess.Popen([sys.executable, 'eval.py', *args], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for args in commands]  # Two at once: two cores.
  try:
    for proc, args in zip(procs, commands):
      out, err = proc.communicate(timeout=300)
      assert proc.returncode == 0, f'eval.py {args}:\n{err[-6000:]}'
      assert 'test: accuracy' in out
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()

  result = read_json(workdir / 'eval_test.json')
  check_eval_result(result, SYNTHETIC_CLASSES, TEST_PER_CLASS)
  assert result['step'] == STEPS and result['source'] == 'synthetic'
  # The restored checkpoint scores what the end of training measured.
  assert result['accuracy'] == summary['test_accuracy']

  result = read_json(other_run / 'eval_test.json')
  check_eval_result(result, CLASSES, 4)
  assert result['step'] == STEPS and result['source'] == str(other)
  assert (other_run / rundir.CONFIG).read_bytes() == config_json  # Unchanged.
  assert len(list((tmp_path / 'cache').glob('*.npz'))) == 1


def orbax_modules() -> set[str]:
  """The file names of orbax's modules, as absl's log lines show them."""
  import orbax  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(orbax.__path__[0])
  ours = {p.name for p in ROOT.glob('*.py')}
  return {p.name for p in root.rglob('*.py')} - ours


@pytest.mark.slow
def test_eval_cli_is_quiet_and_names_the_file_it_writes(run6, tmp_path):
  # Issue 25: eval.py printed a screenful of orbax INFO lines that train.py
  # keeps off, and wrote eval_train_90.json for train[90%:] (as it did for
  # train[:90%]).
  workdir = copy_run(run6, tmp_path)
  proc = run_python('eval.py', f'--workdir={workdir}')
  path = workdir / 'eval_train_90-100.json'
  assert proc.stdout.splitlines() == [
      f'train[90%:]: accuracy {run6[1]["val_accuracy"]:.4f}  loss '
      f'{read_json(path)["loss"]:.4f}  ({len(SYNTHETIC_CLASSES) * VAL_PER_CLASS}'
      f' examples, step {STEPS}): {path}']
  modules = orbax_modules()
  noise = [line for line in proc.stderr.splitlines()
           if any(f' {m}:' in line for m in modules)]
  assert not noise, noise[:3]
  assert read_json(path)['split'] == 'train[90%:]'


@pytest.mark.slow
def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  # As if online (the download server resolves): mock_data fakes the rest.
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *args, **kwargs: [])
  config = make_config(image_size=32, num_train_steps=2,
                       **{'data.source': 'tfds',
                          'data.data_dir': str(tmp_path / 'tfds'),
                          'data.crop_padding': 4})
  with tfds.testing.mock_data(num_examples=20):  # 32x32 random "CIFAR-10".
    summary = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['status'] == 'ok' and summary['steps'] == 2
  assert summary['val_split'] == 'train[90%:]'
  assert 0 <= summary['test_accuracy'] <= 1  # Mock data has a test split.
  assert rundir.load_run_config(str(tmp_path / 'run')).data.source == 'tfds'
  assert checkpoint_steps(tmp_path / 'run') == [2]


# --- Stopping and resuming ---------------------------------------------------


@pytest.mark.slow
def test_stop_and_resume_is_bitwise_identical_to_one_go(run6, tmp_path):
  workdir = tmp_path / 'resumed'
  first = trainer.train_and_evaluate(make_config(stop_after_steps=3),
                                   str(workdir))
  assert first['status'] == 'interrupted' and first['steps'] == 3
  assert 'test_accuracy' not in first  # Only a finished run is tested.
  assert checkpoint_steps(workdir) == [3]
  assert read_json(workdir / 'summary.json')['status'] == 'interrupted'

  second = trainer.train_and_evaluate(make_config(stop_after_steps=-1),
                                    str(workdir))
  assert second['status'] == 'ok' and second['steps'] == STEPS
  assert train_steps_logged(workdir) == list(range(1, STEPS + 1))  # No repeats.
  for key in ('val_accuracy', 'best_val_accuracy', 'test_accuracy'):
    assert second[key] == run6[1][key], key

  in_one_go = restored(run6[0])
  assert in_one_go['step'] == STEPS
  assert_states_equal(restored(workdir), in_one_go)


@pytest.mark.slow
def test_throughput_leaves_out_the_compile(tmp_path):
  """The first logging window holds XLA's compile of the step; the images
  per second are of the steps alone, and the compile has its own field."""
  summary = trainer.train_and_evaluate(
      make_config(log_every_steps=3), str(tmp_path / 'run'))
  steps_seconds = summary['train_seconds'] - summary['compile_seconds']
  assert 0 < summary['compile_seconds'] < summary['train_seconds']
  assert summary['train_images_per_s'] * steps_seconds == pytest.approx(
      STEPS * summary['batch_size'], rel=1e-6)


@pytest.mark.slow
def test_checkpoint_resumes_under_other_ops(tmp_path):
  """config.ops is not part of the model: a run checkpointed under XLA's own
  ops resumes under the CPU ops, from the same params."""
  xla = {'ops.conv': 'xla', 'ops.pool': 'xla', 'ops.norm': 'xla'}
  cpu = {'ops.conv': 'im2col', 'ops.pool': 'slices', 'ops.norm': 'custom_vjp'}
  workdir, control = tmp_path / 'run', tmp_path / 'control'
  trainer.train_and_evaluate(make_config(stop_after_steps=3, **xla), str(workdir))
  shutil.copytree(workdir, control)
  # The control takes step 4 from the same checkpoint under XLA's ops.
  trainer.train_and_evaluate(make_config(stop_after_steps=1, **xla), str(control))
  summary = trainer.train_and_evaluate(make_config(**cpu), str(workdir))
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  assert train_steps_logged(workdir) == list(range(1, STEPS + 1))
  loss_at = lambda w, step: next(m['train/loss'] for m in read_metrics(w)
                                 if m['step'] == step and 'train/loss' in m)
  # Step 4's loss is of the restored params: equal up to the ops' rounding.
  assert loss_at(workdir, 4) == pytest.approx(loss_at(control, 4), rel=1e-5)
  for step in (1, 2, 3):  # Before the resume: the XLA run's own steps.
    assert loss_at(workdir, step) == loss_at(control, step)


@pytest.mark.slow
def test_sigterm_checkpoints_and_a_rerun_resumes(tmp_path):
  total, every = 300, 100  # Checkpoints: on SIGTERM, then 100, 200, 300.
  last_two = lambda steps: sorted(set(steps))[-2:]  # keep_checkpoints=2.
  command = [sys.executable, *train_cli(
      tmp_path / 'run', f'--config.num_train_steps={total}',
      '--config.log_every_steps=1', '--config.eval_every_steps=1000',
      f'--config.checkpoint_every_steps={every}')]
  metrics = tmp_path / 'run' / 'metrics.jsonl'
  log = open(tmp_path / 'first.log', 'w')
  proc = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=log,
                          stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 240
    while not (metrics.exists() and metrics.read_text().strip()):
      assert proc.poll() is None, (tmp_path / 'first.log').read_text()[-6000:]
      assert time.monotonic() < deadline, 'no metrics after 240 s'
      time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (
        (tmp_path / 'first.log').read_text()[-6000:])
  finally:
    if proc.poll() is None:
      proc.kill()
    log.close()

  summary = read_json(tmp_path / 'run' / 'summary.json')
  stopped = summary['steps']
  assert summary['status'] == 'interrupted' and 1 <= stopped < total
  assert checkpoint_steps(tmp_path / 'run') == last_two(
      [stopped, *range(every, stopped + 1, every)])
  assert train_steps_logged(tmp_path / 'run') == list(range(1, stopped + 1))

  rerun = run_python(*command[1:])
  assert f'Resuming from step {stopped} ' in rerun.stderr
  summary = read_json(tmp_path / 'run' / 'summary.json')
  assert summary['status'] == 'ok' and summary['steps'] == total
  assert train_steps_logged(tmp_path / 'run') == list(range(1, total + 1))
  assert checkpoint_steps(tmp_path / 'run') == last_two(
      [stopped, *range(every, total + 1, every)])  # [200, 300]: old ones go.


# --- A workdir belongs to one config -----------------------------------------


def fake_run(workdir, config) -> None:
  """A workdir as a finished run of `config` leaves it, without training:
  config.json and data_stats.json as train.py saves them, and stand-ins for
  the summary, metrics and a checkpoint."""
  (workdir / 'checkpoints' / str(STEPS)).mkdir(parents=True)
  rundir.write_json_atomic(workdir / rundir.CONFIG, config.to_dict())
  rundir.write_data_stats(workdir, ((0.4,) * 3, (0.2,) * 3))
  for name in (rundir.SUMMARY, rundir.METRICS, f'checkpoints/{STEPS}/state'):
    (workdir / name).write_text(f'{name} of the finished run')


def fail_past_the_workdir_check(monkeypatch):
  """Makes loading data, building the runner or jitting raise."""
  def reached(*args, **kwargs):
    raise AssertionError('got past the workdir check')
  for module, name in ((trainer, 'load_data'), (trainer, 'Runner'), (jax, 'jit')):
    monkeypatch.setattr(module, name, reached)


def test_changed_training_values_are_refused_before_anything_runs(
    tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  fake_run(workdir, make_config())
  before = snapshot(workdir)
  fail_past_the_workdir_check(monkeypatch)
  config = make_config(learning_rate=0.3, log_every_steps=2,
                       **{'model.width': 0.125, 'data.synthetic_seed': 1})
  with pytest.raises(trainer.ConfigMismatchError) as error:
    trainer.train_and_evaluate(config, str(workdir))
  assert str(error.value).splitlines() == [
      f'{workdir} holds a run trained with other values; these keys differ '
      '(saved -> now):',
      '  data.synthetic_seed: 0 -> 1',  # Other data.
      '  learning_rate: 0.05 -> 0.3',
      '  model.width: 0.0625 -> 0.125',
      'Nothing was changed. Use a fresh --workdir, or rerun with the saved '
      f'values (all in {workdir / rundir.CONFIG}).']
  assert snapshot(workdir) == before


def test_cadences_in_epochs_become_steps(tmp_path):
  # configs/test.py trains on 180 images (train[:90%] of 200): 22 steps of 8
  # per epoch. 0.14 epochs: 3.08 steps -> 3; 0.09: 1.98 -> 2.
  config = make_config(
      eval_every_steps=0, eval_every_epochs=0.14, checkpoint_every_steps=0,
      checkpoint_every_epochs=0.14, log_every_steps=0, log_every_epochs=0.09,
      keep_checkpoints=5)
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir)
  metrics = read_metrics(workdir)
  assert [m['step'] for m in metrics if 'val/accuracy' in m] == [3, 6]
  assert checkpoint_steps(workdir) == [3, 6]
  assert train_steps_logged(workdir) == [2, 3, 4, 6]  # Logs, and evals.


def test_bookkeeping_changes_pass_the_workdir_check(tmp_path, monkeypatch):
  # A run of a data folder that has moved since, decoded into another cache
  # by more workers. (No folder is written: loading the data is stubbed.)
  workdir = tmp_path / 'run'
  fake_run(workdir, make_config(**local_source(tmp_path / 'images',
                                               tmp_path / 'cache')))
  fail_past_the_workdir_check(monkeypatch)
  config = make_config(
      log_every_steps=2, stop_after_steps=1, keep_checkpoints=5,
      **local_source(tmp_path / 'moved_images', tmp_path / 'other_cache'),
      **{'ops.conv': 'xla', 'data.num_workers': 2})
  with pytest.raises(AssertionError, match='got past the workdir check'):
    trainer.train_and_evaluate(config, str(workdir))


@pytest.mark.slow
def test_a_run_that_ends_in_its_warmup_says_so(tmp_path, caplog):
  # 22 steps per epoch: warmup_epochs=0.5 is 11 steps, past the last of 6.
  caplog.set_level(logging.INFO)
  summary = trainer.train_and_evaluate(
      make_config(warmup_epochs=0.5, eval_every_steps=6), str(tmp_path))
  warning = ('warmup (11 steps: warmup_epochs=0.5) does not end before the '
             'last step (of 6): the learning rate reaches 0.02273 of its peak '
             '0.05 and never decays.')
  assert summary['schedule_warning'].startswith(warning)
  assert read_json(tmp_path / rundir.SUMMARY)['schedule_warning'] == (
      summary['schedule_warning'])
  assert f'Short schedule: {warning}' in caplog.text
  rates = [m['train/learning_rate'] for m in read_metrics(tmp_path)
           if 'train/learning_rate' in m]
  assert rates == sorted(rates) and max(rates) < 0.05  # Still climbing.


def checkpoint_metas(workdir) -> list[pathlib.Path]:
  return sorted((workdir / 'checkpoints').glob('*/meta/metadata'))


def edit_saved_configs(workdir, edit) -> None:
  """Calls edit(config) on the config that `workdir`'s config.json and each
  of its checkpoints recorded, and saves what it leaves."""
  path = workdir / rundir.CONFIG
  saved = read_json(path)
  edit(saved)
  path.write_text(json.dumps(saved))
  for path in checkpoint_metas(workdir):
    meta = read_json(path)
    edit(meta['config'])
    path.write_text(json.dumps(meta))


def strip_model_key(workdir, key: str) -> None:
  """Makes `workdir` a run saved before model.<key> existed: gone from its
  config.json and from every checkpoint's metadata."""
  edit_saved_configs(workdir, lambda config: config['model'].pop(key))


@pytest.mark.slow
def test_a_run_saved_before_an_added_knob_resumes(run6, tmp_path,
                                                  monkeypatch, caplog):
  # Issue 25: a knob added since a run was saved (model.fuse_pointwise
  # plays it) made the run stale, with no way to resume it.
  workdir = copy_run(run6, tmp_path)
  strip_model_key(workdir, 'fuse_pointwise')
  shutil.rmtree(workdir / 'checkpoints' / str(STEPS))  # Resume from step 3.
  with pytest.raises(trainer.ConfigMismatchError,
                     match="model.fuse_pointwise: '<absent>' -> True"):
    trainer.train_and_evaluate(make_config(), str(workdir))
  monkeypatch.setitem(rundir.ADDED_KEYS, 'model.fuse_pointwise', True)
  caplog.set_level(logging.INFO)
  summary = trainer.train_and_evaluate(make_config(), str(workdir))
  assert 'Resuming from step 3 ' in caplog.text
  assert summary['steps'] == STEPS
  assert_states_equal(restored(workdir), restored(run6[0]))


def as_an_older_run(workdir) -> None:
  """Makes `workdir` a run saved before data_stats.json and before the
  checkpoints recorded the whole config: its config.json carries the data
  stats, as [mean, std]; each checkpoint records the model block, the
  image size and the param shapes."""
  stats = read_json(workdir / rundir.DATA_STATS)
  (workdir / rundir.DATA_STATS).unlink()
  saved = read_json(workdir / rundir.CONFIG)
  saved['data_stats'] = [stats['mean'], stats['std']]
  (workdir / rundir.CONFIG).write_text(json.dumps(saved))
  for path in checkpoint_metas(workdir):
    meta = read_json(path)
    config = meta.pop('config')
    meta |= {'model': config['model'], 'image_size': config['image_size']}
    path.write_text(json.dumps(meta))


@pytest.mark.slow
def test_an_older_run_evaluates_resumes_and_still_refuses_another(
    run6, tmp_path, caplog):
  workdir = copy_run(run6, tmp_path)
  stats = read_json(workdir / rundir.DATA_STATS)
  as_an_older_run(workdir)
  result = eval_tool.evaluate(str(workdir))  # Normalised as in training.
  assert result['accuracy'] == run6[1]['val_accuracy']
  other = copy_run(run6, tmp_path / 'other')
  as_an_older_run(other)
  (other / rundir.CONFIG).unlink()  # Only its checkpoints' record is left.
  before = snapshot(other)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="model.width: 0.0625 -> 0.125"):
    trainer.train_and_evaluate(make_config(**{'model.width': 0.125}),
                               str(other))
  assert snapshot(other) == before
  caplog.set_level(logging.INFO)
  summary = trainer.train_and_evaluate(make_config(), str(workdir))
  assert f'Resuming from step {STEPS} ' in caplog.text  # Not refused.
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  # Resuming moved the stats to their own file.
  assert read_json(workdir / rundir.DATA_STATS) == stats
  assert read_json(workdir / rundir.CONFIG) == read_json(
      run6[0] / rundir.CONFIG)


@pytest.mark.slow
def test_cli_refuses_a_finished_run_with_other_training_values(run6, tmp_path):
  workdir = copy_run(run6, tmp_path)
  before = snapshot(workdir)
  proc = subprocess.run(
      [sys.executable, *train_cli(workdir, '--config.learning_rate=0.3',
                                  '--config.model.width=0.125')],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0
  assert f'error: {workdir} holds a run trained with other values' in (
      proc.stderr)
  assert ('  learning_rate: 0.05 -> 0.3\n  model.width: 0.0625 -> 0.125\n'
          'Nothing was changed.') in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert 'Resuming' not in proc.stderr
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_bookkeeping_changes_resume_a_finished_run(run6, tmp_path, caplog):
  # run6 as a finished run of a data folder that has moved since: its
  # config.json and checkpoints name the old place, which is gone.
  workdir = copy_run(run6, tmp_path)
  edit_saved_configs(workdir, lambda saved: saved['data'].update(
      source=str(tmp_path / 'images'), cache_dir=str(tmp_path / 'cache')))
  before = read_json(workdir / rundir.CONFIG)
  moved = tmp_path / 'moved_images'
  make_folder(moved, {'train': 10})
  metrics = (workdir / rundir.METRICS).read_bytes()
  caplog.set_level(logging.INFO)
  summary = trainer.train_and_evaluate(make_config(
      log_every_steps=2, stop_after_steps=1, **{'ops.conv': 'xla'},
      **local_source(moved, tmp_path / 'cache')), str(workdir))
  assert f'Resuming from step {STEPS} ' in caplog.text
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  assert summary['val_accuracy'] == run6[1]['val_accuracy']
  assert (workdir / rundir.METRICS).read_bytes() == metrics  # No step taken.
  saved = rundir.load_run_config(str(workdir))
  assert (saved.log_every_steps, saved.ops.conv) == (2, 'xla')
  assert saved.data.source == str(moved)
  assert not rundir.training_changes(saved.to_dict(), before)


@pytest.mark.slow
def test_every_process_refuses_other_training_values(run6, tmp_path):
  # Process 1 sees an empty workdir, as a host without the shared disk
  # would: it must fail with process 0, not wait for it at a collective.
  workdirs = [copy_run(run6, tmp_path), tmp_path / 'empty']
  workdirs[1].mkdir()
  before = snapshot(workdirs[0])
  codes, logs = run_two_processes(
      lambda i, flags: train_cli(workdirs[i], '--config.learning_rate=0.3',
                                 *flags),
      tmp_path, timeout=240)
  assert codes == [1, 1], '\n'.join(logs)
  assert '  learning_rate: 0.05 -> 0.3\n' in logs[0]
  assert '  (found by another process: see its log)\n' in logs[1]
  assert snapshot(workdirs[0]) == before
  assert not any(workdirs[1].iterdir())


# --- More devices, more processes --------------------------------------------

# One train step from the same state and global batch on a 1-device and a
# 4-device mesh (params replicated, batch sharded 2 per device); also eval of
# a 1-device run's checkpoint on 4 devices, and the batch size check.
SHARDED = r'''
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import config_checks, input_pipeline, ops, optim, rundir, trainer
from configs import test as test_config
from models import build_model

run6, out = sys.argv[1:]
assert jax.device_count() == 4, jax.devices()
config = test_config.get_config()
split = input_pipeline.load_split(config.data, config.data.train_split)
stats = tuple(tuple(map(float, s)) for s in input_pipeline.dataset_stats(split))
steps_per_epoch = input_pipeline.steps_per_epoch(len(split.labels), 8)
tx, _ = optim.make_optimizer(config, steps_per_epoch, config.num_train_steps)
idx = input_pipeline.batch_indices(len(split.labels), 8, 0, config.seed)

def flat(tree, prefix):
  return {prefix + jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}

for n in (1, 4):
  runner = trainer.Runner(config, stats,
                          build_model(config.model, ops.resolve(config)))
  runner.mesh = Mesh(np.asarray(jax.devices()[:n]), ('data',))
  runner.batch_sharding = NamedSharding(runner.mesh, P('data'))
  runner.replicated = NamedSharding(runner.mesh, P())
  state = runner.create_state(tx)
  images = runner.to_global(split.images[idx])
  assert images.addressable_shards[0].data.shape[0] == 8 // n
  before = flat(jax.device_get(state.params), 'before/')
  state, metrics = runner.train_step(state, images,
                                     runner.to_global(split.labels[idx]),
                                     runner.seed_key)
  assert len(state.params['head']['kernel'].sharding.device_set) == n
  arrays = {**before, **flat(jax.device_get(metrics), 'metrics/')}
  for name in ('params', 'batch_stats', 'opt_state'):
    arrays |= flat(jax.device_get(getattr(state, name)), name + '/')
  np.savez(f'{out}/step_{n}.npz', **arrays)

runner, state = trainer.restore_for_eval(rundir.load_run_config(run6), run6)
assert len(runner.mesh.devices.flat) == 4
result = runner.evaluate(state, input_pipeline.load_split(config.data, 'test'))
config.batch_size = 6
try:
  config_checks.check_config(config)
  error = None
except ValueError as e:
  error = str(e)
with open(f'{out}/result.json', 'w') as f:
  json.dump({'eval': result, 'batch_size_error': error}, f)
'''


@pytest.mark.slow
def test_sharded_step_matches_single_device(run6, tmp_path):
  run_python('-c', SHARDED, run6[0], tmp_path, devices=4)
  one, four = (dict(np.load(tmp_path / f'step_{n}.npz')) for n in (1, 4))
  assert one.keys() == four.keys()
  for key in one:
    if key.startswith('before/'):  # The same initial state.
      np.testing.assert_array_equal(four[key], one[key], err_msg=key)
    elif key.startswith('metrics/'):  # Loss, grad norm, ...
      np.testing.assert_allclose(four[key], one[key], rtol=1e-5, err_msg=key)
    else:
      # Sums over the batch run in another order on 4 devices: float32
      # rounding, relative to a leaf's scale rather than to each element, as
      # gradients cancel (a BatchNorm bias's: 5e-5 of its scale, measured).
      # Wrong sharding semantics (per-device BatchNorm statistics, unaveraged
      # gradients) would differ by percents.
      scale = np.abs(one[key]).max()
      np.testing.assert_allclose(four[key], one[key], rtol=0,
                                 atol=1e-6 + 3e-4 * scale, err_msg=key)
  update = max(np.abs(one[f'params/{k[7:]}'] - one[k]).max()
               for k in one if k.startswith('before/'))
  assert update > 1e-2  # The step moved the params far beyond the tolerance.

  result = read_json(tmp_path / 'result.json')
  config = rundir.load_run_config(str(run6[0]))
  runner, state = trainer.restore_for_eval(config, str(run6[0]))
  here = runner.evaluate(state, input_pipeline.load_split(config.data, 'test'))
  assert result['eval']['confusion_matrix'] == here['confusion_matrix']
  assert result['eval']['accuracy'] == here['accuracy']
  assert result['eval']['loss'] == pytest.approx(here['loss'], rel=1e-5)
  assert result['batch_size_error'] == (
      'Bad config: batch_size=6 must be a positive multiple of the device '
      'count (4); e.g. --config.batch_size=4.')


def worker(workdir, dump, *flags):
  return ['tests/distributed_worker.py', f'--dump={dump}',
          *train_cli(workdir)[1:], *flags]


def run_two_processes(command, log_dir, timeout):
  """Runs [python, *command(i, flags)] as processes i = 0, 1 of one
  jax.distributed run (flags: the --distributed ones; one CPU device each).
  Returns their exit codes ('timed out' for one still running after
  `timeout` s) and logs."""
  port = free_port()
  procs, logs = [], []
  try:
    for i in range(2):
      flags = ['--distributed', f'--coordinator_address=localhost:{port}',
               '--num_processes=2', f'--process_id={i}']
      logs.append(open(log_dir / f'process_{i}.log', 'w'))
      procs.append(subprocess.Popen(
          [sys.executable, *command(i, flags)], cwd=ROOT,
          env=subprocess_env(devices=1), stdout=logs[i],
          stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
      try:
        codes.append(proc.wait(timeout=max(1, deadline - time.monotonic())))
      except subprocess.TimeoutExpired:
        codes.append('timed out')
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
    for log in logs:
      log.close()
  return codes, [(log_dir / f'process_{i}.log').read_text() for i in range(2)]


@pytest.mark.slow
def test_two_processes_match_each_other_and_a_two_device_run(tmp_path):
  codes, logs = run_two_processes(  # One shared workdir.
      lambda i, flags: worker(tmp_path / 'run', tmp_path / 'dump', *flags),
      tmp_path, timeout=500)
  assert codes == [0, 0], '\n'.join(log[-4000:] for log in logs)

  summary = read_json(tmp_path / 'run' / 'summary.json')
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  assert (summary['process_count'], summary['device_count']) == (2, 2)
  assert train_steps_logged(tmp_path / 'run') == list(range(1, STEPS + 1))
  assert checkpoint_steps(tmp_path / 'run') == [3, 6]
  process_0, process_1 = (dict(np.load(tmp_path / 'dump' / f'state_{i}.npz'))
                          for i in range(2))
  assert process_0['step'] == STEPS
  assert_states_equal(process_0, process_1)

  run_python(*worker(tmp_path / 'local', tmp_path / 'local_dump'), devices=2)
  local = dict(np.load(tmp_path / 'local_dump' / 'state_0.npz'))
  assert read_json(tmp_path / 'local' / 'summary.json')['device_count'] == 2
  assert_states_close(process_0, local, rtol=1e-5, atol=1e-6)
  # The checkpoint the processes wrote together restores here, on one device.
  assert_states_equal(restored(tmp_path / 'run'), process_0)


# --- Clear errors ------------------------------------------------------------


@pytest.mark.slow
def test_unknown_model_name(tmp_path):
  config = make_config(**{'model.name': 'resnet'})
  with pytest.raises(ValueError, match=r"Unknown model 'resnet'; registered "
                     r'models: air_inception, googlenet, small_inception'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # Raised before writing anything.
  proc = subprocess.run(
      [sys.executable, *train_cli(tmp_path / 'run',
                                  '--config.model.name=resnet')],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0
  assert "error: Unknown model 'resnet'" in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_bad_width(tmp_path):
  config = make_config(**{'model.width': 0.0})
  with pytest.raises(ValueError, match=r'width=0\.0: the multiplier must be '
                     r'> 0'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_batch_size_not_divisible_by_device_count(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 4)
  config = make_config(batch_size=6)
  with pytest.raises(ValueError, match=r'batch_size=6 must be a positive '
                     r'multiple of the device count \(4\); e\.g\. '
                     r'--config\.batch_size=4'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_corrupt_image_names_the_file(tmp_path):
  source = tmp_path / 'images'
  make_folder(source, {'train': 4})
  (source / 'train' / 'dog' / '0003.png').write_bytes(b'not a png')
  config = make_config(**local_source(source, tmp_path / 'cache'))
  with pytest.raises(input_pipeline.DataError,
                     match=r"'train/dog/0003\.png'.*remove or replace"):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_missing_split_lists_the_splits_present(tmp_path):
  config = make_config(**{'data.eval_split': 'valid'})
  with pytest.raises(input_pipeline.MissingSplitError,
                     match=r"The 'synthetic' source has no split 'valid'; "
                     r"it has \['test', 'train'\]"):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.mark.slow
def test_mismatched_checkpoint_is_refused_and_left_unchanged(run6, tmp_path):
  # Without config.json (which check_workdir_config compares against), the
  # checkpoints' own record refuses another run, by the same rule.
  workdir = copy_run(run6, tmp_path)
  (workdir / rundir.CONFIG).unlink()
  before = snapshot(workdir)
  config = make_config(learning_rate=0.3, log_every_steps=2,
                       **{'model.width': 0.125, 'ops.conv': 'xla'})
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    trainer.train_and_evaluate(config, str(workdir))
  assert str(error.value).splitlines() == [
      f'{workdir}/checkpoints holds checkpoints (latest: step 6) of a run '
      'trained with other values; these keys differ (saved -> now):',
      '  learning_rate: 0.05 -> 0.3',
      '  model.width: 0.0625 -> 0.125',
      'Nothing was overwritten. Use a new --workdir, or the config that wrote '
      'them (saved in the workdir as config.json).']
  assert snapshot(workdir) == before


def test_checkpoints_judge_their_config_by_the_workdir_rule(tmp_path):
  # Bookkeeping may change, as for config.json; parameter shapes that this
  # code builds otherwise from the same config may not.
  config = make_config().to_dict()
  meta = lambda config, n: checkpoints.fingerprint(
      config, types.SimpleNamespace(params={'w': np.zeros(n)}))
  ckpt = checkpoints.Checkpoints(str(tmp_path), 1, meta(config, 2))
  ckpt.save(1, {'w': np.zeros(2)})
  ckpt.close()
  moved = make_config(log_every_steps=7, **{'ops.conv': 'xla'}).to_dict()
  for other, error in ((meta(moved, 2), None),
                       (meta(config, 3), "e.g. ['w'] [2] -> [3]"),
                       (meta(make_config(seed=1).to_dict(), 2),
                        'seed: 0 -> 1')):
    ckpt = checkpoints.Checkpoints(str(tmp_path), 1, other)
    try:
      if error is None:
        ckpt.check_compatible()
      else:
        with pytest.raises(checkpoints.CheckpointMismatchError,
                           match=re.escape(error)):
          ckpt.check_compatible()
    finally:
      ckpt.close()


@pytest.mark.slow
def test_nan_diverges_and_keeps_the_last_finite_checkpoint(run6, tmp_path):
  # Go on from run6's step 6, checkpointing every step, with an infinite
  # learning rate: step 7's loss is finite (it is of step 6's params) but its
  # update makes the params non-finite. No checkpoint of them may be written.
  workdir = copy_run(run6, tmp_path)
  config = make_config(learning_rate=float('inf'), num_train_steps=9,
                       checkpoint_every_steps=1)
  # As if run6 had been started so: the workdir and checkpoint checks compare
  # with this. (Not NaN: NaN != NaN, and the checks would refuse the workdir.)
  edit_saved_configs(workdir, lambda saved: saved.update(
      json.loads(json.dumps(config.to_dict()))))
  with pytest.raises(FloatingPointError, match='Training diverged'):
    trainer.train_and_evaluate(config, str(workdir))
  summary = read_json(workdir / 'summary.json')
  assert summary['status'] == 'diverged' and summary['steps'] == 7
  assert checkpoint_steps(workdir) == [3, 6]
  state = restored(workdir)
  assert state['step'] == STEPS
  assert all(np.isfinite(v).all() for v in state.values())
  assert_states_equal(state, restored(run6[0]))


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(run6, tmp_path,
                                                              caplog):
  workdir = copy_run(run6, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '6' / 'state')
  caplog.set_level(logging.INFO)
  summary = trainer.train_and_evaluate(make_config(), str(workdir))
  assert re.search(r'Checkpoint at step 6 .* failed to restore .*falling '
                   r'back to the previous one', caplog.text)
  assert 'Resuming from step 3 ' in caplog.text
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  assert train_steps_logged(workdir) == [*range(1, STEPS + 1), 4, 5, 6]
  # The broken checkpoint was replaced by the retrained step 6, which is
  # bitwise the one-go run's.
  assert checkpoint_steps(workdir) == [3, 6]
  assert_states_equal(restored(workdir), restored(run6[0]))


def test_bad_cpu_vector_width(tmp_path):
  config = make_config(**{'ops.cpu_vector_width': '128'})
  with pytest.raises(ValueError, match=r"ops.cpu_vector_width='128' is not "
                     r"valid; choose one of 'auto', '256', '512'"):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_cpu_vector_width_changes_speed_not_results():
  # Two train steps of the test net under each width, from the same state.
  # Not more: this 8x8-input net is chaotic from the third step on (with the
  # oneDNN convs, a 1e-5 relative change to one batch-norm bias after step 1,
  # fed to the plain XLA program, moves the loss of step 3 by 0.9%).
  config = test_config.get_config()
  stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 8, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, (2, 8), np.int32)
  results = []
  for width in ('256', '512'):
    config.ops.cpu_vector_width = width
    runner = runner_of(config, stats)
    tx, _ = optim.make_optimizer(config, 10, 100)
    state = runner.create_state(tx)
    losses = []
    for x, y in zip(images, labels):
      state, metrics = runner.train_step(state, runner.to_global(x),
                                         runner.to_global(y), runner.seed_key)
      losses.append(float(metrics['loss']))
    results.append((losses, jax.device_get(state.params)))
  (loss_a, params_a), (loss_b, params_b) = results
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  # Float reassociation only: within 1e-4 of each tensor's scale.
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(a).max())


def test_every_seed_runs_one_program_and_the_seed_still_counts():
  # The seed is the step's argument, not a constant: a persistent compilation
  # cache compiles a design's train step once for all its seeds.
  stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, (8,), np.int32)
  runners = [runner_of(make_config(seed=s), stats) for s in (0, 1)]
  tx, _ = optim.make_optimizer(make_config(), 10, 100)
  x, y = runners[0].to_global(images), runners[0].to_global(labels)
  programs, losses = [], []
  for runner in runners:
    state = runners[0].create_state(tx)  # Seed 0's weights both times.
    lowered = runner.train_step.lower(state, x, y, runner.seed_key)
    programs.append(lowered.as_text())
    _, metrics = lowered.compile()(state, x, y, runner.seed_key)
    losses.append(float(metrics['loss']))
  assert programs[0] == programs[1]
  assert losses[0] != losses[1]  # The seed's augmentation.
