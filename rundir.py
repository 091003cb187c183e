"""What a run directory holds: the files train.py writes and the tools read.

  DIR/config.json        the run's config (load_run_config reads it back).
  DIR/data_stats.json    DATA_STATS: the train split's per-channel mean and
                         std, {'mean': [r, g, b], 'std': [r, g, b]}, so that
                         eval.py normalises alike (read_data_stats).
  DIR/summary.json       SUMMARY_KEYS: what was trained, its costs, accuracy
                         and 'status' ('ok', 'interrupted', 'diverged'; the
                         sweep tool writes 'failed' for a run that crashed).
  DIR/metrics.jsonl      one JSON object per logged step.
  DIR/eval_<split>.json  eval.py's result on a split (eval_file(split)).
  DIR/train.lock         LOCK, while a training holds the workdir
                         (workdir_lock): who holds it, since when. One that a
                         killed training left behind holds nothing.

A sweep directory (scripts/sweep.py) holds one run directory per run and seed,
and SWEEP:

  SWEEP_DIR/sweep.json   {'sweep': the sweep file[:args], 'seeds': the
                          most seeds of any run, 'baseline': the run name
                          comparisons are made against (None: the report's
                          default), 'overrides': the latest launch's
                          sweep-wide --config.* flags,
                          'runs': {run directory name: {'run': run name,
                                   'seed': seed, 'overrides': the flags it
                                   was launched with}}}
                         What was launched into SWEEP_DIR: written by a
                         sweep that launches something, its runs merged
                         into the earlier ones (a record never shrinks).

train.py writes these; eval.py, scripts/sweep.py and scripts/report.py read
them. Kept free of JAX and plotting so the sweep and report tools start fast.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Callable, Iterator, TextIO

from absl import logging
import ml_collections

CONFIG = 'config.json'
SUMMARY = 'summary.json'
METRICS = 'metrics.jsonl'
EVAL_PREFIX = 'eval_'
SWEEP = 'sweep.json'
DATA_STATS = 'data_stats.json'  # The train split's per-channel mean, std.
# Where runs saved before DATA_STATS kept the data stats: a key of config.json.
LEGACY_STATS_KEY = 'data_stats'
LOCK = 'train.lock'  # Held by the training that writes the run (workdir_lock).
# train.py's exit status when another process holds the workdir: the run is
# not this process's to record (a sweep must not mark it failed).
IN_USE_EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: try again later.

# summary.json's keys in the order train.py writes them ('test_accuracy' only
# where there is a test split; 'error' only where scripts/sweep.py recorded a
# crash; 'schedule_warning' None unless the warmup does not end before the
# last step: optim.schedule_warning; 'implementation' how the network was
# computed: accounting.implementation). The report's CSV columns follow this
# order.
SUMMARY_KEYS = (
    'status', 'model', 'module', 'workdir', 'params', 'macs_per_image',
    'xla_flops_per_image', 'train_step_flops', 'train_images_per_s',
    'compile_seconds', 'train_seconds', 'wall_seconds', 'time_to_target_s',
    'steps', 'epochs', 'batch_size',
    'val_split', 'val_accuracy', 'best_val_accuracy', 'test_accuracy',
    'device_kind', 'device_count', 'process_count', 'jax_version',
    'schedule_warning', 'implementation', 'error')

_SCALARS = (int, float, str, bool)


def eval_file(split: str) -> str:
  """eval.py's result file name: the split's name, and its percent slice as
  _<start>-<end> (an open end is 0 or 100), so that two slices never share
  a file: 'test' -> 'eval_test.json', 'train[90%:]' ->
  'eval_train_90-100.json', 'train[:90%]' -> 'eval_train_0-90.json'."""
  name, bracket, bounds = split.replace(' ', '').partition('[')
  if bracket:
    start, _, end = bounds.removesuffix(']').partition(':')
    name += f'_{start.rstrip("%") or 0}-{end.rstrip("%") or 100}'
  return f'{EVAL_PREFIX}{name}.json'


def flatten(tree: dict, prefix: str = '', stringify: bool = False) -> dict:
  """{'data': {'source': x}} -> {'data.source': x}.

  An empty dict stays a leaf. stringify: leaves other than int, float, str
  and bool become their str() (TensorBoard's hparams take only scalars).
  """
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out |= flatten(value, name + '.', stringify)
    elif stringify and not isinstance(value, _SCALARS):
      out[name] = str(value)
    else:
      out[name] = value
  return out


def read_json(path):
  with open(path) as f:
    return json.load(f)


def write_atomic(path, write: Callable[[TextIO], None], **open_args) -> None:
  """Calls write(file) on path.tmp, then renames it over `path`: readers
  never see half a file, and a run killed mid-write leaves the old one."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w', **open_args) as f:
    write(f)
  os.replace(tmp, path)


def write_json_atomic(path, obj) -> None:
  """`obj` as indented JSON; what JSON cannot encode (a NumPy scalar) as str."""
  write_atomic(path, lambda f: json.dump(obj, f, indent=1, default=str))


def read_sweep(directory) -> dict | None:
  """DIR/SWEEP, checked; None where there is none. A ValueError of one line,
  saying what to do, where it does not parse or has no 'runs'."""
  path = os.path.join(directory, SWEEP)
  if not os.path.exists(path):
    return None
  fix = 'fix it, or move it away (its runs are then grouped by config alone).'
  try:
    sweep = read_json(path)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: {e}; {fix}') from None
  runs = sweep.get('runs') if isinstance(sweep, dict) else None
  if not isinstance(runs, dict) or not all(
      isinstance(e, dict) and isinstance(e.get('run'), str)
      for e in runs.values()):
    raise ValueError(f"{path} has no 'runs': {{run directory: {{'run': "
                     f"name, 'seed': k}}}} (see rundir.py); {fix}")
  return sweep


def read_status(run_dir) -> str | None:
  """summary.json's status; None where there is no readable summary."""
  try:
    summary = read_json(os.path.join(run_dir, SUMMARY))
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  return summary.get('status') if isinstance(summary, dict) else None


class WorkdirInUseError(RuntimeError):
  """Another process holds the workdir (workdir_lock)."""


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Holds DIR/LOCK for the `with` block: one training writes a workdir.

  Raises WorkdirInUseError, one line naming the holder (host, pid, start
  time), where another process holds it: two sweeps started by mistake, or
  a requeued job that overlaps its predecessor, would otherwise both write
  the same checkpoints. fcntl.flock: the kernel drops the lock when its
  holder exits, however it dies (SIGKILL, OOM), so a lock left behind never
  blocks the next run; it works on local disks and NFSv4. Creates the
  workdir; the lock file is removed on release.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  fd = _lock_file(path, workdir)
  if fd is None:
    yield
    return
  try:
    holder = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + '\n').encode(), 0)
    yield
  finally:
    # Removed while still locked: a process that opened it meanwhile finds
    # another file at `path` once it gets the lock, and tries again.
    with contextlib.suppress(OSError):
      os.unlink(path)
    os.close(fd)


def _lock_file(path: str, workdir: str) -> int | None:
  """An open, flock-ed descriptor of `path`; None (with a warning) where the
  file system has no flock."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode(errors='replace')
      os.close(fd)
      raise WorkdirInUseError(
          f'{workdir} is in use by another training ({_describe(holder)}); '
          'nothing was changed. Wait for it to end or stop it, or use another '
          '--workdir.') from None
    except OSError as e:  # E.g. ENOLCK: NFSv3 mounted without locks.
      os.close(fd)
      logging.warning('Cannot lock %s (%s): nothing stops another training '
                      'from writing this workdir at the same time.', path, e)
      return None
    try:
      if os.path.samestat(os.fstat(fd), os.stat(path)):
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)  # Its holder removed it before we got the lock: retry.


def _describe(holder: str) -> str:
  """The lock file's JSON as 'pid 12 on host h, started 2025-01-02 03:04:05'."""
  try:
    h = json.loads(holder)
    return f'pid {h["pid"]} on host {h["host"]}, started {h["started"]}'
  except (ValueError, TypeError, KeyError):
    return 'a process that is just starting'


# Keys that do not change what a run trains: how often it logs, evaluates and
# checkpoints, when this process stops, where the data lives and how many
# workers decode it, and how the ops are computed (same math: see ops/).
# Everything else in a config is part of the run's identity: the one rule
# (training_changes) by which a workdir's config.json, its checkpoints
# (checkpoints.recorded_changes) and a sweep's stale runs are judged.
BOOKKEEPING = (
    'log_every_steps', 'log_every_epochs', 'eval_every_steps',
    'eval_every_epochs', 'eval_batch_size', 'target_accuracy',
    'checkpoint_every_steps', 'checkpoint_every_epochs', 'keep_checkpoints',
    'stop_after_steps',
    'distributed', 'data.data_dir', 'data.cache_dir', 'data.num_workers',
    'ops.*')
# data.source names the data: 'tfds' and 'synthetic' are data sets, a path is
# a copy of one, free to move. Keys that only one source reads count only
# where a run uses that source (so a key added for one source does not make
# every saved run of another differ).
SOURCE_KEYS = {'tfds': ('data.dataset',),
               'synthetic': ('data.synthetic_size', 'data.synthetic_image_size',
                             'data.synthetic_seed')}
BUILTIN_SOURCES = tuple(SOURCE_KEYS)
STALE_SUFFIX = '.stale-'  # scripts/sweep.py --rerun_stale: <dir>.stale-<time>.
ABSENT = '<absent>'  # training_changes' value of a key a config lacks.


def _is_bookkeeping(key: str) -> bool:
  return any(key == b or (b.endswith('.*') and key.startswith(b[:-1]))
             for b in BOOKKEEPING)


def _unused_source_key(key: str, *configs: dict) -> bool:
  sources = {c.get('data.source') for c in configs}
  return any(key in keys and source not in sources
             for source, keys in SOURCE_KEYS.items())


def training_changes(saved: dict, current: dict) -> list[str]:
  """The keys whose values differ between two configs and change training,
  as 'key: saved -> current' lines ('<absent>' for a missing key)."""
  norm = lambda c: flatten(json.loads(json.dumps(c, default=str)))
  old, new = norm(saved), norm(current)
  lines = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, ABSENT), new.get(key, ABSENT)
    if json.dumps(a) == json.dumps(b) or _is_bookkeeping(key):  # NaN == NaN.
      continue
    if key == 'data.source' and not {a, b} & set(BUILTIN_SOURCES):
      continue  # Two paths: the same data, moved.
    if _unused_source_key(key, old, new):
      continue
    lines.append(f'{key}: {a!r} -> {b!r}')
  return lines


def changes_error(what: str, changes: list[str], fix: str) -> str:
  """The error of a run directory (`what`: '<dir> holds ...') whose saved
  config differs from the current one by training_changes' lines."""
  return (f'{what} a run trained with other values; these keys differ '
          '(saved -> now):\n' + ''.join(f'  {line}\n' for line in changes)
          + fix)


def saved_training_changes(workdir: str, current: dict) -> list[str]:
  """training_changes from the workdir's config.json to `current`; [] where
  the workdir has none."""
  if not os.path.exists(os.path.join(workdir, CONFIG)):
    return []
  return training_changes(load_run_config(workdir).to_dict(), current)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's saved config, as today's code reads it (saved_config)."""
  return ml_collections.ConfigDict(saved_config(_read_config_json(workdir)))


def _read_config_json(workdir: str) -> dict:
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise ValueError(f'{path} not found: is {workdir!r} a train.py workdir?')
  try:
    return read_json(path)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}): restore it, or move '
                     f'{workdir!r} aside and start afresh.') from None


def saved_config(saved: dict) -> dict:
  """A config as an older run saved it, as today's code reads it: op choices
  under `ops`, each ADDED_KEYS key it lacks set, and the data stats that
  config.json once carried (LEGACY_STATS_KEY) left out: they are not config.
  Changes `saved` in place; returns it."""
  saved.pop(LEGACY_STATS_KEY, None)
  return with_added_keys(_moved_to_ops(saved))


def write_data_stats(workdir: str, stats) -> None:
  """DIR/DATA_STATS from stats = (mean, std), each per channel."""
  mean, std = stats
  write_json_atomic(os.path.join(workdir, DATA_STATS),
                    {'mean': [float(v) for v in mean],
                     'std': [float(v) for v in std]})


def read_data_stats(workdir: str) -> tuple[tuple[float, ...], ...]:
  """(mean, std) of the run's train split, per channel, from DIR/DATA_STATS;
  for a run saved before that file, from its config.json."""
  path = os.path.join(workdir, DATA_STATS)
  if os.path.exists(path):
    stats = read_json(path)
    mean, std = stats['mean'], stats['std']
  else:
    legacy = _read_config_json(workdir).get(LEGACY_STATS_KEY)
    if legacy is None:
      raise ValueError(
          f'{workdir} has no {DATA_STATS} (nor data stats in its {CONFIG}): '
          'rerun its train.py command to write it (a finished run takes no '
          'step).')
    mean, std = legacy
  return tuple(map(float, mean)), tuple(map(float, std))


# Keys added after runs were saved, with the value that trains as those runs
# did: an older config.json lacking one means this value. Nested keys are
# dotted ('model.reduce_norm'). A knob added with a default that trains as
# before, and listed here, keeps every earlier run valid and resumable (not
# stale, its checkpoints compatible).
ADDED_KEYS = {'model.act': 'relu', 'model.norm_scale': True, 'data.alternate_flip': False,
              'bias_lr_scale': 1.0, 'lr_start_factor': 0.0,
              'lr_end_factor': 0.0, 'lookahead_every': 0,
              'lookahead_decay': 0.95**5, 'whiten': False,
              'whiten_bias_epochs': 3.0, 'eval_translate': 0,
              'eval_tta_final_only': False,
              'ema_decay': 0.0, 'eval_flip': False, 'log_every_epochs': 0.0,
              'eval_every_epochs': 0.0, 'checkpoint_every_epochs': 0.0,
              'muon_lr': 0.0, 'muon_momentum': 0.6, 'muon_ns_steps': 3}


# Fields one network gained since its runs were saved, by model.name: set
# only in that network's configs (another network has no such field).
ADDED_MODEL_KEYS = {'air_inception': {'stem_pool_first': False}}


def with_added_keys(config: dict) -> dict:
  """`config` (a saved config.json, or the model block of a checkpoint's
  metadata, under 'model') with each ADDED_KEYS key, and each of its
  network's ADDED_MODEL_KEYS, it lacks set to the value that trains as it
  did. Changes `config` in place; returns it."""
  for key, value in ADDED_KEYS.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node.setdefault(parent, {})
    node.setdefault(leaf, value)
  model = config.get('model', {})
  for key, value in ADDED_MODEL_KEYS.get(model.get('name'), {}).items():
    model.setdefault(key, value)
  return config


# Keys of configs saved before the op choices left `model` for `ops`.
_MOVED = {('model', 'conv_impl'): 'conv', ('model', 'pool_impl'): 'pool',
          ('model', 'norm_impl'): 'norm', ('cpu_vector_width',): 'cpu_vector_width'}


def _moved_to_ops(config: dict) -> dict:
  """An older run's config with its op choices under `ops`."""
  for path, key in _MOVED.items():
    *parents, leaf = path
    node = config
    for parent in parents:
      node = node.get(parent, {})
    if leaf in node:
      config.setdefault('ops', {})[key] = node.pop(leaf)
  return config
