"""Sweep tooling: seeds, sweep.json, overrides and data checked before
launch, stale runs, failures recorded, finished runs skipped, dry runs that
parse, --status, the Slurm job's signal handling (without Slurm).

Only one test trains (slow); the others replace `launch` or launch a stub.
input_pipeline.check_data is replaced in every test (data_checks); the
Slurm launcher against a real Slurm: tests/test_slurm.py."""

import functools
import json
import os
import pathlib
import pickle
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest
from absl import flags
from ml_collections import config_flags

import config_checks
import input_pipeline
import rundir
from configs.common import load_config, load_module
from configs.sweeps import common
from configs.sweeps.common import Run
from scripts import launchers
from scripts import sweep as sweep_tool
from tests.conftest import CACHE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = ['naive_vs_reduced', 'reduction_ratio', 'reduce_activation',
          'five_by_five', 'flops_matched', 'fast_levers']
TEST_CONFIG = 'configs/test.py'
LR = load_config(TEST_CONFIG).learning_rate


def sweep(*args, **env_vars):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE_DIR,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **env_vars)
  return subprocess.run([sys.executable, 'scripts/sweep.py', *args], cwd=REPO,
                        capture_output=True, text=True, env=env)


def parse_train_argv(argv):
  """train.py's flags (argv without the program) as train.py parses them."""
  argv = ['train.py'] + argv
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv,
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, '', flag_values=fv)
  fv(argv)  # Raises on a bad config file or an unknown key.
  return fv


def write_sweep(tmp_path, runs, extra=''):
  """A sweep file of (name, config[, overrides]) runs, plus module code."""
  path = tmp_path / 'sweep_file.py'
  path.write_text(
      f'from configs.sweeps.common import Run\n{extra}\n\n'
      f'def get_sweep(arg=None):\n  return [Run(*r) for r in {runs!r}]\n')
  return str(path)


@pytest.fixture(autouse=True)
def data_checks(monkeypatch):
  """Replaces input_pipeline.check_data: records the data configs checked."""
  checked = []
  monkeypatch.setattr(input_pipeline, 'check_data',
                      lambda data: checked.append(data.to_dict()),
                      raising=False)
  return checked


@pytest.fixture
def launched(monkeypatch):
  """Replaces training: records each launch (directory name, command, run
  directory, whether it existed) and reports it finished."""
  calls = []

  def fake_launch(name, cmd, run_dir, cores):
    calls.append({'name': name, 'cmd': cmd, 'run_dir': run_dir,
                  'existed': os.path.exists(run_dir)})
    return 'ok'
  monkeypatch.setattr(sweep_tool, 'launch', fake_launch)
  return calls


# ----------------------------------------------------------------- seeds


def test_seeds_count_up_from_the_overridden_config_seed():
  runs = [Run('a', TEST_CONFIG), Run('b', TEST_CONFIG, {'learning_rate': 0.2})]
  jobs = sweep_tool.expand(runs, 3, ['--config.seed=5'])
  assert [j.name for j in jobs] == ['a-seed5', 'a-seed6', 'a-seed7',
                                    'b-seed5', 'b-seed6', 'b-seed7']
  assert [j.seed for j in jobs] == [5, 6, 7] * 2
  for job in jobs:
    argv = sweep_tool.command(job, '/runs')[2:]
    assert [a for a in argv if a.startswith('--config.seed')] == [
        f'--config.seed={job.seed}']
    parsed = parse_train_argv(argv)
    assert parsed.config.seed == job.seed == job.config['seed']
    assert parsed.workdir == f'/runs/{job.name}'
    assert parsed.config.learning_rate == (0.2 if job.run == 'b' else LR)
  assert rundir.training_changes(jobs[0].config, jobs[2].config) == [
      'seed: 5 -> 7']


def test_one_seed_keeps_the_run_name_and_the_config_seed():
  jobs = sweep_tool.expand([Run('a', TEST_CONFIG)], 1, [])
  assert [(j.name, j.seed) for j in jobs] == [
      ('a', load_config(TEST_CONFIG).seed)]
  assert not any('seed' in a for a in sweep_tool.command(jobs[0], '/runs'))


def test_sweep_json_and_launches_follow_the_files_seeds(tmp_path, launched):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)],
                     "SEEDS = 2\nBASELINE = 'b'")
  workdir = tmp_path / 'runs'
  overrides = ['--config.seed=3', '--config.data.source=/data']
  sweep_tool.run_sweep(spec, str(workdir), overrides)
  assert sorted(c['name'] for c in launched) == [
      'a-seed3', 'a-seed4', 'b-seed3', 'b-seed4']
  assert json.loads((workdir / 'sweep.json').read_text()) == {
      'sweep': spec, 'seeds': 2, 'baseline': 'b', 'overrides': overrides,
      'runs': {f'{run}-seed{seed}': {'run': run, 'seed': seed,
                                     'overrides': overrides}
               for run in 'ab' for seed in (3, 4)}}
  launched.clear()
  sweep_tool.run_sweep(spec, str(workdir), overrides, seeds=1)  # --seeds=1.
  assert sorted(c['name'] for c in launched) == ['a', 'b']
  record = json.loads((workdir / 'sweep.json').read_text())
  assert record['runs'] == {  # Merged: the earlier runs stay.
      name: {'run': name[0], 'seed': seed, 'overrides': overrides}
      for name, seed in (('a-seed3', 3), ('a-seed4', 4), ('b-seed3', 3),
                         ('b-seed4', 4), ('a', 3), ('b', 3))}
  assert record['seeds'] == 2  # Seeds 3 and 4 of each run.


@pytest.fixture
def finishing(monkeypatch):
  """Replaces training: each launch leaves its run directory as a finished
  train.py run does (config.json, summary.json 'ok'); records the names."""
  names = []

  def fake_launch(name, cmd, run_dir, cores):
    names.append(name)
    config = parse_train_argv(cmd[2:]).config.to_dict()
    os.makedirs(run_dir)
    pathlib.Path(run_dir, 'config.json').write_text(json.dumps(config))
    pathlib.Path(run_dir, 'summary.json').write_text('{"status": "ok"}')
    return 'ok'
  monkeypatch.setattr(sweep_tool, 'launch', fake_launch)
  return names


def test_fewer_seeds_later_launch_nothing_and_keep_sweep_json(
    tmp_path, finishing):
  # Issue 25: --seeds=2 after --seeds=3 rewrote sweep.json with 2 seeds, and
  # the report then dropped every third seed.
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  record = tmp_path / 'runs' / 'sweep.json'
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], seeds=3)
  assert len(finishing) == 6
  before = (record.read_bytes(), record.stat().st_mtime_ns)
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], seeds=2)
  assert len(finishing) == 6  # All finished: nothing launched.
  assert (record.read_bytes(), record.stat().st_mtime_ns) == before
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], seeds=4)
  assert finishing[6:] == ['a-seed3', 'b-seed3']
  saved = json.loads(record.read_text())
  assert sorted(saved['runs']) == [f'{r}-seed{s}' for r in 'ab'
                                   for s in range(4)]
  assert saved['seeds'] == 4


def test_a_refused_sweep_leaves_sweep_json_as_it_was(tmp_path, finishing,
                                                     capsys):
  # Issue 25: a rerun refused because every run is stale wrote its
  # --config.num_train_steps=200 into sweep.json, though no run trained it.
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  sweep_tool.run_sweep(spec, str(workdir), ['--config.num_train_steps=150'])
  before = (workdir / 'sweep.json').read_bytes()
  with pytest.raises(SystemExit, match='2 of 2 runs are stale'):
    sweep_tool.run_sweep(spec, str(workdir), ['--config.num_train_steps=200'])
  assert (workdir / 'sweep.json').read_bytes() == before
  assert json.loads(before)['overrides'] == ['--config.num_train_steps=150']
  assert finishing == ['a', 'b']
  assert 'num_train_steps: 150 -> 200' in capsys.readouterr().out


def test_an_unreadable_sweep_json_stops_the_sweep_before_launch(
    tmp_path, launched):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'sweep.json').write_text('{"runs": ')
  with pytest.raises(ValueError, match='sweep.json: .*fix it'):
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [])
  assert not launched
  assert (tmp_path / 'runs' / 'sweep.json').read_text() == '{"runs": '


@pytest.mark.parametrize('extra, problem', [
    ('SEEDS = 0', 'SEEDS = 0'), ("SEEDS = '2'", "SEEDS = '2'"),
    ("BASELINE = 'c'", "BASELINE = 'c' is not one of its runs: a")])
def test_bad_seeds_or_baseline_in_the_sweep_file(tmp_path, extra, problem):
  with pytest.raises(ValueError, match=re.escape(problem)):
    sweep_tool.load_sweep(write_sweep(tmp_path, [('a', TEST_CONFIG)], extra))


@pytest.mark.parametrize('size', ['full', 'cpu'])
def test_the_reduction_ratio_baseline_is_the_configs_own_reduction(size):
  # Its x1 run trains the config as it is: the sweep reads the default
  # reduction from it rather than stating it again.
  runs = {r.name: r for r in sweep_tool.load_sweep(
      f'configs/sweeps/reduction_ratio.py:size={size}').runs}
  baseline = runs['reduce_x1']
  config = load_config(baseline.config)
  as_is = config.to_dict()
  config.update_from_flattened_dict(baseline.overrides)
  assert config.to_dict() == as_is


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n == 'flops_matched' else n
    for n in SWEEPS])
def test_shipped_sweeps_name_one_of_their_runs_as_baseline(name):
  arg = '' if name == 'fast_levers' else ':size=cpu'  # The recipe's own.
  loaded = sweep_tool.load_sweep(f'configs/sweeps/{name}.py{arg}')
  assert loaded.baseline in [r.name for r in loaded.runs]
  assert loaded.seeds == 1


@pytest.mark.parametrize('adopted', [
    {}, {'whiten': False, 'bias_lr_scale': 1.0, 'muon_lr': 0.0,
         'lookahead_every': 0,
         'data.alternate_flip': False, 'label_smoothing': 0.0,
         'model.act': 'relu', 'model.reduce_act': 'relu'}])
def test_every_fast_lever_moves_the_recipe_whichever_side_it_is_on(adopted):
  # A lever the recipe has not adopted is tried on, not copied: each lever
  # changes each of its keys to another value, and every config it makes
  # passes the config checks.
  from configs.sweeps import fast_levers
  recipe = load_config('configs/cifar_fast.py')
  recipe.update_from_flattened_dict(adopted)
  get = lambda config, key: functools.reduce(getattr, key.split('.'), config)
  changed = []
  for overrides in fast_levers.levers(recipe):
    moved = recipe.copy_and_resolve_references()
    moved.update_from_flattened_dict(overrides)
    diff = [k for k in overrides if get(moved, k) != get(recipe, k)]
    assert diff == list(overrides), (overrides, diff)
    config_checks.check_values(moved)
    changed.append(next(iter(overrides)))
  assert sorted(changed) == sorted([
      'whiten', 'bias_lr_scale', 'muon_lr', 'lookahead_every',
      'data.alternate_flip',
      'data.random_crop', 'eval_flip', 'batch_size', 'label_smoothing',
      'model.act', 'model.block'])


def test_fast_levers_sweep_builds_each_lever_apart_from_the_baseline():
  runs = sweep_tool.load_sweep('configs/sweeps/fast_levers.py').runs
  configs = {j.name: j.config for j in sweep_tool.expand(runs, 1, [])}
  baseline = configs.pop('baseline')
  assert len(configs) == 11
  assert all(config != baseline for config in configs.values())


def test_a_sweeps_budget_argument_reaches_every_run():
  loaded = sweep_tool.load_sweep(
      'configs/sweeps/naive_vs_reduced.py:size=fast,epochs=2')
  for run in loaded.runs:
    config = load_config(run.config)
    assert config.num_epochs == 2.0 and config.model.module == run.name


# ------------------------------------------------ overrides checked up front


@pytest.mark.parametrize('flag', ['--config.learning_rat=0.1',
                                  '--config.learning_rate=abc',
                                  '--config.num_train_steps=1.5'])
def test_bad_sweep_wide_flag_stops_everything(tmp_path, launched, flag):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  with pytest.raises(ValueError) as error:
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [flag], seeds=2)
  assert flag in str(error.value) and 'sweep-wide' in str(error.value)
  assert not (tmp_path / 'runs').exists() and not launched


@pytest.mark.parametrize('key, value, message', [
    ('model.widht', 0.5, '--config.model.widht=0.5 (from the sweep file) '
     'does not parse'),
    # Issue 25: a key that parses, with a value that is not valid.
    ('model.width', 0.0, '--config.model.width=0.0 (from the sweep file): '
     'width=0.0: the multiplier must be > 0')])
def test_bad_run_override_names_the_run_and_the_sweep_file(
    tmp_path, launched, key, value, message):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG),
                                ('b', TEST_CONFIG, {key: value})])
  with pytest.raises(ValueError, match=re.escape(f"Run 'b': {message}")):
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [])
  assert not (tmp_path / 'runs').exists() and not launched


@pytest.mark.parametrize('dry_run', [False, True])
def test_a_bad_sweep_wide_value_stops_everything_before_launch(
    tmp_path, launched, capsys, dry_run):
  # Issue 25: the keys parsed, the value did not, and every run launched and
  # failed the same way (on Slurm: N queued jobs).
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  with pytest.raises(ValueError) as error:
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'),
                         ['--config.model.norm=nonee'], seeds=2,
                         dry_run=dry_run)
  assert str(error.value) == (
      "Run 'a': --config.model.norm=nonee (a sweep-wide flag, given to every "
      "run): norm='nonee' is not valid; choose one of 'batch', 'none'. "
      'Nothing was launched.')
  assert capsys.readouterr().out == ''  # No command printed.
  assert not (tmp_path / 'runs').exists() and not launched


def test_cli_dry_run_with_a_bad_value_prints_one_line_and_no_command(
    tmp_path):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  out = sweep(f'--sweep={spec}', f'--workdir={tmp_path}/runs', '--dry_run',
              '--config.schedule=cosin')
  assert out.returncode == 1 and out.stdout == ''
  assert out.stderr.strip().splitlines() == [
      "error: Run 'a': --config.schedule=cosin (a sweep-wide flag, given to "
      "every run): Bad config: schedule='cosin'; choose one of ('cosine', "
      "'step', 'onecycle'). Nothing was launched."]
  assert not (tmp_path / 'runs').exists()


def test_checking_values_starts_no_jax_backend(tmp_path):
  # The sweep must not hold an accelerator while its runs train: with a
  # platform this host does not have, starting a backend would fail.
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG),
                                ('b', 'configs/cifar_cpu.py')])
  out = sweep(f'--sweep={spec}', f'--workdir={tmp_path}/runs', '--dry_run',
              JAX_PLATFORMS='tpu')
  assert out.returncode == 0, out.stderr
  assert len(out.stdout.strip().splitlines()) == 2


@pytest.mark.parametrize('flag', ['--config.learning_rat=0.1',
                                  '--config.model.bogus=1'])
def test_cli_reports_a_typo_in_one_line_and_writes_nothing(tmp_path, flag):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  out = sweep(f'--sweep={spec}', f'--workdir={tmp_path}/runs', flag)
  assert out.returncode == 1
  [line] = out.stderr.strip().splitlines()
  assert line.startswith('error: ') and flag in line
  assert not (tmp_path / 'runs').exists()


def test_cli_names_the_sweep_files_when_one_is_missing(tmp_path):
  out = sweep('--sweep=configs/sweeps/naive_vs_reducd.py:size=cpu',
              f'--workdir={tmp_path}/runs')
  assert out.returncode == 1
  [line] = out.stderr.strip().splitlines()
  assert line.startswith(
      "error: Sweep file 'configs/sweeps/naive_vs_reducd.py' not found; the "
      'sweep files in configs/sweeps/ are: ')
  listed = line.split(' are: ')[1].rstrip('.').split(', ')
  assert {f'configs/sweeps/{n}.py' for n in SWEEPS} <= set(listed)
  assert 'configs/sweeps/common.py' not in listed  # Helpers, no get_sweep.
  assert not (tmp_path / 'runs').exists()


def test_data_is_checked_once_per_data_config(tmp_path, launched,
                                              data_checks):
  spec = write_sweep(tmp_path, [
      ('a', TEST_CONFIG), ('b', TEST_CONFIG, {'learning_rate': 0.2}),
      ('c', TEST_CONFIG, {'data.synthetic_seed': 3})])
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], seeds=2)
  assert len(launched) == 6
  default = load_config(TEST_CONFIG).data.to_dict()
  assert data_checks == [default, default | {'synthetic_seed': 3}]


def test_data_that_does_not_load_stops_everything(tmp_path, launched,
                                                  monkeypatch):
  def fail(data):
    raise input_pipeline.DataError(
        f'Cannot download {data.dataset}:\n  no network.')
  monkeypatch.setattr(input_pipeline, 'check_data', fail, raising=False)
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  with pytest.raises(ValueError) as error:
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'),
                         ['--config.data.dataset=cifar10'])
  assert str(error.value) == (
      "Run 'a': its data does not load (nothing was launched): Cannot "
      'download cifar10: no network.')
  assert not launched and not (tmp_path / 'runs').exists()


def test_dry_run_and_status_check_no_data(tmp_path, data_checks):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], dry_run=True)
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], dry_run=True,
                       launcher='slurm')
  assert not data_checks


# ----------------------------------------------------------------- stale


def make_run_dir(path, status, **changes):
  """A run directory as train.py leaves it for configs/test.py with
  `changes` ('__' for '.' in a key); returns the config it saved."""
  config = load_config(TEST_CONFIG)
  for key, value in changes.items():
    *parents, leaf = key.split('__')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  saved = json.dumps(config.to_dict())
  path.mkdir(parents=True)
  (path / 'config.json').write_text(saved)
  (path / 'summary.json').write_text(json.dumps({'status': status}))
  (path / 'train.log').write_text('the old run\n')
  return json.loads(saved)


@pytest.mark.parametrize('status', ['ok', 'interrupted', 'failed'])
def test_changed_training_config_is_stale_and_not_launched(
    tmp_path, launched, capsys, status):
  spec = write_sweep(tmp_path, [('good', TEST_CONFIG), ('new', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  make_run_dir(workdir / 'good', status, learning_rate=2 * LR,
               log_every_steps=99)
  with pytest.raises(SystemExit) as exit_:
    sweep_tool.run_sweep(spec, str(workdir), [])
  assert [c['name'] for c in launched] == ['new']
  table = dict(line.split(None, 1) for line in
               capsys.readouterr().out.strip().splitlines())
  assert table == {'good': f'stale  (learning_rate: {2 * LR!r} -> {LR!r})',
                   'new': 'ok'}
  assert '1 of 2 runs are stale' in str(exit_.value)
  assert 'good' in str(exit_.value) and '--rerun_stale' in str(exit_.value)
  assert json.loads((workdir / 'good/summary.json').read_text()) == {
      'status': status}


def test_a_run_saved_before_an_added_knob(tmp_path, launched, monkeypatch):
  # Issue 25: a model knob added since (model.fuse_pointwise plays it) made
  # every saved run stale, and the advice (give the sweep the flags they
  # were trained with) could not be followed for an absent key.
  spec = write_sweep(tmp_path, [('old', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  make_run_dir(workdir / 'old', 'ok')
  saved = json.loads((workdir / 'old/config.json').read_text())
  del saved['model']['fuse_pointwise']
  (workdir / 'old/config.json').write_text(json.dumps(saved))
  with pytest.raises(SystemExit) as exit_:
    sweep_tool.run_sweep(spec, str(workdir), [])
  assert str(exit_.value).endswith(
      'model.fuse_pointwise: added since they were saved; if its default '
      'trains as they did, list it in rundir.ADDED_KEYS with that value and '
      'they stay valid.')
  monkeypatch.setitem(rundir.ADDED_KEYS, 'model.fuse_pointwise', True)
  sweep_tool.run_sweep(spec, str(workdir), [])  # Not stale: finished.
  assert not launched


@pytest.mark.parametrize('status, relaunched', [('ok', []),
                                                ('interrupted', ['good'])])
def test_bookkeeping_changes_are_not_stale(tmp_path, launched, status,
                                           relaunched):
  spec = write_sweep(tmp_path, [('good', TEST_CONFIG)])
  make_run_dir(tmp_path / 'runs/good', status, log_every_steps=99,
               checkpoint_every_steps=1, ops__conv='xla',
               data__cache_dir='/elsewhere')
  sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [])  # No SystemExit.
  assert [c['name'] for c in launched] == relaunched


def test_rerun_stale_moves_the_old_run_aside(tmp_path, launched):
  spec = write_sweep(tmp_path, [('good', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  saved = make_run_dir(workdir / 'good', 'ok', model__width=0.125)
  sweep_tool.run_sweep(spec, str(workdir), [], rerun_stale=True)
  assert [(c['name'], c['run_dir'], c['existed']) for c in launched] == [
      ('good', str(workdir / 'good'), False)]
  moved = [p for p in os.listdir(workdir) if p.startswith('good.')]
  assert len(moved) == 1
  assert re.fullmatch(r'good\.stale-\d{8}-\d{6}', moved[0])
  assert json.loads((workdir / moved[0] / 'config.json').read_text()) == saved
  assert (workdir / moved[0] / 'train.log').read_text() == 'the old run\n'


def test_dry_run_leaves_out_and_lists_stale_runs(tmp_path, launched, capsys):
  spec = write_sweep(tmp_path, [('good', TEST_CONFIG), ('new', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  make_run_dir(workdir / 'good', 'ok', learning_rate=2 * LR)
  with pytest.raises(SystemExit, match='--rerun_stale'):
    sweep_tool.run_sweep(spec, str(workdir), [], dry_run=True)
  out, err = capsys.readouterr()
  commands = [shlex.split(line) for line in out.strip().splitlines()]
  assert [parse_train_argv(c[2:]).workdir for c in commands] == [
      str(workdir / 'new')]
  assert f'good (learning_rate: {2 * LR!r} -> {LR!r})' in err
  assert sorted(os.listdir(workdir)) == ['good'] and not launched


# ------------------------------------------------- --status, relaunches


def write_run(run_dir, summary=None, metrics=(), job=None, steps=6):
  """A run directory as train.py and a launcher leave it."""
  run_dir.mkdir(parents=True)
  (run_dir / 'config.json').write_text(json.dumps({'num_train_steps': steps}))
  if summary:
    (run_dir / 'summary.json').write_text(json.dumps(summary))
  (run_dir / 'metrics.jsonl').write_text(''.join(  # A str: a partial line.
      m if isinstance(m, str) else json.dumps(m) + '\n' for m in metrics))
  if job:
    (run_dir / 'job.json').write_text(json.dumps(job))


def status_table(workdir, **env_vars):
  out = sweep('--status', f'--workdir={workdir}', **env_vars)
  assert out.returncode == 0, out.stderr
  header, *rows = out.stdout.strip().splitlines()
  assert header.split() == ['run', 'state', 'steps', 'val_acc', 'job', 'error']
  return {row.split()[0]: row.split(None, 5)[1:] for row in rows}


def wait_for(predicate, timeout=30):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.05)


@pytest.fixture
def live_process(tmp_path):
  """A process whose command line names tmp_path/runs/live (as a running
  train.py's --workdir does)."""
  run_dir = str(tmp_path / 'runs/live')
  proc = subprocess.Popen([sys.executable, '-c', 'import time; '
                           'time.sleep(120)', run_dir])
  # Popen returns once exec has begun, but the kernel fills in the new
  # image's /proc/<pid>/cmdline a moment later: wait for it, as for any
  # train.py that has been running a while.
  wait_for(lambda: run_dir.encode() in pathlib.Path(
      f'/proc/{proc.pid}/cmdline').read_bytes())
  yield proc
  proc.kill()
  proc.wait()


SQUEUE = """#!/bin/sh
echo "$@" > "${0%/*}/args"
printf '44|PENDING\\n45|RUNNING\\n'
"""


def test_status_reads_every_run_directory(tmp_path, live_process):
  runs = tmp_path / 'runs'
  names = ['done', 'broken', 'live', 'lost', 'cut', 'new', 'queued', 'going']
  runs.mkdir()
  (runs / 'sweep.json').write_text(json.dumps(
      {'runs': {n: {'run': n, 'seed': 0} for n in names}}))
  write_run(runs / 'done', {'status': 'ok', 'steps': 6, 'val_accuracy': 0.5},
            [{'step': 3, 'val/accuracy': 0.25}, {'step': 6,
                                                 'val/accuracy': 0.5}],
            {'launcher': 'slurm', 'job_id': '41'})
  write_run(runs / 'broken', {'status': 'failed', 'returncode': 1,
                              'error': 'error: Bad config: width=0.0'},
            job={'launcher': 'slurm', 'job_id': '42'})
  write_run(runs / 'live', metrics=[{'step': 1, 'train/loss': 2.0},
                                    {'step': 2, 'train/loss': 1.9}, '{"st'],
            job=launchers.local_record(live_process.pid))
  # Slurm (none here, or not this job) has forgotten job 43; no summary.
  write_run(runs / 'lost', job={'launcher': 'slurm', 'job_id': '43'})
  write_run(runs / 'cut', {'status': 'interrupted', 'steps': 3,
                           'val_accuracy': 0.125}, steps=0)
  # Requeued after step 3: Slurm's state wins over the summary's.
  write_run(runs / 'queued', {'status': 'interrupted', 'steps': 3},
            [{'step': 3, 'val/accuracy': 0.25}],
            {'launcher': 'slurm', 'job_id': '44'})
  write_run(runs / 'going', job={'launcher': 'slurm', 'job_id': '45'})
  slurm = tmp_path / 'bin'  # A PATH of a squeue that knows jobs 44 and 45.
  slurm.mkdir()
  (slurm / 'squeue').write_text(SQUEUE)
  (slurm / 'squeue').chmod(0o755)
  assert status_table(runs, PATH=str(slurm)) == {
      'done': ['ok', '6/6', '0.5000', '41'],
      'broken': ['failed', '-', '-', '42', 'error: Bad config: width=0.0'],
      'live': ['running', '2/6', '-', '-'],
      'lost': ['failed', '-', '-', '43', 'slurm job 43 ended (gone from the '
               'queue) without a summary.json; see train.log'],
      'cut': ['interrupted', '3', '0.1250', '-'],
      'new': ['not-started', '-', '-', '-'],
      'queued': ['pending', '3/6', '0.2500', '44'],
      'going': ['running', '-', '-', '45']}
  assert (slurm / 'args').read_text().split() == [
      '-h', '-o', '%i|%T', '--states=all', '--jobs=41,42,43,44,45']
  (slurm / 'squeue').unlink()  # No Slurm here: its jobs' states unknown.
  unknown = status_table(runs, PATH=str(slurm))
  assert unknown['done'] == ['ok', '6/6', '0.5000', '41']
  assert unknown['lost'] == ['unknown', '-', '-', '43',
                             'no squeue here to ask Slurm about job 43']
  assert unknown['queued'][0] == unknown['going'][0] == 'unknown'


def test_status_of_a_folder_that_is_no_sweep(tmp_path):
  out = sweep('--status', f'--workdir={tmp_path}')
  assert out.returncode == 1
  assert out.stderr.strip() == (
      f'error: {tmp_path}/sweep.json not found or unreadable: is '
      f"'{tmp_path}' a sweep directory (scripts/sweep.py --workdir)?")


def test_a_rerun_leaves_running_runs_alone(tmp_path, launched, live_process,
                                           capsys):
  spec = write_sweep(tmp_path, [('live', TEST_CONFIG), ('other', TEST_CONFIG)])
  workdir = tmp_path / 'runs'
  (workdir / 'live').mkdir(parents=True)  # Before train.py wrote anything.
  (workdir / 'live/job.json').write_text(
      json.dumps(launchers.local_record(live_process.pid)))
  sweep_tool.run_sweep(spec, str(workdir), [])
  assert [c['name'] for c in launched] == ['other']
  table = capsys.readouterr().out
  assert 'live   running  (launched by another sweep)' in table
  live_process.kill()
  live_process.wait()
  launched.clear()
  sweep_tool.run_sweep(spec, str(workdir), [])  # Ended without a summary.
  assert sorted(c['name'] for c in launched) == ['live', 'other']


# ----------------------------------------------- the Slurm launcher, no Slurm


def test_slurm_dry_run_prints_the_sbatch_lines_and_commands(tmp_path):
  out = sweep('--sweep=configs/sweeps/naive_vs_reduced.py:size=cpu',
              f'--workdir={tmp_path}', '--dry_run', '--launcher=slurm',
              '--partition=cpu', '--tasks_per_node=2', '--time_limit_min=30',
              '--sbatch=account=me', '--sbatch=exclusive')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  sbatch = [line for line in lines if line.startswith('#SBATCH')]
  for option in ('--partition=cpu', '--ntasks-per-node=2', '--nodes=1',
                 '--time=30', '--account=me', '--exclusive', '--requeue',
                 '--signal=USR2@90', f'--chdir={REPO}'):
    assert f'#SBATCH {option}' in sbatch
  commands = [shlex.split(line) for line in lines if not line.startswith('#')]
  assert len(commands) == 2
  for argv in commands:
    assert argv[:2] == ['python', 'train.py'] and argv[-1] == '--distributed'
    assert parse_train_argv(argv[2:-1]).workdir.startswith(f'{tmp_path}/')
  assert not os.listdir(tmp_path)


def test_slurm_flags_need_the_slurm_launcher(tmp_path):
  out = sweep(f'--sweep={write_sweep(tmp_path, [("a", TEST_CONFIG)])}',
              f'--workdir={tmp_path}/runs', '--nodes=2', '--partition=x')
  assert out.returncode == 1
  assert out.stderr.strip() == ('error: --partition, --nodes apply to '
                                '--launcher=slurm only.')


def test_slurm_launcher_problems_stop_it_before_anything_is_written(
    tmp_path, launched, monkeypatch):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  workdir = str(tmp_path / 'runs')
  with pytest.raises(ValueError, match=re.escape(
      "--sbatch='=8': give an sbatch option as key=value (e.g. "
      '--sbatch=account=myproject) or key.')):
    sweep_tool.run_sweep(spec, workdir, [], launcher='slurm',
                         resources=launchers.SlurmResources(sbatch=('=8',)))
  monkeypatch.setattr(launchers.shutil, 'which', lambda program: None)
  with pytest.raises(ValueError, match=re.escape(
      "--launcher=slurm needs Slurm's sbatch, which is not on PATH here")):
    sweep_tool.run_sweep(spec, workdir, [], launcher='slurm')
  assert not os.path.exists(workdir) and not launched


FAKE_SBATCH = """#!/bin/sh
if [ -n "$REFUSE" ]; then
  echo "sbatch: error: invalid partition specified: nope" >&2
  echo "sbatch: error: Batch job submission failed: Invalid partition" >&2
  exit 1
fi
echo "Submitted batch job 77"
"""


def test_slurm_submission_with_a_stand_in_sbatch(tmp_path):
  bin_dir = tmp_path / 'bin'  # A PATH where sbatch only says what it did.
  bin_dir.mkdir()
  for name, text in (('sbatch', FAKE_SBATCH), ('srun', '#!/bin/sh\n')):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG)])
  args = (f'--sweep={spec}', f'--workdir={tmp_path}/runs', '--launcher=slurm',
          '--tasks_per_node=2')
  refused = sweep(*args, PATH=str(bin_dir), REFUSE='1')
  assert refused.returncode == 1
  assert refused.stderr.strip() == (
      "error: sbatch refused run 'a': sbatch: error: Batch job submission "
      'failed: Invalid partition')
  out = sweep(*args, PATH=str(bin_dir))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == 'a  submitted  (slurm job 77)'
  job = json.loads((tmp_path / 'runs/a/job.json').read_text())
  assert (job['launcher'], job['job_id'], job['tasks_per_node']) == (
      'slurm', '77', 2)
  script = (tmp_path / 'runs/a/slurm/77_submission.sh').read_text()
  assert '#SBATCH --ntasks-per-node=2' in script
  assert '#SBATCH --requeue' in script and '#SBATCH --job-name=a' in script
  with open(tmp_path / 'runs/a/slurm/77_submitted.pkl', 'rb') as f:
    train_job = pickle.load(f).function  # What the job will run.
  assert isinstance(train_job, launchers.TrainJob)
  assert train_job.run_dir == str(tmp_path / 'runs/a')
  argv = train_job.cmd[1:]
  assert argv[0] == 'train.py' and argv[-1] == '--distributed'
  assert parse_train_argv(argv[1:-1]).workdir == str(tmp_path / 'runs/a')


CHILD = """
import signal, sys, time
def stop(*_):
  open(sys.argv[1], 'w').write('checkpointed')
  sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print('ready', flush=True)
while True:
  time.sleep(0.05)
"""


def test_slurm_job_checkpoint_stops_the_child_and_requeues(tmp_path,
                                                           monkeypatch):
  # What submitit does on the preemption signal: checkpoint(), then requeue
  # with the submission it returns. train.py's stand-in saves on SIGTERM.
  monkeypatch.delenv('SLURM_PROCID', raising=False)
  saved = tmp_path / 'saved'
  job = launchers.TrainJob([sys.executable, '-c', CHILD, str(saved)],
                           str(tmp_path))
  thread = threading.Thread(target=job)
  thread.start()
  log = tmp_path / 'train.log'
  wait_for(lambda: log.exists() and 'ready' in log.read_text())
  # Slurm signals every process of the step: the child ignores it.
  os.kill(job._proc.pid, signal.SIGUSR2)  # pylint: disable=protected-access
  time.sleep(0.2)
  assert job._proc.poll() is None  # pylint: disable=protected-access
  resubmission = job.checkpoint()
  assert saved.read_text() == 'checkpointed'
  thread.join(timeout=10)
  assert resubmission.function is job and not resubmission.args
  again = pickle.loads(cloudpickle.dumps(resubmission))  # As submitit saves.
  assert (again.function.cmd, again.function.run_dir) == (job.cmd, job.run_dir)
  (tmp_path / 'summary.json').write_text('{"status": "ok"}')
  assert job.checkpoint() is None  # Finished: nothing to requeue.


# ------------------------------------------------------------- end to end


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch,
                                                      capsys):
  spec = write_sweep(tmp_path, [('a', TEST_CONFIG), ('b', TEST_CONFIG)])
  launched = []

  def fake_launch(name, cmd, run_dir, cores):
    launched.append(name)
    return 'failed' if name == 'a-seed0' else 'ok'
  monkeypatch.setattr(sweep_tool, 'launch', fake_launch)
  with pytest.raises(SystemExit, match=re.escape(
      '1 of 4 runs did not finish: a-seed0 (see their train.log)')):
    sweep_tool.run_sweep(spec, str(tmp_path / 'runs'), [], seeds=2)
  assert sorted(launched) == ['a-seed0', 'a-seed1', 'b-seed0', 'b-seed1']
  assert 'a-seed0  failed' in capsys.readouterr().out


def test_launch_records_a_crash_in_the_summary(tmp_path):
  cmd = [sys.executable, '-c',
         'import sys; print("loading"); print("ValueError: no such net"); '
         'sys.exit(3)']
  run_dir = tmp_path / 'run'
  cores = sorted(os.sched_getaffinity(0))[:1]
  assert sweep_tool.launch('run', cmd, str(run_dir), cores) == 'failed'
  assert json.loads((run_dir / 'summary.json').read_text()) == {
      'status': 'failed', 'returncode': 3, 'error': 'ValueError: no such net',
      'command': shlex.join(cmd)}
  assert (run_dir / 'train.log').read_text().startswith('loading\n')


def test_launch_leaves_a_workdir_another_training_holds(tmp_path):
  """train.py exits IN_USE_EXIT_CODE when another training holds the
  workdir: that training's summary.json is not overwritten with 'failed'."""
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  (run_dir / 'summary.json').write_text('{"status": "interrupted"}')
  cmd = [sys.executable, '-c', f'import sys; sys.exit({rundir.IN_USE_EXIT_CODE})']
  cores = sorted(os.sched_getaffinity(0))[:1]
  assert sweep_tool.launch('run', cmd, str(run_dir), cores) == 'in-use'
  assert (run_dir / 'summary.json').read_text() == '{"status": "interrupted"}'


@pytest.mark.parametrize('preset', [None, '/elsewhere/cache'])
def test_local_runs_share_a_compilation_cache_in_the_sweep_folder(
    tmp_path, monkeypatch, preset):
  if preset:
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', preset)
  else:
    monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  cmd = [sys.executable, '-c',
         'import os; print(os.environ["JAX_COMPILATION_CACHE_DIR"])']
  run_dir = tmp_path / 'runs/a-seed1'
  cores = sorted(os.sched_getaffinity(0))[:1]
  sweep_tool.launch('a-seed1', cmd, str(run_dir), cores)
  assert (run_dir / 'train.log').read_text().strip() == (
      preset or str(tmp_path / 'runs/.xla_cache' / socket.gethostname()))


@pytest.mark.slow
def test_two_seeds_train_and_a_rerun_skips_them(tmp_path):
  # On configs/test.py's own data: the built-in synthetic source.
  spec = write_sweep(tmp_path, [('good', TEST_CONFIG, {'num_train_steps': 3})])
  runs = tmp_path / 'runs'
  args = [f'--sweep={spec}', f'--workdir={runs}', '--seeds=2', '--parallel=2']
  first = sweep(*args)
  assert first.returncode == 0, first.stderr
  summary = lambda run: json.loads((runs / run / 'summary.json').read_text())
  for seed in (0, 1):
    assert summary(f'good-seed{seed}')['status'] == 'ok'
    assert summary(f'good-seed{seed}')['steps'] == 3
  configs = [rundir.flatten(rundir.load_run_config(runs / f'good-seed{s}')
                            .to_dict()) for s in (0, 1)]
  assert {k for k in configs[0] if configs[0][k] != configs[1][k]} == {'seed'}
  assert [c['seed'] for c in configs] == [0, 1]
  assert configs[0]['data.source'] == 'synthetic'
  record = (runs / 'sweep.json').read_bytes()
  assert json.loads(record)['runs'] == {
      f'good-seed{s}': {'run': 'good', 'seed': s, 'overrides': []}
      for s in (0, 1)}
  mtime = lambda s: os.path.getmtime(runs / f'good-seed{s}/summary.json')
  before = [mtime(0), mtime(1)]
  second = sweep(*args)
  assert second.returncode == 0, second.stderr
  for seed in (0, 1):
    assert f'[good-seed{seed}] already finished: skipped.' in second.stderr
  assert 'stale' not in second.stdout + second.stderr
  assert [mtime(0), mtime(1)] == before
  assert (runs / 'sweep.json').read_bytes() == record  # Nothing launched.


# flops_matched searches for its width when loaded: over 10 s.
@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n == 'flops_matched' else n
    for n in SWEEPS])
def test_dry_run_prints_commands_that_parse(name):
  arg = ':epochs=1' if name == 'fast_levers' else ':size=cpu'
  out = sweep(f'--sweep=configs/sweeps/{name}.py{arg}', '--workdir=/tmp/x',
              '--dry_run', '--config.data.source=/data/cifar.tar.gz')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) >= 2
  for line in lines:
    argv = shlex.split(line)
    assert argv[:2] == ['python', 'train.py']
    parsed = parse_train_argv(argv[2:])
    assert parsed.config.data.source == '/data/cifar.tar.gz'
    assert parsed.workdir.startswith('/tmp/x/')


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


@pytest.mark.slow
def test_main_jobs_matched_naive_net_costs_the_reduced_nets_macs():
  sweep_file = load_module('configs/sweeps/naive_vs_reduced.py')
  naive, reduced = sweep_file.get_sweep('size=cpu,naive=matched')
  config = load_config(naive.config)
  config.model.width = naive.overrides['model.width']
  assert (naive.name, config.model.module) == ('naive', 'naive')
  target = small_inception_macs(load_config(reduced.config))
  assert small_inception_macs(config) == pytest.approx(target, rel=0.02)
  with pytest.raises(ValueError, match='naive=.wide.; choose full or matched'):
    sweep_file.get_sweep('size=cpu,naive=wide')


def load_sweep(name):
  return load_module(f'configs/sweeps/{name}.py').get_sweep('size=cpu')


def test_grid_helpers():
  assert common.product(a=[1, 2], b=['x']) == [{'a': 1, 'b': 'x'},
                                               {'a': 2, 'b': 'x'}]
  assert common.zip_(a=[1, 2], b=['x', 'y']) == [{'a': 1, 'b': 'x'},
                                                 {'a': 2, 'b': 'y'}]
  with pytest.raises(ValueError, match='differ in length'):
    common.zip_(a=[1], b=[1, 2])
