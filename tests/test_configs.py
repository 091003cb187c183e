"""Config files: ':arg' parsing, clear errors, every config builds, and the
valid knob values that configs/base.py and README.md list are the code's."""

import ast
import io
import json
import pathlib
import re
import tokenize

import pytest

from configs import base, googlenet, small_inception
from configs.common import load_config, parse_arg
from models import MODELS, GoogLeNet, SmallInception, build_model, inception
import config_checks
import ops
import rundir

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
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


SHIPPED = sorted(p.name for p in (README.parent / 'configs').glob('*.py')
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


def base_config_comments(block: str) -> dict[str, str]:
  """{key: its end-of-line comment} of `config.<block> = ...(dict(...))` in
  configs/base.py."""
  source = pathlib.Path(base.__file__).read_text()
  comments = {token.start[0]: token.string for token in
              tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT}
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Assign) and
        ast.unparse(node.targets[0]) == f'config.{block}'):
      keywords = node.value.args[0].keywords  # ConfigDict(dict(key=...)).
      return {k.arg: comments.get(k.value.lineno, '') for k in keywords}
  raise AssertionError(f'configs/base.py has no config.{block} = ...')


def listed_values(comment: str) -> tuple[str, ...]:
  """'# Pool branch: max | avg | none.' -> ('max', 'avg', 'none'): the first
  word of each '|'-separated choice after the last ': '."""
  choices = comment.lstrip('# ').split(': ')[-1].split('|')
  return tuple(re.match(r'\s*(\w+)', c).group(1) for c in choices)


def test_listed_values_parses_the_comment_styles():
  assert listed_values('# naive | reduced.') == ('naive', 'reduced')
  assert listed_values('# XLA:CPU loops: auto (512 with AVX-512) | 256 | 512.'
                       ) == ('auto', '256', '512')


@pytest.mark.parametrize('block', sorted(KNOBS))
def test_base_config_comments_list_each_knobs_valid_values(block):
  comments = base_config_comments(block)
  for key, valid in KNOBS[block].items():
    assert listed_values(comments[key]) == tuple(valid), (
        f'configs/base.py config.{block}.{key}: the comment {comments[key]!r} '
        f'should list {" | ".join(valid)}.')


def test_readme_lists_each_knobs_valid_values():
  text = README.read_text()
  # The model knob table: rows '| `key` | `value`, `value` (note) |'.
  table = text.split('The ablation knobs, `--config.model.<key>`:')[1]
  rows = re.findall(r'^\| `(\w+)` \| (.*) \|$', table.split('\n\n')[1],
                    re.MULTILINE)
  listed = {key: tuple(re.findall(r'`([^`]+)`', values))
            for key, values in rows}
  for key, valid in KNOBS['model'].items():
    assert listed.get(key) == tuple(valid), f'README knob table row {key!r}'
  # The ops paragraph: '`--config.ops.<key>` = `a|b|c`'.
  listed = {key: tuple(values.split('|')) for key, values in
            re.findall(r'`--config\.ops\.(\w+)`\s+=\s+`([\w|]+)`', text)}
  assert listed == {key: tuple(v) for key, v in KNOBS['ops'].items()}


# --- Cadences in steps or epochs ---------------------------------------------


def test_every_steps_resolves_epochs_to_the_nearest_step():
  fast = load_config('configs/cifar_fast.py')
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
