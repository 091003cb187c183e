"""Config files: ':arg' parsing, clear errors, every config builds, and the
valid knob values that configs/base.py and README.md list are the code's."""

import ast
import io
import pathlib
import re
import tokenize

import pytest

from configs import base, googlenet, small_inception
from configs.common import load_config, parse_arg
from models import GoogLeNet, SmallInception, build_model, inception
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
  assert isinstance(model, (GoogLeNet, SmallInception))
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
