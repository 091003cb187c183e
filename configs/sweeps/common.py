"""Helpers for sweep files: `get_sweep(arg) -> list[Run]`.

A run is a name, a config (file[:args]) and overrides of its keys:

  Run('naive', 'configs/cifar_cpu.py:module=naive', {'num_epochs': 3.0})

`product` and `zip_` build the override dicts of a grid.

A sweep file may also set, at module level:

  SEEDS = 3           # seeds per run when --seeds is not given (default 1):
                      # run `naive` then trains in naive-seed<s> for s =
                      # config.seed .. config.seed + 2.
  BASELINE = 'naive'  # the run the others are compared against (a name
                      # from get_sweep; default None: the report's choice).

scripts/sweep.py checks both and records them in the sweep's sweep.json.
"""

import dataclasses
import itertools
from typing import Any


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  config: str                      # e.g. 'configs/googlenet.py:stem=cifar'.
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def product(**axes) -> list[dict[str, Any]]:
  """product(a=[1, 2], b=['x']) -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zip_(**axes) -> list[dict[str, Any]]:
  """zip_(a=[1, 2], b=['x', 'y']) -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) != 1:
    raise ValueError(f'zip_ axes differ in length: { {k: len(v) for k, v in axes.items()} }')
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


def name_of(overrides: dict[str, Any]) -> str:
  """{'model.reduce_act': 'linear'} -> 'reduce_act=linear'."""
  return ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items())


# The network each sweep varies: `cpu` (the small Inception net) trains in
# minutes on 2 cores, `fast` is the fast recipe (configs/cifar_fast.py:
# airbench's method around Inception modules), `fast_small` the previous one
# (the small net), `full` the paper-size GoogLeNet on CIFAR-10, for
# accelerators.
SIZES = {
    'cpu': 'configs/cifar_cpu.py',
    'fast': 'configs/cifar_fast.py',
    'fast_small': 'configs/cifar_fast_small.py',
    'full': 'configs/googlenet.py:stem=cifar',
}
SMALL_NET_SIZES = ('cpu', 'fast_small')  # The small Inception net of Zhang et al.


def matched_width(naive: str, reduced: str) -> float:
  """The `model.width` at which the `naive` config spec costs the `reduced`
  one's MACs per image (accounting.match_width: bisection on shapes)."""
  import accounting  # Local: loading a sweep file stays light.
  from configs.common import load_config
  target = accounting.summarize(load_config(reduced),
                                with_xla=False)['total']['macs']
  return accounting.match_width(load_config(naive), target)


def base_config(size: str, module: str, **args) -> str:
  """The config spec of `size` with `module` and any further config args."""
  if size not in SIZES:
    raise ValueError(f'size={size!r}; choose one of {sorted(SIZES)}.')
  path = SIZES[size]
  extra = ''.join(f',{k}={v}' for k, v in args.items())
  return f'{path}{"," if ":" in path else ":"}module={module}{extra}'
