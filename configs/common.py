"""Helpers for config files: the `file.py:key=value,...` argument, loading,
and the command line's `--config=file[:args] --config.key=value` flags, whose
mistakes (an unknown key, a value of the wrong type, a missing file) become
one line that says what to fix (parse_config_flags, parse_flags)."""

import difflib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags

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


def every_epochs(config: ml_collections.ConfigDict, **epochs: float) -> None:
  """Sets each cadence ('eval', 'checkpoint', 'log') given to every that
  many epochs, and unsets its count in steps (only one may be set)."""
  for cadence, every in epochs.items():
    config[f'{cadence}_every_epochs'] = every
    config[f'{cadence}_every_steps'] = 0


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


# --- Command-line flags ------------------------------------------------------

BASE_CONFIG = 'configs/base.py'  # Documents every key.


class ConfigFlagError(ValueError):
  """A --config flag that does not parse. The message is one line: the flag,
  what is wrong and how to fix it; `flag` is the offending argument (None
  where no one argument is to blame)."""

  def __init__(self, message: str, flag: str | None = None):
    super().__init__(message)
    self.flag = flag


def parse_config_flags(argv: Sequence[str],
                       name: str = 'config') -> ml_collections.ConfigDict:
  """The config that argv's `--config=file[:args]` and `--config.key=value`
  flags build, parsed as ml_collections' config flags parse them (the config
  locked: no new keys; relative paths from the current directory). Other
  flags are ignored; argv[0] is the program.

  Raises:
    ConfigFlagError: a missing or failing config file, an unknown key (the
      message lists the keys that exist), a value of the wrong type.
  """
  argv = list(argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(name, flag_values=values, sys_argv=argv,
                                  lock_config=True)
  try:
    values(argv, known_only=True)
    config = values[name].value
    if config is not None:
      config.keys()  # A file that failed to load raises here (on any use).
  except Exception as e:  # pylint: disable=broad-except
    raise _flag_error(argv, name, e) from None
  if config is None:
    raise ConfigFlagError(f'--{name} is missing: give a config file, e.g. '
                          f'--{name}=configs/test.py.')
  return config


def parse_flags(argv: list[str],
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """app.run's flags_parser for a tool without positional arguments: any
  flag mistake (--config's included, see parse_config_flags), or an argument
  that is not a flag, ends the program before main with one line on stderr,
  `error: <what is wrong and how to fix it>`, and exit status 2 (a usage
  error)."""
  try:
    if any(re.match(r'-{1,2}(no)?config([.=]|$)', a) for a in argv[1:]):
      parse_config_flags(argv)
    rest = flag_values(argv)
  except ConfigFlagError as e:
    message = str(e)
  except flags.Error as e:
    message = f'{_one_line(str(e))} (--helpshort lists the flags)'
  else:
    if len(rest) == 1:
      return rest
    message = (f'unexpected arguments {rest[1:]}: every option is a '
               '--flag=value (--helpshort lists them).')
  sys.stderr.write(f'error: {message}\n')
  sys.exit(2)


def unknown_key(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why the dotted `path` names no key of `config` (one line: the keys
  that exist, the closest match), or None if it does."""
  node, parents = config, []
  for key in path.split('.'):
    where = '.'.join(parents)
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      return (f'{where} is a value ({type(node).__name__}), not a group of '
              f'keys: set it as --config.{where}=...')
    if key not in node:
      keys = sorted(node.keys())
      close = difflib.get_close_matches(key, keys, n=1)
      hint = f' (did you mean {".".join(parents + close)}?)' if close else ''
      group = f'the keys of {where}' if where else 'the top-level keys'
      return (f'unknown config key {".".join(parents + [key])}{hint}; '
              f'{group} are: {", ".join(keys)} ({BASE_CONFIG} documents '
              'them).')
    node, parents = node[key], parents + [key]
  return None


def _override_pattern(name: str) -> re.Pattern:
  return re.compile(rf'-{{1,2}}(?:no)?{re.escape(name)}\.')  # config_flags'.


def _flag_error(argv: list[str], name: str,
                error: BaseException) -> ConfigFlagError:
  """The one-line ConfigFlagError for a failed parse of argv's config flags."""
  pattern = _override_pattern(name)
  overrides = [a for a in argv[1:] if pattern.match(a)]
  if overrides and not isinstance(error, (flags.Error, OSError)):
    try:  # An unknown key: the config without overrides tells which.
      config = parse_config_flags(
          [a for a in argv if not pattern.match(a)], name)
    except ConfigFlagError as e:
      return e
    for arg in overrides:
      path = arg.split('=', 1)[0].split('.', 1)[1]
      if (why := unknown_key(config, path)) is not None:
        return ConfigFlagError(f'{arg}: {why}', arg)
  text = str(error)
  if isinstance(error, OSError):  # The config file did not load.
    spec = _flag_arg(argv, f'--{name}')
    return ConfigFlagError(
        f'{spec}: cannot load the config file: {_one_line(text, last=True)} '
        f'(relative paths start from {os.getcwd()}).', spec)
  match = re.match(rf'flag (--{re.escape(name)}[\w.]*)=', text)
  return ConfigFlagError(_one_line(text), match and _flag_arg(argv, match[1]))


def _flag_arg(argv: list[str], flag: str) -> str | None:
  """The last argument that sets `flag` ('--config'): '--config=x' (also
  from '-config x')."""
  for i in reversed(range(1, len(argv))):
    name, eq, value = argv[i].lstrip('-').partition('=')
    if name == flag.lstrip('-') and argv[i].startswith('-'):
      if not eq and i + 1 < len(argv):
        value = argv[i + 1]
      return f'{flag}={value}'
  return None


def _one_line(text: str, last: bool = False) -> str:
  """A message's first and last lines (a config file's error comes with its
  traceback), or only its last."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if last:
    return lines[-1] if lines else text
  return ' ... '.join(dict.fromkeys(lines[:1] + lines[-1:])) or text
