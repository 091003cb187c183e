"""The small Inception net that Zhang et al. 2017 trained on CIFAR-10.

("Understanding deep learning requires rethinking generalization", Fig. 3.)
Input 28x28x3 -> Conv(96, 3x3) -> Inception(32,32), Inception(32,48)
-> Downsample(80) -> Inception(112,48), (96,64), (80,80), (48,96)
-> Downsample(96) -> Inception(176,160) x2 -> global mean pool -> dense.

Inception(a, b) has a 1x1 branch of a filters and a 3x3 branch of b filters;
Downsample(k) is a 3x3/2 conv with k filters concatenated with a 3x3/2
max-pool. module=reduced inserts a 1x1 reduction to reduce_ratio * C_in
channels before each module's 3x3 conv (the downsample convs are unchanged).
"""

import jax.numpy as jnp
from flax import linen as nn

from models.inception import InceptionModule, InceptionOptions, check_width, scaled
from models.pointwise import PointwiseConv

# ('inception', c1, c3) or ('downsample', k).
LAYOUT = (
    ('inception', 32, 32), ('inception', 32, 48), ('downsample', 80),
    ('inception', 112, 48), ('inception', 96, 64), ('inception', 80, 80),
    ('inception', 48, 96), ('downsample', 96),
    ('inception', 176, 160), ('inception', 176, 160),
)


class Downsample(nn.Module):
  """3x3/2 conv with k filters || 3x3/2 max-pool, both VALID: H -> (H-3)//2+1."""
  features: int
  opts: InceptionOptions = InceptionOptions()

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = self.opts.conv(self.features, 3, stride=2, padding='VALID',
                          name='conv')(x, train)
    pool = self.opts.pool_layer('max', 3, 2, 'VALID', name='pool')(x)
    return jnp.concatenate([conv, pool], axis=-1)


class SmallInception(nn.Module):
  num_classes: int = 10
  width: float = 1.0
  reduce_ratio: float = 0.5
  dropout: float = 0.0
  opts: InceptionOptions = InceptionOptions(pool='none')

  def __post_init__(self):
    check_width(self.width)
    check_width(self.reduce_ratio, 'reduce_ratio')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):  # (N,28,28,3) -> (N,classes)
    o, w = self.opts, lambda c: scaled(c, self.width)
    x = x.astype(o.compute_dtype)
    x = o.conv(w(96), 3, name='conv1')(x, train)
    for i, (kind, *widths) in enumerate(LAYOUT, start=1):
      if kind == 'downsample':
        x = Downsample(w(widths[0]), o, name=f'downsample_{i}')(x, train)
        continue
      c1, c3 = map(w, widths)
      r = scaled(x.shape[-1], self.reduce_ratio)  # Reduction (and pool proj).
      x = InceptionModule(c1, r, c3, 0, 0, r, o, name=f'inception_{i}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = PointwiseConv(self.num_classes, dtype=o.compute_dtype, name='head')(x)
    return x.astype(jnp.float32)
