"""A user's mistakes get one clear line before anything compiles or is
written: bad --config flags (configs/common.py), an image size the network or
the data cannot take, a workdir that another training holds
(rundir.workdir_lock), eval.py on a workdir without checkpoints, and a TFDS
source on an offline host (input_pipeline.check_data). No network: where a
test needs name resolution, it replaces socket.getaddrinfo."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags as ml_config_flags
import numpy as np
import pytest

import eval as eval_tool
import config_checks
import input_pipeline
import rundir
import trainer
from configs import common
from configs import small_inception
from configs import test as test_config
from tests.helpers import make_folder

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_CONFIG = str(ROOT / 'configs' / 'test.py')


def make_config(**overrides):
  config = test_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def run_tool(*args):
  return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def fail_if_reached(monkeypatch, what):
  """Makes loading data and building the runner raise AssertionError(what)."""
  def reached(*args, **kwargs):
    raise AssertionError(what)
  for name in ('load_data', 'Runner'):
    monkeypatch.setattr(trainer, name, reached)


# --- --config flags ----------------------------------------------------------


def parse(*flags, config=TEST_CONFIG):
  return common.parse_config_flags(['prog', f'--config={config}', *flags])


def flag_error(*flags, **kwargs) -> common.ConfigFlagError:
  with pytest.raises(common.ConfigFlagError) as error:
    parse(*flags, **kwargs)
  assert '\n' not in str(error.value)
  return error.value


def test_config_flags_parse_as_config_flags_do_other_flags_ignored():
  config = parse('--config.model.width=0.125', '--workdir=/elsewhere',
                 '--config.data.synthetic_size=(20,10)', '--config.seed', '3')
  assert config.model.width == 0.125 and config.seed == 3
  assert config.data.synthetic_size == (20, 10)
  with pytest.raises(AttributeError):  # Locked, as train.py's.
    config.new_key = 1


def test_unknown_key_names_the_flag_the_closest_key_and_the_keys():
  keys = ', '.join(sorted(test_config.get_config().model))
  error = flag_error('--config.seed=1', '--config.model.reduce_ac=linear')
  assert str(error) == (
      '--config.model.reduce_ac=linear: unknown config key model.reduce_ac '
      f'(did you mean model.reduce_act?); the keys of model are: {keys} '
      '(configs/base.py documents them).')
  assert error.flag == '--config.model.reduce_ac=linear'


def test_unknown_top_level_and_deeper_keys():
  top = ', '.join(sorted(test_config.get_config()))
  assert str(flag_error('--config.bogus=1')) == (
      '--config.bogus=1: unknown config key bogus; the top-level keys are: '
      f'{top} (configs/base.py documents them).')
  assert 'unknown config key data.bogus; the keys of data are: ' in str(
      flag_error('--config.data.bogus.deeper=1'))
  assert str(flag_error('--config.image_size.x=1')) == (
      '--config.image_size.x=1: image_size is a value (int), not a group of '
      'keys: set it as --config.image_size=...')


def test_bad_value_missing_file_and_failing_config_file():
  error = flag_error('--config.image_size=abc')
  assert str(error) == ("flag --config.image_size=abc: invalid literal for "
                        "int() with base 10: 'abc'")
  assert error.flag == '--config.image_size=abc'
  missing = ROOT / 'configs' / 'missing.py'
  error = flag_error(config=missing)
  assert str(error).startswith(
      f"--config={missing}: cannot load the config file: [Errno 2] No such "
      f"file or directory: '{missing}'")
  assert error.flag == f'--config={missing}'
  assert str(flag_error(config=f'{TEST_CONFIG}:bad=1')).endswith(
      "ValueError: Unknown config arg 'bad'; valid args: module, stem, width.")
  with pytest.raises(common.ConfigFlagError, match='^--config is missing'):
    common.parse_config_flags(['prog', '--workdir=/tmp'])


def parse_flags_error(capsys, *argv) -> str:
  """What common.parse_flags prints for argv, on flags like train.py's."""
  values = flags.FlagValues()
  ml_config_flags.DEFINE_config_file('config', flag_values=values,
                                     lock_config=True)
  flags.DEFINE_string('workdir', None, 'Workdir.', flag_values=values)
  flags.mark_flags_as_required(['workdir'], flag_values=values)
  with pytest.raises(SystemExit) as exit_:
    common.parse_flags(['prog', *argv], values)
  assert exit_.value.code == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1
  return lines[0]


def test_parse_flags_answers_any_mistake_with_one_line(capsys):
  config = f'--config={TEST_CONFIG}'
  assert parse_flags_error(
      capsys, config, '--workdir=x', '--config.model.reduce_ac=linear') == (
          f'error: {flag_error("--config.model.reduce_ac=linear")}')
  assert parse_flags_error(capsys, config, '--workdir=x', 'extra') == (
      "error: unexpected arguments ['extra']: every option is a --flag=value "
      '(--helpshort lists them).')
  assert parse_flags_error(capsys, config, '--wrokdir=x') == (
      "error: Unknown command line flag 'wrokdir'. Did you mean: workdir ? "
      '(--helpshort lists the flags)')
  assert parse_flags_error(capsys, config) == (
      'error: flag --workdir=None: Flag --workdir must have a value other '
      'than None. (--helpshort lists the flags)')


@pytest.mark.slow
def test_clis_answer_an_unknown_key_with_one_line_and_exit_2(tmp_path):
  workdir = tmp_path / 'run'
  for tool in (['train.py', f'--workdir={workdir}'],
               ['scripts/model_table.py']):
    proc = run_tool(*tool, '--config=configs/test.py',
                    '--config.model.reduce_ac=linear')
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f'error: {flag_error("--config.model.reduce_ac=linear")}']
  assert not workdir.exists()


# --- Image sizes -------------------------------------------------------------


def test_image_size_zero_is_refused_before_anything_runs(tmp_path,
                                                         monkeypatch):
  fail_if_reached(monkeypatch, 'got past the config check')
  with pytest.raises(ValueError) as error:
    trainer.train_and_evaluate(make_config(image_size=0), str(tmp_path / 'run'))
  assert str(error.value) == (
      'Bad config: image_size=0 is too small for googlenet: its layers need '
      'inputs of at least 1x1; set --config.image_size >= 1 (and <= the '
      "stored images' side).")
  assert not (tmp_path / 'run').exists()


def test_smallest_size_of_a_net_with_valid_downsampling():
  # Two 3x3/2 VALID downsamplings: H -> (H - 3) // 2 + 1, twice, must stay
  # >= 1: 7 -> 3 -> 1, while 6 -> 2 -> 0.
  config = small_inception.get_config()
  config.model.width = 0.125
  config.update_from_flattened_dict({'image_size': 6})
  with pytest.raises(ValueError, match=r'^Bad config: image_size=6 is too '
                     'small for small_inception: its layers need inputs of '
                     r'at least 7x7; set --config.image_size >= 7 '):
    config_checks.check_config(config)
  config.image_size = 7
  config_checks.check_config(config)


def test_image_size_larger_than_the_synthetic_images():
  with pytest.raises(ValueError) as error:
    config_checks.check_config(make_config(image_size=9))  # The images are 8x8.
  assert str(error.value) == (
      "Bad config: image_size=9 is larger than the 'synthetic' source's "
      'images (8x8), which are cropped to it; set --config.image_size <= 8 or '
      '--config.data.synthetic_image_size larger.')


def test_image_size_larger_than_a_folders_images_before_compiling(
    tmp_path, monkeypatch):
  make_folder(tmp_path / 'images', {'train': 10}, size=8)
  monkeypatch.setattr(trainer, 'Runner', lambda *args: pytest.fail('compiles'))
  config = make_config(image_size=12, **{
      'data.source': str(tmp_path / 'images'),
      'data.cache_dir': str(tmp_path / 'cache')})
  with pytest.raises(ValueError, match=re.escape(
      "image_size=12 is larger than the 'train[:90%]' images (8x8)")):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


# --- Workdir lock ------------------------------------------------------------

HOLD = '''
import sys, time
import rundir
with rundir.workdir_lock(sys.argv[1]):
  print('held', flush=True)
  time.sleep(600)
'''


@pytest.fixture
def holder(tmp_path):
  """A process holding tmp_path/'run' (killed at the end)."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD, tmp_path / 'run'],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline() == 'held\n'
    yield proc
  finally:
    proc.kill()
    proc.wait()


def holder_message(workdir, pid) -> str:
  """The refusal's pattern: the holder's pid, host and start time."""
  return (rf'{re.escape(str(workdir))} is in use by another training \(pid '
          rf'{pid} on host {re.escape(socket.gethostname())}, started '
          r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+\); nothing was changed\. Wait '
          r'for it to end or stop it, or use another --workdir\.')


def test_a_held_workdir_is_refused_and_freed_when_its_holder_is_killed(
    tmp_path, holder, monkeypatch):
  workdir = tmp_path / 'run'
  fail_if_reached(monkeypatch, 'got past the lock')
  with pytest.raises(rundir.WorkdirInUseError) as error:
    trainer.train_and_evaluate(make_config(), str(workdir))
  assert re.fullmatch(holder_message(workdir, holder.pid), str(error.value))
  assert os.listdir(workdir) == [rundir.LOCK]

  os.kill(holder.pid, signal.SIGKILL)  # No clean-up runs: the file stays.
  holder.wait()
  assert os.listdir(workdir) == [rundir.LOCK]
  with rundir.workdir_lock(str(workdir)):
    assert json.loads((workdir / rundir.LOCK).read_text())['pid'] == (
        os.getpid())
  assert not os.listdir(workdir)  # Released: removed.


def test_every_process_raises_when_process_0_cannot_lock(tmp_path, holder,
                                                         monkeypatch):
  workdir = tmp_path / 'run'
  monkeypatch.setattr(trainer.jax, 'process_count', lambda: 2)
  gathered = []  # What each process reports: [process 0's, process 1's].
  monkeypatch.setattr(trainer.multihost_utils, 'process_allgather',
                      lambda x: np.array(gathered))
  # Process 0 meets the holder.
  gathered[:] = [1, 0]
  with pytest.raises(rundir.WorkdirInUseError) as error:
    with trainer.hold_workdir(str(workdir)):
      pytest.fail('entered')
  assert re.fullmatch(holder_message(workdir, holder.pid), str(error.value))
  # Process 1 learns it from the gather; it takes no lock itself.
  monkeypatch.setattr(trainer.jax, 'process_index', lambda: 1)
  other = tmp_path / 'other'
  with pytest.raises(rundir.WorkdirInUseError, match=re.escape(
      f'{other} is in use by another training (found by process 0: see its '
      'log); nothing was changed.')):
    with trainer.hold_workdir(str(other)):
      pytest.fail('entered')
  gathered[:] = [0, 0]
  with trainer.hold_workdir(str(other)):
    pass
  assert not other.exists()


@pytest.mark.slow
def test_cli_refuses_a_held_workdir(tmp_path, holder):
  workdir = tmp_path / 'run'
  proc = run_tool('train.py', '--config=configs/test.py',
                  f'--workdir={workdir}')
  assert proc.returncode == rundir.IN_USE_EXIT_CODE
  assert re.fullmatch('error: ' + holder_message(workdir, holder.pid),
                      proc.stderr.splitlines()[-1])
  assert 'Traceback' not in proc.stderr
  assert os.listdir(workdir) == [rundir.LOCK]


# --- eval.py -----------------------------------------------------------------


def test_eval_refuses_a_workdir_without_checkpoints_and_creates_nothing(
    tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  rundir.write_json_atomic(workdir / rundir.CONFIG, make_config().to_dict())
  with pytest.raises(ValueError) as error:
    eval_tool.evaluate(str(workdir))
  assert str(error.value) == (
      f'{workdir} has no checkpoint to evaluate (none in '
      f'{workdir}/checkpoints): train it first (python train.py '
      f'--workdir={workdir} ...).')
  assert os.listdir(workdir) == [rundir.CONFIG]
  missing = tmp_path / 'missing'
  with pytest.raises(ValueError, match='config.json not found: is '):
    eval_tool.evaluate(str(missing))
  assert not missing.exists()


# --- Data checks -------------------------------------------------------------


def tfds_config(tmp_path):
  cfg = input_pipeline.default_config()
  cfg.data_dir = str(tmp_path / 'tfds')
  return cfg


@pytest.fixture
def tfds_offline(tmp_path, monkeypatch):
  """TFDS imported; names do not resolve; no proxy; a download would fail
  the test."""
  pytest.importorskip('tensorflow')  # What a TFDS source imports first.
  tfds = pytest.importorskip('tensorflow_datasets')
  tfds.builder('cifar10', data_dir=str(tmp_path / 'warm'))  # Import, register.
  for key in list(os.environ):
    if key.lower().endswith('_proxy'):
      monkeypatch.delenv(key)

  def unresolvable(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, f'{host}: Name not known')
  monkeypatch.setattr(socket, 'getaddrinfo', unresolvable)
  downloads = []
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      lambda builder, **kwargs: downloads.append(builder.name))
  return downloads


def test_offline_tfds_fails_at_once_naming_the_fix(tmp_path, tfds_offline):
  cfg = tfds_config(tmp_path)
  for load in (input_pipeline.check_data,
               lambda cfg: input_pipeline.load_split(cfg, 'train')):
    start = time.perf_counter()
    with pytest.raises(input_pipeline.DataUnavailableError) as error:
      load(cfg)
    assert time.perf_counter() - start < 1
    message = str(error.value)
    assert ('cannot resolve the download server www.cs.toronto.edu within 5 '
            's: this host looks offline') in message
    assert f'{tmp_path}/tfds/downloads/manual/' in message
    assert ('--config.data.source=PATH/TO/cifar10'
            in message)
  assert not tfds_offline  # No download was attempted.


def test_a_hung_resolver_times_out(tmp_path, tfds_offline, monkeypatch):
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *args: time.sleep(60))
  monkeypatch.setattr(input_pipeline, 'RESOLVE_TIMEOUT_S', 0.2)
  start = time.perf_counter()
  with pytest.raises(input_pipeline.DataUnavailableError,
                     match='www.cs.toronto.edu within 0.2 s'):
    input_pipeline.check_data(tfds_config(tmp_path))
  assert time.perf_counter() - start < 1


def test_an_archive_in_the_manual_dir_needs_no_server(tmp_path, tfds_offline):
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  (manual / 'cifar-10-binary.tar.gz').touch()
  input_pipeline.check_data(tfds_config(tmp_path))
  assert tfds_offline == ['cifar10']  # Prepared from it, no name resolved.


def test_check_data_of_local_and_synthetic_sources(tmp_path):
  cfg = input_pipeline.default_config()
  cfg.source = str(tmp_path / 'nope')
  with pytest.raises(input_pipeline.DataError, match=re.escape(
      f"Data source '{tmp_path}/nope' does not exist.")):
    input_pipeline.check_data(cfg)
  cfg.source = str(tmp_path)
  input_pipeline.check_data(cfg)  # Exists: its images are read later.
  cfg.source = 'synthetic'
  input_pipeline.check_data(cfg)
  cfg.synthetic_size = (5, 5)
  with pytest.raises(input_pipeline.DataError,
                     match=r'^data\.synthetic_size=\(5, 5\): must be'):
    input_pipeline.check_data(cfg)


@pytest.mark.parametrize('module, first_line', [
    ('scripts.sweep', 'Runs every run of a sweep file, at one or more seeds'),
    ('scripts.report', "Collects a sweep's runs into groups of seeds")])
def test_the_tools_run_as_modules_from_any_folder(tmp_path, module,
                                                  first_line):
  # Issue 27: the project is installed (make setup: pip install -e .), so
  # no script edits sys.path and `python -m` finds the tools anywhere.
  run = subprocess.run([sys.executable, '-m', module, '--help'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
  assert run.stdout.startswith(first_line), run.stderr[-2000:]
