"""Compute accounting: params and multiply-adds per layer, from shapes alone.

`account(model, input_shape)` traces `model.init` under `jax.eval_shape`
(nothing is compiled or allocated) and records one row for every layer that
defines `layer_type()` and `macs()` (see models/layers.py): conv blocks, the
pointwise core, pools, the dense head. A layer nested in a counted layer
(the PointwiseConv inside a ConvBlock) is part of its parent's row.

MACs per conv are H_out * W_out * k * k * C_in * C_out, per image.

`xla_flops(...)` compiles the forward pass and reads XLA's own
`cost_analysis()`. It is close to 2 * MACs but not equal (measured in
tests/test_accounting.py):
- XLA counts a multiply and an add per MAC, and then also every elementwise
  op: bias adds, batch-norm scale and shift, ReLU, the max-pool comparisons,
  the global mean, so it is a bit above 2 * MACs;
- for a padded ('SAME') conv XLA counts only the window taps that land
  inside the image, while H_out*W_out*k*k counts the zero-padding taps too,
  which pulls XLA below 2 * MACs on small feature maps (7x7 with a 5x5
  kernel loses about 30% of the taps).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

import allocator
import ops
from ops import onednn


@dataclasses.dataclass
class Row:
  name: str        # Module path, e.g. 'inception_3a/b3x3'.
  type: str        # e.g. 'conv3x3', 'sep_conv5x5', 'maxpool3x3/2', 'dense'.
  in_shape: tuple  # Per image, no batch axis.
  out_shape: tuple
  params: int
  macs: int        # Per image.

  @property
  def group(self) -> str:  # 'inception_3a', 'conv2', 'head', ...
    return self.name.split('/')[0]


@dataclasses.dataclass
class Accounting:
  rows: list[Row]
  params: int  # Every parameter of the model (equals the sum over rows).
  macs: int    # Per image.
  out_shapes: dict[str, tuple]  # Top-level module -> output shape per image.

  def groups(self) -> dict[str, dict]:
    """Per-module sums in network order: name -> {params, macs, out_shape}."""
    out: dict[str, dict] = {}
    for r in self.rows:
      g = out.setdefault(r.group, {'params': 0, 'macs': 0,
                                   'out_shape': self.out_shapes.get(r.group)})
      g['params'] += r.params
      g['macs'] += r.macs
    return out


def _size(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _subtree(tree, path):
  for key in path:
    tree = tree.get(key, {}) if hasattr(tree, 'get') else {}
  return tree


def account(model: nn.Module, input_shape: tuple[int, ...]) -> Accounting:
  """Rows for one image of `input_shape` (H, W, C); shapes only, no compile."""
  records = []
  out_shapes = {}  # Top-level module name -> its output shape.
  active = []  # Counted layers currently being called (to skip nested ones).

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    counted = not active and hasattr(module, 'macs')
    active.extend([module] if counted else [])
    try:
      y = next_fun(*args, **kwargs)
    finally:
      del active[len(active) - counted:]
    path, x = module.scope.path, args[0]
    if len(path) == 1:
      out_shapes[path[0]] = y.shape[1:]
    if counted:
      records.append((path, module.layer_type(x.shape), x.shape, y.shape,
                      module.macs(x.shape, y.shape)))
    return y

  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  params = variables['params']
  rows = [Row('/'.join(path), kind, tuple(i[1:]), tuple(o[1:]),
              _size(_subtree(params, path)), macs)
          for path, kind, i, o, macs in records]
  return Accounting(rows, _size(params), sum(r.macs for r in rows), out_shapes)


def xla_flops(model: nn.Module, input_shape: tuple[int, ...],
              batch: int = 1) -> float:
  """XLA's cost_analysis() flops of the compiled forward pass, per image."""
  x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  compiled = jax.jit(model.apply).lower(variables, x).compile()
  return cost_flops(compiled) / batch


def cost_entry(compiled: Any, key: str) -> float:
  """An entry of a compiled computation's cost analysis: 'flops', or
  'bytes accessed' (every instruction's operand and output bytes).

  XLA knows nothing of custom calls (it counts each as -1); the oneDNN
  passes' are added here: a convolution's as XLA counts its own, a max
  pool's forward as XLA counts a reduce-window max (k*k - 1 per output), its
  backward as one add per output.
  """
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  extra = {'flops': 0.0, 'bytes accessed': 0.0}
  for call in onednn.call_costs(compiled.as_text()):
    for k, v in call.items():
      extra[k] += v + 1  # + 1: XLA's -1 for an unknown custom call.
  return float(cost[key]) + extra.get(key, 0.0)


def cost_flops(compiled: Any) -> float:
  return cost_entry(compiled, 'flops')


def input_shape(config) -> tuple[int, int, int]:
  return (config.image_size, config.image_size, 3)


def summarize(config, with_xla: bool = True,
              model: nn.Module | None = None) -> dict:
  """The accounting of a config as plain JSON-able data.

  {'layers': [row, ...], 'groups': {name: {params, macs}},
   'total': {'params', 'macs', 'xla_flops'}}; MACs and FLOPs per image.
  model: config's network where the caller has built it (a training run);
  None builds it with the ops this host resolves to.
  """
  if model is None:
    from models import build_model  # Local: keeps this module model-agnostic.
    model = build_model(config.model, ops.resolve(config))
  acc = account(model, input_shape(config))
  total = {'params': acc.params, 'macs': acc.macs}
  if with_xla:
    total['xla_flops'] = xla_flops(model, input_shape(config))
    total['xla_flops_over_2macs'] = total['xla_flops'] / (2 * acc.macs)
  return {'layers': [dataclasses.asdict(r) for r in acc.rows],
          'groups': acc.groups(), 'total': total}


def implementation(config, params) -> dict:
  """How a config's network, with these params, is computed, which changes
  its speed and not its params, MACs or math: the resolved ops, XLA:CPU's
  vector width (None off CPU), the process's malloc (allocator.py) and the
  modules whose 1x1 heads ran fused or apart
  (models.inception.pointwise_fusion). summary.json records it, so
  that the report can tell a time ratio of two implementations from a
  design's."""
  from models.inception import pointwise_fusion  # Local: as summarize's.
  width = ops.compiler_options(config).get('xla_cpu_prefer_vector_width')
  return (dataclasses.asdict(ops.resolve(config))
          | {'cpu_vector_width': width, 'allocator': allocator.current()}
          | pointwise_fusion(params))


def match_width(config, target_macs: int, tol: float = 0.02) -> float:
  """The `model.width` at which `config` costs `target_macs` per image.

  Bisection on the accounting (shapes only). Widths are rounded to whole
  channels, so MACs are a step function of the multiplier; the answer is
  rounded to 4 decimals and checked to be within `tol`.
  """
  from models import build_model  # Local: keeps this module model-agnostic.
  config = config.copy_and_resolve_references()

  def macs(width: float) -> int:
    config.model.width = width
    return account(build_model(config.model), input_shape(config)).macs

  error = lambda width: macs(width) / target_macs - 1
  lo, hi = 1e-3, 1.0
  while error(hi) < 0:
    hi *= 2
  best = hi
  for _ in range(30):
    mid = round((lo + hi) / 2, 4)
    err = error(mid)
    if abs(err) < abs(error(best)):
      best = mid
    if abs(err) <= tol / 2 or hi - lo < 1e-4:
      break
    lo, hi = (mid, hi) if err < 0 else (lo, mid)
  if abs(error(best)) > tol:
    raise ValueError(f'No width within {tol:.0%} of {target_macs:,} MACs '
                     f'(closest: {best}, off by {error(best):+.1%}).')
  return best
