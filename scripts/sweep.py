"""Runs every run of a sweep file, at one or more seeds, each as its own
train.py process.

  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py:size=cpu \
      --workdir=runs/nvr [--seeds=3] [--parallel=2] [--dry_run] \
      [--rerun_stale] [--config.key=value ...]

--config.* flags apply to every run (e.g. the data source), after the run's
own overrides. Before anything launches, the config of every run directory is
built in-process exactly as train.py will build it, so a mistyped key or a
value of the wrong type stops the whole sweep with an error naming the flag.

Seeds: every run trains at --seeds=N seeds (default: the sweep file's SEEDS,
else 1). With N=1, run `reduced` trains in DIR/reduced at its config's seed.
With N>1 it trains in DIR/reduced-seed<s> for s = seed .. seed+N-1, where
seed is its config's after the --config.* flags (--config.seed=5 --seeds=3:
reduced-seed5, reduced-seed6, reduced-seed7). config.seed decides the
initialisation, the data order and the augmentation.

DIR/sweep.json (rundir.SWEEP) records the sweep before anything launches: the
sweep file, seeds, its BASELINE run (the one comparisons are made against),
the --config.* flags, and each run directory's run and seed.

Run directories with a summary.json of status "ok" are skipped; interrupted
ones resume from their checkpoints. One that fails or diverges is recorded
(DIR/<dir>/summary.json, DIR/<dir>/train.log) and the others go on.

Stale runs: a run directory whose config.json (whatever its status) differs
from the config the sweep would train now, in a key that changes training
(rundir.training_changes: not logging, checkpointing or ops keys), is stale.
It is not launched; the final table shows its changed keys and the sweep
exits non-zero. --rerun_stale moves each stale directory aside, to
<dir>.stale-<YYYYmmdd-HHMMSS> (nothing is deleted), and trains it afresh.

--parallel=N runs N at once, each pinned to its own share of the cores.
--dry_run writes nothing: it prints one train.py command per run and seed,
for a job array or scheduler, leaving out stale ones, which it lists on
stderr (exiting non-zero, as the sweep would).
"""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import queue
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import rundir  # noqa: E402
from configs.common import load_module  # noqa: E402
from configs.sweeps.common import Run  # noqa: E402

# allow_override: tests import this module into the process that imports
# train.py, which defines --workdir too.
flags.DEFINE_string('sweep', None, 'Sweep file[:args].', allow_override=True)
flags.DEFINE_string('workdir', None, 'Directory holding one folder per run '
                    'and seed.', allow_override=True)
flags.DEFINE_integer('seeds', None, "Seeds per run (default: the sweep "
                     "file's SEEDS, else 1).", lower_bound=1,
                     allow_override=True)
flags.DEFINE_integer('parallel', 1, 'Runs at once (at most the core count).',
                     allow_override=True)
flags.DEFINE_bool('dry_run', False, 'Print the train.py commands and exit.',
                  allow_override=True)
flags.DEFINE_bool('rerun_stale', False, 'Move stale run directories aside '
                  '(<dir>.stale-<time>) and train them afresh.',
                  allow_override=True)
FLAGS = flags.FLAGS
CONFIG_OVERRIDES: list[str] = []  # The --config.* flags, for every run.
SEED_FLAG = '--config.seed='
# What a config that does not parse raises (config_flags wraps some of these).
PARSE_ERRORS = (flags.Error, AttributeError, KeyError, OSError, TypeError,
                ValueError)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep file's runs, and its module-level SEEDS and BASELINE."""
  runs: list[Run]
  seeds: int
  baseline: str | None


@dataclasses.dataclass(frozen=True)
class Job:
  """One run directory: a run of the sweep at one seed."""
  name: str          # The directory, under the sweep's workdir.
  run: str
  seed: int
  flags: list[str]   # train.py's --config flags, the config file's first.
  config: dict       # What train.py builds from them.


def split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates the --config.key=value flags, which go to every run."""
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  return [argv[0]] + [a for a in argv[1:] if a not in overrides], overrides


def load_sweep(spec: str) -> Sweep:
  """The sweep file[:args]'s runs, checked: names unique, SEEDS a count,
  BASELINE one of the runs."""
  path, _, arg = spec.partition(':')
  module = load_module(path)
  runs = module.get_sweep(arg or None)
  names = [r.name for r in runs]
  if not names or len(set(names)) != len(names):
    raise ValueError(f'Sweep {path} needs runs with distinct names: {names}.')
  seeds = getattr(module, 'SEEDS', 1)
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f'Sweep {path}: SEEDS = {seeds!r}; set it to a whole '
                     'number >= 1 (the seeds per run) or leave it out (1).')
  baseline = getattr(module, 'BASELINE', None)
  if baseline is not None and baseline not in names:
    raise ValueError(f'Sweep {path}: BASELINE = {baseline!r} is not one of '
                     f'its runs: {", ".join(names)}.')
  return Sweep(runs, seeds, baseline)


def run_flags(run: Run, overrides: list[str]) -> list[str]:
  """train.py's --config flags for a run: its config file, its own
  overrides, then the sweep-wide flags (the later flag of a key wins)."""
  def flag(key, value):
    value = value if isinstance(value, str) else json.dumps(value)
    return f'--config.{key}={value}'
  return ([f'--config={run.config}']
          + [flag(k, v) for k, v in run.overrides.items()] + list(overrides))


def parse_config(config_args: list[str]) -> dict:
  """The config train.py builds from these --config flags, parsed the way
  train.py parses them. A relative config file is the repository's, as
  train.py runs there."""
  path, sep, arg = config_args[0].removeprefix('--config=').partition(':')
  argv = ['sweep', f'--config={os.path.join(REPO, path)}{sep}{arg}',
          *config_args[1:]]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values, sys_argv=argv,
                                  lock_config=True)
  values(argv)
  return values.config.to_dict()  # Raises here where the file did not load.


def first_bad_flag(config_args: list[str]) -> str:
  """The flag that stops config_args from parsing: the last of the shortest
  prefix that fails."""
  for n in range(1, len(config_args) + 1):
    try:
      parse_config(config_args[:n])
    except PARSE_ERRORS:
      return config_args[n - 1]
  return config_args[-1]


def reason(error: BaseException) -> str:
  """The first and last lines of what went wrong (a config file's error
  comes with its traceback), unwrapped from config_flags' exceptions."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = (f'unknown key {error.args[0]}' if isinstance(error, KeyError)
          else str(error))
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return ' ... '.join(dict.fromkeys(lines[:1] + lines[-1:])) or repr(error)


def build_config(run: Run, config_args: list[str],
                 overrides: list[str]) -> dict:
  """parse_config, or an error that names the run and the flag to fix."""
  try:
    return parse_config(config_args)
  except PARSE_ERRORS as e:
    bad = first_bad_flag(config_args)
    where = ('a sweep-wide flag, given to every run' if bad in overrides
             else 'from the sweep file')
    raise ValueError(
        f'Run {run.name!r}: {bad} ({where}) does not parse; fix or drop it '
        f'(nothing was launched): {reason(e)}') from None


def seeded(run: Run, config_args: list[str], config: dict,
           seeds: int) -> list[Job]:
  """The run at seeds config['seed'] .. + seeds - 1, one directory each,
  named by its seed; each config is `config` with that seed."""
  jobs = []
  for seed in range(config['seed'], config['seed'] + seeds):
    args = ([a for a in config_args if not a.startswith(SEED_FLAG)]
            + [f'{SEED_FLAG}{seed}'])
    jobs.append(Job(f'{run.name}-seed{seed}', run.name, seed, args,
                    {**config, 'seed': seed}))
  return jobs


def expand(runs: list[Run], seeds: int, overrides: list[str]) -> list[Job]:
  """Every run directory of the sweep, its config built (and so checked)
  before anything launches: one per run with seeds=1, else one per seed."""
  jobs = []
  for run in runs:
    config_args = run_flags(run, overrides)
    config = build_config(run, config_args, overrides)
    if seeds == 1:
      jobs.append(Job(run.name, run.name, config['seed'], config_args, config))
    else:
      jobs += seeded(run, config_args, config, seeds)
  return jobs


def command(job: Job, workdir: str) -> list[str]:
  return [sys.executable, 'train.py', job.flags[0],
          f'--workdir={os.path.join(workdir, job.name)}', *job.flags[1:]]


def move_aside(run_dir: str) -> str:
  """Renames run_dir to run_dir.stale-<YYYYmmdd-HHMMSS>; returns the name."""
  moved = f'{run_dir}{rundir.STALE_SUFFIX}{time.strftime("%Y%m%d-%H%M%S")}'
  os.rename(run_dir, moved)
  logging.warning('Stale %s moved to %s.', run_dir, moved)
  return moved


def sweep_record(spec: str, sweep: Sweep, seeds: int, overrides: list[str],
                 jobs: list[Job]) -> dict:
  """sweep.json's content (format: rundir's docstring)."""
  return {'sweep': spec, 'seeds': seeds, 'baseline': sweep.baseline,
          'overrides': list(overrides),
          'runs': {j.name: {'run': j.run, 'seed': j.seed} for j in jobs}}


def launch(name: str, cmd: list[str], run_dir: str, cores: list[int]) -> str:
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, 'train.log')
  logging.info('[%s] started on cores %s; log: %s', name, cores, log_path)
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
  logging.info('[%s] %s', name, result)
  return result


def run_jobs(jobs: list[Job], workdir: str, parallel: int) -> dict[str, str]:
  """Trains the jobs not finished yet, `parallel` at once on disjoint cores;
  {directory name: status}."""
  cores = sorted(os.sched_getaffinity(0))
  at_once = max(1, min(parallel, len(cores)))
  if at_once < parallel:
    logging.warning('--parallel=%d > %d cores: running %d at once.',
                    parallel, len(cores), at_once)
  slots = queue.Queue()  # Disjoint core sets; one per concurrent run.
  for i in range(at_once):
    slots.put(cores[i::at_once])

  def run_in_slot(job: Job) -> str:
    run_dir = os.path.join(workdir, job.name)
    if rundir.read_status(run_dir) == 'ok':
      logging.info('[%s] already finished: skipped.', job.name)
      return 'ok'
    slot = slots.get()
    try:
      return launch(job.name, command(job, workdir), run_dir, slot)
    finally:
      slots.put(slot)

  with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
    return dict(zip([j.name for j in jobs], pool.map(run_in_slot, jobs)))


def stale_message(stale: dict[str, list[str]], total: int) -> str:
  return (f'{len(stale)} of {total} runs are stale, their config.json '
          f'differing from what this sweep trains: {", ".join(stale)}. Rerun '
          'with --rerun_stale to move them aside (<dir>.stale-<time>) and '
          'train them afresh, or give the sweep the flags they were trained '
          'with.')


def unfinished(results: dict[str, str],
               stale: dict[str, list[str]]) -> list[str]:
  """What the sweep exits with: the runs that failed, the stale ones."""
  failed = [n for n, s in results.items() if s not in ('ok', 'stale')]
  problems = []
  if failed:
    problems.append(f'{len(failed)} of {len(results)} runs did not finish: '
                    f'{", ".join(failed)} (see their train.log).')
  if stale:
    problems.append(stale_message(stale, len(results)))
  return problems


def print_table(jobs: list[Job], results: dict[str, str],
                stale: dict[str, list[str]]) -> None:
  width = max(len(j.name) for j in jobs)
  for job in jobs:
    changes = stale.get(job.name)
    print(f'{job.name:{width}}  {results[job.name]}'
          + (f'  ({"; ".join(changes)})' if changes else ''))


def print_dry_run(jobs: list[Job], workdir: str,
                  stale: dict[str, list[str]]) -> None:
  """Prints the commands of the runs that would launch; lists stale ones."""
  for job in jobs:
    if job.name not in stale:
      print(shlex.join(['python'] + command(job, workdir)[1:]))
  for name, changes in stale.items():
    print(f'stale, left out: {name} ({"; ".join(changes)})', file=sys.stderr)
  if stale:
    raise SystemExit(stale_message(stale, len(jobs)))


def run_sweep(spec: str, workdir: str, overrides: list[str], *,
              seeds: int | None = None, parallel: int = 1,
              dry_run: bool = False, rerun_stale: bool = False) -> None:
  """The whole sweep; SystemExit naming the runs that did not finish or are
  stale. Every config is built, and so checked, before anything is written."""
  sweep = load_sweep(spec)
  seeds = seeds or sweep.seeds
  jobs = expand(sweep.runs, seeds, overrides)
  workdir = os.path.abspath(workdir)  # train.py runs in REPO.
  stale = {j.name: changes for j in jobs
           if (changes := rundir.saved_training_changes(
               os.path.join(workdir, j.name), j.config))}
  if dry_run:
    print_dry_run(jobs, workdir, stale)
    return
  if rerun_stale:
    for name in stale:
      move_aside(os.path.join(workdir, name))
    stale = {}
  os.makedirs(workdir, exist_ok=True)
  rundir.write_json_atomic(os.path.join(workdir, rundir.SWEEP),
                           sweep_record(spec, sweep, seeds, overrides, jobs))
  results = run_jobs([j for j in jobs if j.name not in stale], workdir,
                     parallel) | {name: 'stale' for name in stale}
  print_table(jobs, results, stale)
  if problems := unfinished(results, stale):
    raise SystemExit('\n'.join(problems))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    run_sweep(FLAGS.sweep, FLAGS.workdir, CONFIG_OVERRIDES, seeds=FLAGS.seeds,
              parallel=FLAGS.parallel, dry_run=FLAGS.dry_run,
              rerun_stale=FLAGS.rerun_stale)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None


def _parse(argv):
  argv, overrides = split_config_overrides(argv)
  CONFIG_OVERRIDES.extend(overrides)
  return app.parse_flags_with_usage(argv)


if __name__ == '__main__':
  flags.mark_flags_as_required(['sweep', 'workdir'])
  app.run(main, flags_parser=_parse)
