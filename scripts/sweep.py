"""Runs every run of a sweep file, each as its own train.py process.

  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py:size=cpu \
      --workdir=runs/nvr [--parallel=2] [--dry_run] [--config.key=value ...]

Each run gets DIR/<run name>. Runs with a summary.json of status "ok" are
skipped; interrupted ones resume from their checkpoints. A run that fails
or diverges is recorded (DIR/<run>/summary.json, DIR/<run>/train.log) and the
others go on. --config.* flags apply to every run (e.g. the data source).
--parallel=N runs N at once, each pinned to its own share of the cores.
--dry_run prints one train.py command per run, for a job array or scheduler.
"""

import concurrent.futures
import json
import os
import pathlib
import queue
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags, logging  # noqa: E402

import rundir  # noqa: E402
from configs.common import load_config, load_module  # noqa: E402
from configs.sweeps.common import Run  # noqa: E402

flags.DEFINE_string('sweep', None, 'Sweep file[:args].')
flags.DEFINE_string('workdir', None, 'Directory holding one folder per run.')
flags.DEFINE_integer('parallel', 1, 'Runs at once (at most the core count).')
flags.DEFINE_bool('dry_run', False, 'Print the train.py commands and exit.')
FLAGS = flags.FLAGS
CONFIG_OVERRIDES: list[str] = []  # The --config.* flags, for every run.


def split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates the --config.key=value flags, which go to every run."""
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  return [argv[0]] + [a for a in argv[1:] if a not in overrides], overrides


def load_sweep(spec: str) -> list[Run]:
  path, _, arg = spec.partition(':')
  runs = load_module(path).get_sweep(arg or None)
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f'Sweep {path} has duplicate run names: {names}.')
  return runs


def command(run: Run, workdir: str, extra: list[str]) -> list[str]:
  def flag(key, value):
    value = value if isinstance(value, str) else json.dumps(value)
    return f'--config.{key}={value}'
  return ([sys.executable, 'train.py', f'--config={run.config}',
           f'--workdir={os.path.join(workdir, run.name)}']
          + [flag(k, v) for k, v in run.overrides.items()] + extra)


def check_runs(runs: list[Run]) -> None:
  """Every run's config loads and knows its keys, before anything launches."""
  for run in runs:
    config = load_config(run.config)
    for key in run.overrides:
      parent, _, leaf = key.rpartition('.')
      node = config[parent] if parent else config
      if leaf not in node:
        raise ValueError(f'Run {run.name!r}: unknown config key {key!r}.')


def launch(run: Run, cmd: list[str], run_dir: str, cores: list[int]) -> str:
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, 'train.log')
  logging.info('[%s] started on cores %s; log: %s', run.name, cores, log_path)
  with open(log_path, 'a') as log:
    proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
  result = rundir.read_status(run_dir)
  if proc.returncode != 0 and result not in ('diverged', 'interrupted'):
    with open(log_path) as f:
      tail = f.read()[-2000:]
    result = 'failed'
    rundir.write_json_atomic(os.path.join(run_dir, rundir.SUMMARY), {
        'status': result, 'returncode': proc.returncode,
        'error': tail.strip().splitlines()[-1] if tail.strip() else '',
        'command': shlex.join(cmd)})
  logging.info('[%s] %s', run.name, result)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runs = load_sweep(FLAGS.sweep)
  cmds = {r.name: command(r, FLAGS.workdir, CONFIG_OVERRIDES) for r in runs}
  if FLAGS.dry_run:
    for r in runs:
      print(shlex.join(['python'] + cmds[r.name][1:]))
    return
  check_runs(runs)
  cores = sorted(os.sched_getaffinity(0))
  parallel = max(1, min(FLAGS.parallel, len(cores)))
  if parallel < FLAGS.parallel:
    logging.warning('--parallel=%d > %d cores: running %d at once.',
                    FLAGS.parallel, len(cores), parallel)
  slots = queue.Queue()  # Disjoint core sets; one per concurrent run.
  for i in range(parallel):
    slots.put(cores[i::parallel])

  def run_in_slot(run: Run) -> str:
    run_dir = os.path.join(FLAGS.workdir, run.name)
    if rundir.read_status(run_dir) == 'ok':
      logging.info('[%s] already finished: skipped.', run.name)
      return 'ok'
    cores = slots.get()
    try:
      return launch(run, cmds[run.name], run_dir, cores)
    finally:
      slots.put(cores)

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    results = dict(zip(cmds, pool.map(run_in_slot, runs)))
  width = max(map(len, results))
  print('\n'.join(f'{name:{width}}  {result}' for name, result in results.items()))
  failed = [n for n, s in results.items() if s != 'ok']
  if failed:
    raise SystemExit(f'{len(failed)} of {len(runs)} runs did not finish: '
                     f'{", ".join(failed)} (see their train.log).')


def _parse(argv):
  argv, overrides = split_config_overrides(argv)
  CONFIG_OVERRIDES.extend(overrides)
  return FLAGS(argv)


if __name__ == '__main__':
  flags.mark_flags_as_required(['sweep', 'workdir'])
  app.run(main, flags_parser=_parse)
