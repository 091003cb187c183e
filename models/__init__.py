"""Model registry: a config's `model.name` -> a linen module.

`build_model(config.model, ops.resolve(config))` splits the model config into
the ablation knobs shared by every Inception module (InceptionOptions) and
the network's own fields; an unknown name or key raises a ValueError that
lists the valid ones. The optional `Ops` say how the layers are computed
(ops/); the default is XLA's own ops.
"""

import dataclasses
from typing import Any, Mapping

from flax import linen as nn

from models.air_inception import AirInception
from models.googlenet import GoogLeNet
from models.inception import InceptionModule, InceptionOptions, ReducedConv
from models.layers import ConvBlock, Pool
from models.pointwise import PointwiseConv
from models.small_inception import SmallInception
from ops import Ops

MODELS: dict[str, type[nn.Module]] = {
    'air_inception': AirInception,
    'googlenet': GoogLeNet,
    'small_inception': SmallInception,
}
OPTION_KEYS = tuple(f.name for f in dataclasses.fields(InceptionOptions)
                    if f.name != 'ops')


def network_keys(cls) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.name not in ('parent', 'name', 'opts'))


def build_model(model_config: Mapping[str, Any], ops: Ops = Ops()
                ) -> nn.Module:
  """Builds `model_config.name` with every other key as a field or knob."""
  cfg = dict(model_config)
  name = cfg.pop('name', None)
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; registered models: '
                     f'{", ".join(sorted(MODELS))}. Set --config.model.name.')
  cls = MODELS[name]
  unknown = sorted(set(cfg) - set(OPTION_KEYS) - set(network_keys(cls)))
  if unknown:
    raise ValueError(
        f'Unknown model config key(s) {unknown} for {name!r}; valid keys: '
        f'{", ".join(sorted(network_keys(cls) + OPTION_KEYS))}.')
  defaults = dataclasses.asdict(cls.__dataclass_fields__['opts'].default)
  opts = InceptionOptions(**{**defaults, **{k: cfg.pop(k) for k in OPTION_KEYS
                                            if k in cfg}, 'ops': ops})
  return cls(opts=opts, **cfg)


__all__ = ['MODELS', 'AirInception', 'build_model', 'ConvBlock', 'GoogLeNet', 'InceptionModule',
           'InceptionOptions', 'Pool', 'PointwiseConv', 'ReducedConv',
           'SmallInception']
