"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions")."""

import jax.numpy as jnp
from flax import linen as nn

from models.inception import (InceptionModule, InceptionOptions, ReducedConv,
                              check_width, scaled)
from models.layers import check_choice
from models.pointwise import PointwiseConv

# Table 1 of the paper: name -> (c1, r3, c3, r5, c5, pool_proj).
WIDTHS = {
    '3a': (64, 96, 128, 16, 32, 32),
    '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64),
    '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64),
    '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}
STEMS = ('imagenet', 'cifar')


class GoogLeNet(nn.Module):
  """GoogLeNet with either the paper's ImageNet stem or a CIFAR stem.

  imagenet: 224x224 -> conv 7x7/2 -> maxpool 3x3/2 -> [1x1 64, 3x3 192]
            -> maxpool 3x3/2 -> 3a, 3b -> ... (28x28 at 3a)
  cifar:    32x32 -> conv 3x3 192 -> 3a, 3b -> ... (32x32 at 3a)
  Then: maxpool 3x3/2 -> 4a..4e -> maxpool 3x3/2 -> 5a, 5b -> global average
  pool -> dropout -> dense.
  `width` scales every conv; `reduce_scale` scales the reductions r3, r5.
  `num_modules` keeps the first N of the nine modules (3a, 3b, 4a, ...): the
  same layers in a shallower net, for tests and smoke runs.
  """
  num_classes: int = 1000
  stem: str = 'imagenet'
  width: float = 1.0
  reduce_scale: float = 1.0
  dropout: float = 0.0
  num_modules: int = len(WIDTHS)
  opts: InceptionOptions = InceptionOptions()

  def __post_init__(self):
    check_choice('stem', self.stem, STEMS)
    check_width(self.width)
    check_width(self.reduce_scale, 'reduce_scale')
    if not 1 <= self.num_modules <= len(WIDTHS):
      raise ValueError(f'num_modules={self.num_modules!r}: GoogLeNet has '
                       f'1 to {len(WIDTHS)} Inception modules.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):  # (N,H,W,3) -> (N,classes)
    o, w = self.opts, lambda c: scaled(c, self.width)
    x = x.astype(o.compute_dtype)
    if self.stem == 'imagenet':
      x = o.conv(w(64), 7, stride=2, name='conv1')(x, train)     # 112x112
      x = o.pool_layer('max', 3, 2, name='pool1')(x)                 # 56x56
      x = ReducedConv(w(64), w(192), 3, o, name='conv2')(x, train)
      x = o.pool_layer('max', 3, 2, name='pool2')(x)                 # 28x28
    else:
      x = o.conv(w(192), 3, name='conv1')(x, train)              # 32x32
    modules = list(WIDTHS.items())[:self.num_modules]
    for name, (c1, r3, c3, r5, c5, pp) in modules:
      r = lambda c: scaled(c, self.width * self.reduce_scale)
      x = InceptionModule(w(c1), r(r3), w(c3), r(r5), w(c5), w(pp), o,
                          name=f'inception_{name}')(x, train)
      if name in ('3b', '4e'):
        x = o.pool_layer('max', 3, 2, name=f'pool{name[0]}')(x)
    x = jnp.mean(x, axis=(1, 2))                                 # (N, C)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = PointwiseConv(self.num_classes, dtype=o.compute_dtype, name='head')(x)
    return x.astype(jnp.float32)
