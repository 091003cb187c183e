"""The Inception module, naive or reduced, and the knobs for its ablations.

Naive (Szegedy et al. 2014, Fig. 2a): 1x1, 3x3 and 5x5 convs and a 3x3/1
max-pool all read the input; the pool passes all C_in channels through, so
out = c1 + c3 + c5 + C_in and width grows module after module.

Reduced (Fig. 2b): 1x1 reductions (r3, r5) before the 3x3 and 5x5 convs and
a 1x1 projection (pool_proj) after the pool; out = c1 + c3 + c5 + pool_proj.
The reductions carry a ReLU by default: the paper's "dual-purpose" 1x1.
"""

import dataclasses
import itertools
from collections.abc import Mapping

import jax.numpy as jnp
from flax import linen as nn

from models.layers import (ACTIVATIONS, NORMS, POOLS, ConvBlock, Pool,
                           check_choice)
from ops import Ops

# The valid values of each knob: the one list of them. configs/base.py and
# the README point here; a config with another value is refused, naming
# these.
CHOICES = {
    'module': ('naive', 'reduced'),
    'act': tuple(a for a in ACTIVATIONS if a != 'linear'),  # Other convs.
    'reduce_act': tuple(ACTIVATIONS),            # After the 1x1 reductions.
    'branch3': ('standard', 'separable'),        # The 3x3 branch.
    'branch5': ('5x5', '3x3x2', 'separable'),    # The 5x5 branch.
    'pool': (*POOLS, 'none'),                    # The pool branch.
    'norm': NORMS,
    'dtype': ('float32', 'bfloat16'),
}


@dataclasses.dataclass(frozen=True)
class InceptionOptions:
  """Ablation knobs shared by every module of a network, and the `ops`
  that compute its layers (not a knob: same params and math either way)."""
  module: str = 'reduced'
  act: str = 'relu'
  reduce_act: str = 'relu'
  branch3: str = 'standard'
  branch5: str = '5x5'
  pool: str = 'max'
  norm: str = 'batch'
  norm_scale: bool = True      # Batch norm with a learned scale (else 1).
  use_bias: bool = False
  fuse_pointwise: bool = True  # 1x1 siblings that read x as one GEMM.
  dtype: str = 'float32'      # Compute dtype; params stay float32.
  ops: Ops = Ops()            # From ops.resolve(config); default: XLA's.

  def __post_init__(self):
    for name, valid in CHOICES.items():
      check_choice(name, getattr(self, name), valid)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def conv(self, features: int, kernel: int = 1, **kw) -> ConvBlock:
    """A ConvBlock with this network's norm, bias, activation and dtype."""
    kw = {'act': self.act} | kw
    return ConvBlock(features, kernel, norm=self.norm,
                     norm_scale=self.norm_scale, use_bias=self.use_bias,
                     dtype=self.compute_dtype, ops=self.ops, **kw)

  def pool_layer(self, kind: str, window: int = 3, stride: int = 1,
                 padding: str = 'SAME', **kw) -> Pool:
    """A Pool computed by `ops` (`pool` is the branch knob)."""
    return Pool(kind, window, stride, padding, ops=self.ops, **kw)


# The 1x1 convs of a module that read its input (its "heads"), and the one
# conv they become when fused.
POINTWISE_HEADS = ('b1x1', 'b3x3_reduce', 'b5x5_reduce')
FUSED_1X1 = 'fused_1x1'


def pointwise_fusion(params: Mapping) -> dict[str, int]:
  """How a network's modules computed their 1x1 heads, from its params:
  {'fused_1x1': modules that ran them as one GEMM (their params hold
  FUSED_1X1), 'unfused_1x1': modules that ran two or more apart}. A module
  with one head (naive: b1x1 alone) has nothing to fuse. Same math, other
  speed: a time ratio between runs that differ here is partly the
  implementation's, not the design's."""
  counts = {'fused_1x1': 0, 'unfused_1x1': 0}

  def visit(node):
    if not isinstance(node, Mapping):
      return
    heads = sum(name in node for name in POINTWISE_HEADS)
    counts['fused_1x1'] += FUSED_1X1 in node
    counts['unfused_1x1'] += FUSED_1X1 not in node and heads > 1
    for child in node.values():
      visit(child)
  visit(params)
  return counts


class InceptionModule(nn.Module):
  """Parallel branches, concatenated on channels: [1x1, 3x3, 5x5, pool].

  A branch of width 0 is absent. In the naive module r3, r5 and pool_proj
  are ignored.
  """
  c1: int
  r3: int
  c3: int
  r5: int
  c5: int
  pool_proj: int
  opts: InceptionOptions = InceptionOptions()

  @nn.compact
  def __call__(self, x, train: bool = False):  # (N,H,W,C) -> (N,H,W,out)
    o = self.opts
    reduced = o.module == 'reduced'
    for width, red, name in ((self.c3, self.r3, 'r3'), (self.c5, self.r5, 'r5')):
      if reduced and width > 0 and red <= 0:
        raise ValueError(f'{name}={red}: a reduced module needs a positive '
                         'reduction width for each present branch.')

    # The 1x1 convs that read x: name -> (width, activation).
    heads = {'b1x1': (self.c1, o.act)}
    if reduced:
      heads['b3x3_reduce'] = (self.r3 if self.c3 else 0, o.reduce_act)
      heads['b5x5_reduce'] = (self.r5 if self.c5 else 0, o.reduce_act)
    heads = {k: v for k, v in heads.items() if v[0] > 0}
    h = self._pointwise_heads(x, heads, train)

    outs = [h['b1x1']] if 'b1x1' in h else []
    if self.c3:
      y = h.get('b3x3_reduce', x)
      outs.append(o.conv(self.c3, 3, separable=o.branch3 == 'separable',
                         name='b3x3')(y, train))
    if self.c5:
      y = h.get('b5x5_reduce', x)
      if o.branch5 == '3x3x2':  # Two stacked 3x3s: same receptive field.
        y = o.conv(self.c5, 3, name='b5x5_a')(y, train)
        outs.append(o.conv(self.c5, 3, name='b5x5_b')(y, train))
      else:
        outs.append(o.conv(self.c5, 5, separable=o.branch5 == 'separable',
                           name='b5x5')(y, train))
    if o.pool != 'none' and (self.pool_proj > 0 or not reduced):
      y = o.pool_layer(o.pool, 3, 1, name='pool')(x)  # Naive: all C_in kept.
      if reduced:
        y = o.conv(self.pool_proj, 1, name='pool_proj')(y, train)
      outs.append(y)
    if not outs:
      raise ValueError('Inception module with no branches: every width is 0.')
    return jnp.concatenate(outs, axis=-1)

  def _pointwise_heads(self, x, heads: dict[str, tuple[int, str]], train):
    """Applies the 1x1 convs that read x; fused into one GEMM if enabled.

    Batch norm is per channel, so one BN over the concatenated outputs equals
    separate BNs on each. The activation is applied after the split.
    """
    o = self.opts
    if not (o.fuse_pointwise and len(heads) > 1):
      return {name: o.conv(w, 1, act=act, name=name)(x, train)
              for name, (w, act) in heads.items()}
    widths = [w for w, _ in heads.values()]
    y = o.conv(sum(widths), 1, act='linear', name=FUSED_1X1)(x, train)
    splits = jnp.split(y, list(itertools.accumulate(widths[:-1])), axis=-1)
    return {name: ACTIVATIONS[act](part)
            for (name, (_, act)), part in zip(heads.items(), splits)}


def scaled(width: int, multiplier: float) -> int:
  """A branch width times a multiplier; 0 stays 0 (an absent branch)."""
  return max(1, round(width * multiplier)) if width > 0 else 0


def check_width(value: float, name: str = 'width') -> None:
  if not value > 0:
    raise ValueError(f'{name}={value!r}: the multiplier must be > 0, '
                     f'e.g. --config.model.{name}=0.5.')



class ReducedConv(nn.Module):
  """A 1x1 reduction to `reduce` channels, then a kxk conv to `features`.

  Against a direct kxk conv C -> F the MAC ratio is
  k*k*C*F / (C*reduce + k*k*reduce*F); for C=F=256, reduce=64, k=4 it is 64/17.
  """
  reduce: int
  features: int
  kernel: int
  opts: InceptionOptions = InceptionOptions()

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.opts.conv(self.reduce, 1, act=self.opts.reduce_act,
                       name='reduce')(x, train)
    return self.opts.conv(self.features, self.kernel, name='conv')(x, train)
