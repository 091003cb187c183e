"""Helpers for config files: the `file.py:key=value,...` argument, loading."""

import importlib.util
import os
from typing import Any

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TRUE, _FALSE = ('true', '1', 'yes'), ('false', '0', 'no')


def _cast(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() not in _TRUE + _FALSE:
      raise ValueError(f'Config arg {key}={value!r} must be True or False.')
    return value.lower() in _TRUE
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(f'Config arg {key}={value!r} must be a '
                     f'{type(default).__name__}.') from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'k=v,k=v' into a ConfigDict; keys and types come from defaults.

  parse_arg('module=naive,width=0.5', module='reduced', width=1.0)
    -> {'module': 'naive', 'width': 0.5}
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config arg {key!r}; valid args: '
                       f'{", ".join(sorted(defaults))}.')
    out[key] = _cast(key, value, defaults[key])
  return ml_collections.ConfigDict(out)


def load_module(path: str):
  """Imports a config or sweep file by path (relative paths: repo root)."""
  full = path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)
  if not os.path.isfile(full):
    raise ValueError(f'File {path!r} not found (looked at {full}).')
  spec = importlib.util.spec_from_file_location(
      f'_loaded_{abs(hash(full))}', full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:k=v' -> that file's get_config('k=v'); without ':',
  get_config() (as ml_collections' config flags call it)."""
  path, _, arg = spec.partition(':')
  module = load_module(path)
  return module.get_config(arg) if arg else module.get_config()
