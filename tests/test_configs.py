"""Config files: ':arg' parsing, clear errors, every config builds."""

import pytest

from configs import base, googlenet, small_inception
from configs.common import parse_arg
from models import GoogLeNet, SmallInception, build_model


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


def test_base_config_keys_are_all_model_fields():
  build_model(base.get_config().model)  # Raises on any unknown key.
