"""Config files: ':arg' parsing, clear errors, every config builds, and
every knob value the code lists (its one list) is accepted, others refused."""

import json
import pathlib

import pytest

from configs import base, googlenet, small_inception
from configs.common import load_config, parse_arg
from models import MODELS, GoogLeNet, SmallInception, build_model, inception
import config_checks
import ops
import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]
# The valid values of each knob, as the code checks them.
KNOBS = {
    'model': inception.CHOICES,
    'ops': {**ops.CHOICES, 'cpu_vector_width': ops.CPU_VECTOR_WIDTHS},
}


def test_parse_arg_types():
  arg = parse_arg('module=naive,width=0.5,bn=False', module='reduced',
                  width=1.0, bn=True)
  assert (arg.module, arg.width, arg.bn) == ('naive', 0.5, False)


@pytest.mark.parametrize('arg,match', [
    ('modul=naive', 'Unknown config arg .modul.*valid args: bn, module, width'),
    ('width=wide', 'must be a float'),
    ('bn=maybe', 'must be True or False'),
])
def test_parse_arg_errors(arg, match):
  with pytest.raises(ValueError, match=match):
    parse_arg(arg, module='reduced', width=1.0, bn=True)


@pytest.mark.parametrize('get_config,arg,cls', [
    (googlenet.get_config, 'module=naive,stem=imagenet,width=0.5', GoogLeNet),
    (googlenet.get_config, 'stem=cifar', GoogLeNet),
    (small_inception.get_config, 'module=reduced,bn=False', SmallInception),
])
def test_configs_build_their_model(get_config, arg, cls):
  config = get_config(arg)
  model = build_model(config.model)
  assert isinstance(model, cls)
  for key, value in config.model.items():
    if key != 'name':
      assert getattr(model, key, getattr(model.opts, key, None)) == value


SHIPPED = sorted(p.name for p in (REPO / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'common'))


@pytest.mark.parametrize('name', SHIPPED)
def test_every_shipped_config_builds_its_model(name):
  config = load_config(f'configs/{name}')
  model = build_model(config.model)
  assert isinstance(model, tuple(MODELS.values()))
  # No key beyond base.py's, save network fields the model accepted above.
  extra = set(rundir.flatten(config.to_dict())) - set(
      rundir.flatten(base.get_config().to_dict()))
  assert all(k.startswith('model.') for k in extra), extra


def test_base_config_keys_are_all_model_fields():
  build_model(base.get_config().model)  # Raises on any unknown key.


# Every valid value of every knob, as (block, key, value).
KNOB_VALUES = [(block, key, value) for block, knobs in KNOBS.items()
               for key, values in knobs.items() for value in values]


@pytest.mark.parametrize('block,key,value', KNOB_VALUES)
def test_every_listed_knob_value_is_accepted_and_builds(block, key, value):
  config = load_config('configs/test.py')
  config[block][key] = value
  model = config_checks.check_values(config)  # Builds and traces the net.
  if block == 'model':
    assert getattr(model.opts, key) == value


@pytest.mark.parametrize('block,key', sorted(
    (block, key) for block, knobs in KNOBS.items() for key in knobs))
def test_a_knob_value_not_listed_is_refused_naming_the_listed(block, key):
  config = load_config('configs/test.py')
  config[block][key] = 'bogus'
  with pytest.raises(ValueError) as error:
    config_checks.check_values(config)
  name = key if block == 'model' else f'{block}.{key}'
  assert str(error.value) == (
      f"{name}='bogus' is not valid; choose one of "
      f'{", ".join(repr(v) for v in KNOBS[block][key])}.')


# --- Cadences in steps or epochs ---------------------------------------------


def test_every_steps_resolves_epochs_to_the_nearest_step():
  fast = load_config('configs/cifar_fast_small.py')
  # 45,000 training images: 351 steps of 128 per epoch, 175 of 256.
  assert config_checks.every_steps(fast, 351) == {
      'log': 88, 'eval': 702, 'checkpoint': 702}  # 0.25 x 351 = 87.75.
  assert config_checks.every_steps(fast, 175) == {
      'log': 44, 'eval': 350, 'checkpoint': 350}  # 0.25 x 175 = 43.75.
  fast.log_every_epochs = 0.001  # 0.35 of a step: at least 1.
  assert config_checks.every_steps(fast, 351)['log'] == 1
  # In steps, the epoch count does not matter.
  assert config_checks.every_steps(base.get_config(), 7) == {
      'log': 50, 'eval': 1000, 'checkpoint': 1000}


@pytest.mark.parametrize('overrides, message', [
    ({'eval_every_epochs': 2.0},
     'Bad config: eval_every_steps=3 and eval_every_epochs=2.0 are both set; '
     'set one to 0: --config.eval_every_epochs=0 to count in steps, '
     '--config.eval_every_steps=0 to count in epochs.'),
    ({'log_every_steps': 0},
     'Bad config: set log_every_steps or log_every_epochs > 0.'),
    ({'checkpoint_every_epochs': -1.0},
     'Bad config: checkpoint_every_steps=3 and checkpoint_every_epochs=-1.0 '
     'must be >= 0 (0 = unset).'),
])
def test_a_cadence_set_both_ways_or_neither_is_refused(overrides, message):
  config = load_config('configs/test.py')  # Every 3 steps; logs every step.
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError) as error:
    config_checks.check_values(config)
  assert str(error.value) == message


def test_a_run_saved_with_step_cadences_resumes_under_epochs(tmp_path):
  """cifar_fast's runs saved 702/702/88 steps and no *_every_epochs keys;
  its cadences in epochs are bookkeeping, so those runs are not stale and
  read back with the same intervals."""
  today = load_config('configs/cifar_fast_small.py').to_dict()
  saved = {k: v for k, v in today.items() if not k.endswith('_every_epochs')}
  saved |= {'eval_every_steps': 702, 'checkpoint_every_steps': 702,
            'log_every_steps': 88}
  (tmp_path / rundir.CONFIG).write_text(json.dumps(saved))
  assert rundir.saved_training_changes(str(tmp_path), today) == []
  old = rundir.load_run_config(str(tmp_path))
  assert config_checks.every_steps(old, 351) == {
      'log': 88, 'eval': 702, 'checkpoint': 702}
  assert rundir.saved_training_changes(
      str(tmp_path), today | {'num_epochs': 3.0}) == ['num_epochs: 7.5 -> 3.0']
