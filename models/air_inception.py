"""An airbench-style CIFAR-10 net whose blocks are Inception modules.

Keller Jordan's airbench (arXiv 2404.00498, `lib_airbench93.py`) trains a
small VGG-like net to 93% in a few GPU-seconds: a 2x2 "whitening" conv
(3 -> 24 channels, no padding), then three groups of
conv -> 2x2 max-pool -> conv, widths 64/128/128, then a global max pool and
a linear head scaled down by 9. Here each conv of a group is an Inception
module (block='inception'), so every module knob (naive | reduced,
reduce_act, branch3, branch5, pool) applies to a net that trains near
convergence in minutes; block='conv' keeps airbench's plain 3x3 convs, the
baseline the modules are measured against.

  (N,32,32,3) -> whiten 2x2 VALID -> (N,31,31,24)
  -> [module, max-pool 2, module] x 3 -> (N,15,15,w1), (N,7,7,w2), (N,3,3,w3)
  -> global max -> dense (no bias) * head_scale -> (N,classes)

stem_width > 0 gives the net GoogLeNet's shape instead: a 3x3 conv stem at
full resolution, then [max-pool 2, module, module] x 3, so that every
module runs at the pooled resolution (15, 7, 3): on a CPU the elementwise
work after a module's branches (batch norms, activations, concatenation)
costs more than its convolutions, and a module at 31x31 pays 4x for it.
For the same reason stem_pool_first moves the first pool inside the stem,
between its conv and its batch norm (airbench's order in every group): the
norm and activation of the net's largest activation then run at 15x15.

Each module splits its output width W as GoogLeNet's inception (3a) does:
1x1 W/4, 3x3 W/2 (after a 3W/8 reduction), 5x5 W/8 (after a W/16 one),
pool projection W/8. A reduced module at W = C_in costs about a third of a
3x3 conv's multiply-adds, so the default widths are 1.5x airbench's: about
the same compute, more channels. The whitening conv's kernel is set from
the data and frozen by the trainer (optim.py, configs/base.py's `whiten`).
"""

from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from models.inception import InceptionModule, InceptionOptions, check_width, scaled
from models.layers import ConvBlock

BLOCKS = ('inception', 'conv')
STEM = 'whiten'  # The stem's name: optim freezes it, whitening sets it.
WHITEN_WIDTH = 24  # Two signs x the 12 eigenvectors of 2x2x3 patches.


def module_widths(width: int, reduce_scale: float = 1.0
                  ) -> tuple[int, int, int, int, int, int]:
  """(c1, r3, c3, r5, c5, pool_proj) of an output width, in the proportions
  of GoogLeNet's inception (3a): (64, 96, 128, 16, 32, 32) of 256, the
  reductions r3 and r5 times `reduce_scale`."""
  c1, c3, c5 = scaled(width, 1 / 4), scaled(width, 1 / 2), scaled(width, 1 / 8)
  return (c1, scaled(width, 3 / 8 * reduce_scale), c3,
          scaled(width, 1 / 16 * reduce_scale), c5, width - c1 - c3 - c5)


class AirInception(nn.Module):
  has_whitening_stem: ClassVar[bool] = True  # 'whiten': config.whiten.
  num_classes: int = 10
  width: float = 1.0
  widths: tuple[int, int, int] = (96, 192, 192)
  block: str = 'inception'
  stem_width: int = 0  # > 0: a 3x3 conv stem, then [pool, a, b] x 3.
  stem_pool_first: bool = False  # The stem's pool before its norm and act.
  reduce_scale: float = 1.0  # The reductions' widths times this.
  head_scale: float = 1 / 9
  dropout: float = 0.0
  opts: InceptionOptions = InceptionOptions(act='gelu', reduce_act='gelu')

  def __post_init__(self):
    check_width(self.width)
    check_width(self.reduce_scale, 'reduce_scale')
    if self.block not in BLOCKS:
      raise ValueError(f'block={self.block!r} is not valid; choose one of '
                       f'{", ".join(map(repr, BLOCKS))}.')
    super().__post_init__()

  def _block(self, width: int, name: str):
    o = self.opts
    if self.block == 'conv':
      return o.conv(width, 3, name=name)
    return InceptionModule(*module_widths(width, self.reduce_scale), o,
                           name=name)

  @nn.compact
  def __call__(self, x, train: bool = False):  # (N,32,32,3) -> (N,classes)
    o = self.opts
    x = x.astype(o.compute_dtype)
    x = ConvBlock(WHITEN_WIDTH, 2, padding='VALID', norm='none', act=o.act,
                  use_bias=True, dtype=o.compute_dtype, ops=o.ops,
                  name=STEM)(x, train)
    pool_first = bool(self.stem_width) and self.stem_pool_first
    if self.stem_width:
      x = o.conv(scaled(self.stem_width, self.width), 3, pool=2 * pool_first,
                 name='stem')(x, train)
    for g, width in enumerate(self.widths, start=1):
      width = scaled(width, self.width)
      pool = o.pool_layer('max', 2, 2, 'VALID', name=f'group{g}_pool')
      x = pool(x) if self.stem_width and not (g == 1 and pool_first) else x
      x = self._block(width, f'group{g}_a')(x, train)
      x = x if self.stem_width else pool(x)
      x = self._block(width, f'group{g}_b')(x, train)
    x = jnp.max(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, use_bias=False, dtype=o.compute_dtype,
                 name='head')(x)
    return x.astype(jnp.float32) * self.head_scale
