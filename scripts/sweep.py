"""Runs every run of a sweep file, at one or more seeds, each as its own
train.py process.

  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py:size=cpu \
      --workdir=runs/nvr [--seeds=3] [--parallel=2] [--dry_run] \
      [--rerun_stale] [--config.key=value ...]

--config.* flags apply to every run (e.g. the data source), after the run's
own overrides. Before anything launches (--dry_run too), the config of every
run directory is built in-process exactly as train.py will build it and put
through train.py's own checks (config_checks.check_values), so a mistyped
key, a value of the wrong type or a value that is not valid (norm='nonee')
stops the whole sweep with one line naming the run and the flag.

Seeds: every run trains at --seeds=N seeds (default: the sweep file's SEEDS,
else 1). With N=1, run `reduced` trains in DIR/reduced at its config's seed.
With N>1 it trains in DIR/reduced-seed<s> for s = seed .. seed+N-1, where
seed is its config's after the --config.* flags (--config.seed=5 --seeds=3:
reduced-seed5, reduced-seed6, reduced-seed7). config.seed decides the
initialisation, the data order and the augmentation.

DIR/sweep.json (rundir.SWEEP) records what the sweep launches, before it
launches: the sweep file, its BASELINE run (the one comparisons are made
against), and each run directory's run, seed and --config.* flags. It
grows: the runs of a later sweep into DIR (more --seeds) are merged in, and
a sweep that launches nothing (all finished, or all stale) leaves it as it
was.

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
Local runs share JAX's persistent compilation cache in DIR/.xla_cache/<host>
(unless JAX_COMPILATION_CACHE_DIR is set): a design's later seeds load its
compiled steps instead of compiling them again.
--dry_run writes nothing: it prints one train.py command per run and seed,
for a job array or scheduler, leaving out stale ones, which it lists on
stderr (exiting non-zero, as the sweep would).

Before any run launches, the data of each distinct data config among them
is checked once (input_pipeline.check_data: a TFDS data set is downloaded
and prepared, a local source must exist); a problem stops the sweep with
one line, nothing launched.

Slurm: --launcher=slurm submits each run (not finished, not queued or
running already) as its own Slurm job through submitit, and returns:

  python scripts/sweep.py --sweep=... --workdir=runs/nvr --launcher=slurm \
      [--partition=P] [--time_limit_min=240] [--cpus_per_task=N] \
      [--gpus_per_node=N] [--nodes=N] [--tasks_per_node=N] \
      [--sbatch=account=me --sbatch=qos=high ...]

A job near its time limit, or preempted, is signalled by Slurm: train.py
checkpoints, and the job requeues itself and resumes (scripts/launchers.py).
With --nodes * --tasks_per_node > 1 each task runs one JAX process
(train.py --distributed; jax.distributed finds its peers through Slurm's
environment). Each submission is recorded in DIR/<run>/job.json; submitit's
sbatch script and the job's own log go to DIR/<run>/slurm/. --dry_run
prints the #SBATCH lines and the command of each run.

  python scripts/sweep.py --status --workdir=DIR

prints each run's state, from its run directory and (for a queued or
running Slurm job) squeue, whatever launched it: pending, running, ok,
interrupted, diverged, failed (with its one-line error) or not-started
(unknown: a Slurm job's, with no squeue here); the steps done, the latest
val accuracy and the Slurm job id. A rerun of the sweep skips runs that are
ok, pending, running or unknown, and launches the others again (failed,
diverged and interrupted runs resume from their checkpoints).
"""

import allocator
if __name__ == '__main__':  # Before anything allocates (allocator.py).
  allocator.use_mimalloc()

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import queue
import shlex
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
XLA_CACHE = '.xla_cache'  # In the sweep's DIR: see run_env.

from absl import app, flags, logging

import rundir
from configs.common import (
    ConfigFlagError, load_module, parse_config_flags)
from configs.sweeps.common import Run
from scripts import launchers

flags.DEFINE_string('sweep', None, 'Sweep file[:args].')
# allow_override: eval.py defines --workdir too, and tests import both tools
# into one process.
flags.DEFINE_string('workdir', None, 'Directory holding one folder per run '
                    'and seed.', allow_override=True)
flags.DEFINE_integer('seeds', None, "Seeds per run (default: the sweep "
                     "file's SEEDS, else 1).", lower_bound=1)
flags.DEFINE_integer('parallel', 1, 'Runs at once (at most the core count).')
flags.DEFINE_bool('dry_run', False, 'Print the train.py commands and exit.')
flags.DEFINE_bool('rerun_stale', False, 'Move stale run directories aside '
                  '(<dir>.stale-<time>) and train them afresh.')
flags.DEFINE_bool('status', False, "Print each run's state (--workdir only) "
                  'and exit.')
flags.DEFINE_enum('launcher', 'local', launchers.LAUNCHERS, 'Where runs '
                  'train: here, or one Slurm job each (submitit).')
# The Slurm launcher's resources, for each run's job.
flags.DEFINE_string('partition', None, 'Slurm partition.')
flags.DEFINE_integer('time_limit_min', launchers.SlurmResources.time_limit_min,
                     "Each job's time limit, in minutes; a run that needs "
                     'longer is requeued from its checkpoint.', lower_bound=1)
flags.DEFINE_integer('cpus_per_task', None, 'CPUs per task.', lower_bound=1)
flags.DEFINE_integer('gpus_per_node', 0, 'GPUs per node.', lower_bound=0)
flags.DEFINE_integer('nodes', 1, 'Nodes per run.', lower_bound=1)
flags.DEFINE_integer('tasks_per_node', 1, 'Tasks (JAX processes) per node.',
                     lower_bound=1)
flags.DEFINE_multi_string('sbatch', [], 'More sbatch options, key=value or '
                          'key, one a flag: --sbatch=account=me '
                          '--sbatch=exclusive.')
SLURM_FLAGS = ('partition', 'time_limit_min', 'cpus_per_task',
               'gpus_per_node', 'nodes', 'tasks_per_node', 'sbatch')
FLAGS = flags.FLAGS
CONFIG_OVERRIDES: list[str] = []  # The --config.* flags, for every run.
SEED_FLAG = '--config.seed='


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
  if not os.path.isfile(os.path.join(REPO, path)):
    raise ValueError(f'Sweep file {path!r} not found; the sweep files in '
                     f'configs/sweeps/ are: {", ".join(sweep_files())}.')
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


def sweep_files() -> list[str]:
  """The repository's sweep files: those of configs/sweeps/ with a
  get_sweep."""
  folder = REPO / 'configs' / 'sweeps'
  return sorted(f'configs/sweeps/{p.name}' for p in folder.glob('*.py')
                if 'def get_sweep(' in p.read_text())


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
  train.py parses them (configs.common.parse_config_flags). A relative
  config file is the repository's, as train.py runs there."""
  path, sep, arg = config_args[0].removeprefix('--config=').partition(':')
  argv = ['sweep', f'--config={os.path.join(REPO, path)}{sep}{arg}',
          *config_args[1:]]
  return parse_config_flags(argv).to_dict()


def origin(flag: str, overrides: list[str]) -> str:
  """Where a run's --config flag comes from, for an error message."""
  return ('a sweep-wide flag, given to every run' if flag in overrides
          else 'from the sweep file')


def build_config(run: Run, config_args: list[str],
                 overrides: list[str]) -> dict:
  """parse_config, or an error that names the run and the flag to fix."""
  try:
    return parse_config(config_args)
  except ConfigFlagError as e:
    bad = e.flag if e.flag in config_args[1:] else config_args[0]
    message = str(e).removeprefix(f'{e.flag}: ')
    raise ValueError(
        f'Run {run.name!r}: {bad} ({origin(bad, overrides)}) does not parse; '
        f'fix or drop it (nothing was launched): {message}') from None


def blamed_flag(message: str, config_args: list[str]) -> str | None:
  """The last --config.key=value flag whose `leaf=value` the error message
  quotes ("norm='nonee' is not valid" blames --config.model.norm=nonee)."""
  for flag in reversed(config_args[1:]):
    key, _, value = flag.removeprefix('--config.').partition('=')
    leaf = key.rsplit('.', 1)[-1]
    if f'{leaf}={value!r}' in message or f'{leaf}={value}' in message:
      return flag
  return None


def check_values(jobs: list[Job], overrides: list[str]) -> None:
  """config_checks.check_values, the checks train.py makes before it loads
  data or compiles (keys and values: a choice that is none of the valid
  ones, a size the network cannot take), on every run's config: once per
  run, as its seeds differ in `seed` alone. A bad value stops the sweep
  with one line naming the run, the value and the flag that set it, before
  anything is written or launched. It starts no JAX backend here (this
  process would hold an accelerator while the runs train, and fork them
  from a threaded process): what depends on the host a run trains on (its
  device count, whether it can run an `ops` choice) the run checks as it
  starts."""
  import config_checks  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  checked = set()
  for job in jobs:
    if job.run in checked:
      continue
    checked.add(job.run)
    try:
      config_checks.check_values(ml_collections.ConfigDict(job.config))
    except ValueError as e:
      message = launchers.one_line(e)
      flag = blamed_flag(message, job.flags)
      where = f' {flag} ({origin(flag, overrides)}):' if flag else ''
      raise ValueError(f'Run {job.run!r}:{where} {message} Nothing was '
                       'launched.') from None


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


def command(job: Job, workdir: str, distributed: bool = False) -> list[str]:
  """train.py's command line for the job; distributed: one of several JAX
  processes (a multi-task Slurm job)."""
  return [sys.executable, 'train.py', job.flags[0],
          f'--workdir={os.path.join(workdir, job.name)}', *job.flags[1:],
          *(['--distributed'] if distributed else [])]


def move_aside(run_dir: str) -> str:
  """Renames run_dir to run_dir.stale-<YYYYmmdd-HHMMSS>; returns the name."""
  moved = f'{run_dir}{rundir.STALE_SUFFIX}{time.strftime("%Y%m%d-%H%M%S")}'
  os.rename(run_dir, moved)
  logging.warning('Stale %s moved to %s.', run_dir, moved)
  return moved


def sweep_record(previous: dict | None, spec: str, sweep: Sweep,
                 overrides: list[str], jobs: list[Job]) -> dict:
  """sweep.json's content (format: rundir's docstring) once `jobs` launch:
  the previous record's runs, these jobs' added or updated, each with the
  overrides it trains with. Nothing is dropped: runs of other --seeds, or
  set aside, stay for the report to read."""
  previous = previous or {}
  runs = {name: {'overrides': previous.get('overrides', [])} | entry
          for name, entry in previous.get('runs', {}).items()}
  runs |= {j.name: {'run': j.run, 'seed': j.seed,
                    'overrides': list(overrides)} for j in jobs}
  seeds = {}
  for entry in runs.values():
    seeds.setdefault(entry['run'], set()).add(entry['seed'])
  return {'sweep': spec, 'seeds': max(map(len, seeds.values())),
          'baseline': sweep.baseline, 'overrides': list(overrides),
          'runs': runs}


def record_sweep(workdir: str, previous: dict | None, spec: str,
                 sweep: Sweep, overrides: list[str], jobs: list[Job]) -> None:
  """Merges `jobs` into DIR/sweep.json (sweep_record), which held
  `previous`."""
  if previous and previous.get('sweep') != spec:
    logging.warning('%s recorded sweep %s; runs of %s join it.',
                    os.path.join(workdir, rundir.SWEEP),
                    previous.get('sweep'), spec)
  rundir.write_json_atomic(
      os.path.join(workdir, rundir.SWEEP),
      sweep_record(previous, spec, sweep, overrides, jobs))


def run_env(run_dir: str) -> dict[str, str]:
  """A local run's environment: JAX's persistent compilation cache in the
  sweep's folder, unless one is set. The seeds of a design run the same
  programs (trainer.train_step takes the seed as an argument), so only the
  first compiles them. One cache per host: XLA:CPU compiles for the host's
  CPU, which JAX's cache keys do not name."""
  cache = os.path.join(os.path.dirname(run_dir), XLA_CACHE,
                       socket.gethostname())
  return {'JAX_COMPILATION_CACHE_DIR': cache} | os.environ


def launch(name: str, cmd: list[str], run_dir: str, cores: list[int]) -> str:
  """Trains one run here on `cores` (recorded in job.json); its status."""
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, launchers.LOG)
  logging.info('[%s] started on cores %s; log: %s', name, cores, log_path)
  with open(log_path, 'a') as log:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, env=run_env(run_dir),
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))
    launchers.write_job(run_dir, launchers.local_record(proc.pid))
    proc.wait()
  result = launchers.record_result(run_dir, proc.returncode, log_path, cmd)
  logging.info('[%s] %s', name, result)
  return result


def run_jobs(jobs: list[Job], workdir: str, parallel: int) -> dict[str, str]:
  """Trains the jobs, `parallel` at once on disjoint cores; {directory
  name: status}."""
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
    slot = slots.get()
    try:
      return launch(job.name, command(job, workdir), run_dir, slot)
    finally:
      slots.put(slot)

  with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
    return dict(zip([j.name for j in jobs], pool.map(run_in_slot, jobs)))


def stale_message(stale: dict[str, list[str]], total: int) -> str:
  """Why the stale runs were left out, and the ways out. A key their
  config.json lacks was added since: no flag gives it back."""
  added = sorted({line.partition(':')[0] for changes in stale.values()
                  for line in changes if f": '{rundir.ABSENT}' ->" in line})
  hint = (f' {", ".join(added)}: added since they were saved; if its default '
          'trains as they did, list it in rundir.ADDED_KEYS with that value '
          'and they stay valid.' if added else '')
  return (f'{len(stale)} of {total} runs are stale, their config.json '
          f'differing from what this sweep trains: {", ".join(stale)}. Rerun '
          'with --rerun_stale to move them aside (<dir>.stale-<time>) and '
          'train them afresh, or give the sweep the flags they were trained '
          f'with.{hint}')


def unfinished(results: dict[str, str],
               stale: dict[str, list[str]]) -> list[str]:
  """What the sweep exits with: the runs that failed, the stale ones (runs
  submitted to Slurm, or queued or running already, are not problems)."""
  fine = ('ok', 'stale', 'submitted', launchers.UNKNOWN) + launchers.LIVE
  failed = [n for n, s in results.items() if s not in fine]
  problems = []
  if failed:
    problems.append(f'{len(failed)} of {len(results)} runs did not finish: '
                    f'{", ".join(failed)} (see their train.log).')
  if stale:
    problems.append(stale_message(stale, len(results)))
  return problems


def print_table(jobs: list[Job], results: dict[str, str],
                notes: dict[str, str]) -> None:
  width = max(len(j.name) for j in jobs)
  for job in jobs:
    note = notes.get(job.name)
    print(f'{job.name:{width}}  {results[job.name]}'
          + (f'  ({note})' if note else ''))


def print_dry_run(jobs: list[Job], workdir: str, stale: dict[str, list[str]],
                  resources: launchers.SlurmResources | None) -> None:
  """Prints the commands of the runs that would launch (for Slurm, after
  the #SBATCH lines of each run's job); lists stale ones."""
  if resources:
    print(f'# One Slurm job per run, its log in <run>/{launchers.SLURM_DIR}/:')
    print('\n'.join(resources.sbatch_lines()))
  distributed = bool(resources) and resources.tasks > 1
  for job in jobs:
    if job.name not in stale:
      print(shlex.join(['python'] + command(job, workdir, distributed)[1:]))
  for name, changes in stale.items():
    print(f'stale, left out: {name} ({"; ".join(changes)})', file=sys.stderr)
  if stale:
    raise SystemExit(stale_message(stale, len(jobs)))


def check_data(jobs: list[Job]) -> None:
  """input_pipeline.check_data once per distinct data config of the jobs
  (a TFDS data set is prepared once, not by every run); a problem is a
  ValueError of one line naming a run that uses the data."""
  import input_pipeline  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  checked = set()
  for job in jobs:
    data = job.config['data']
    key = json.dumps(data, sort_keys=True, default=str)
    if key in checked:
      continue
    checked.add(key)
    try:
      input_pipeline.check_data(ml_collections.ConfigDict(data))
    except input_pipeline.DataError as e:
      raise ValueError(f'Run {job.name!r}: its data does not load (nothing '
                       f'was launched): {launchers.one_line(e)}') from None


def to_launch(jobs: list[Job], workdir: str
              ) -> tuple[list[Job], dict[str, str], dict[str, str]]:
  """The jobs to launch: all but the finished ones and those queued or
  running already, or whose Slurm job cannot be asked about (their
  statuses and notes: the other two dicts)."""
  states = launchers.sweep_states(workdir, [j.name for j in jobs])
  todo, results, notes = [], {}, {}
  for job in jobs:
    state = states[job.name]
    if state.state == 'ok':
      logging.info('[%s] already finished: skipped.', job.name)
    elif state.state in launchers.LIVE + (launchers.UNKNOWN,):
      notes[job.name] = (f'slurm job {state.job_id}' if state.job_id
                         else 'launched by another sweep')
      logging.info('[%s] %s (%s): left alone.', job.name, state.state,
                   notes[job.name])
    else:
      todo.append(job)
      continue
    results[job.name] = state.state
  return todo, results, notes


def submit_jobs(jobs: list[Job], workdir: str,
                resources: launchers.SlurmResources
                ) -> tuple[dict[str, str], dict[str, str]]:
  """Submits each job to Slurm; ({name: 'submitted'}, {name: its job})."""
  results, notes = {}, {}
  for job in jobs:
    cmd = command(job, workdir, distributed=resources.tasks > 1)
    job_id = launchers.submit(job.name, cmd, os.path.join(workdir, job.name),
                              resources)
    logging.info('[%s] submitted: Slurm job %s.', job.name, job_id)
    results[job.name], notes[job.name] = 'submitted', f'slurm job {job_id}'
  return results, notes


def run_sweep(spec: str, workdir: str, overrides: list[str], *,
              seeds: int | None = None, parallel: int = 1,
              dry_run: bool = False, rerun_stale: bool = False,
              launcher: str = 'local',
              resources: launchers.SlurmResources | None = None) -> None:
  """The whole sweep; SystemExit naming the runs that did not finish or are
  stale. Every config is built, and so checked, before anything is written,
  and the data before anything launches. launcher 'slurm' submits the runs
  (with `resources`) and returns."""
  sweep = load_sweep(spec)
  seeds = seeds or sweep.seeds
  jobs = expand(sweep.runs, seeds, overrides)
  check_values(jobs, overrides)
  workdir = os.path.abspath(workdir)  # train.py runs in REPO.
  slurm = None
  if launcher == 'slurm':
    slurm = resources or launchers.SlurmResources()
  stale = {j.name: changes for j in jobs
           if (changes := rundir.saved_training_changes(
               os.path.join(workdir, j.name), j.config))}
  if dry_run:
    print_dry_run(jobs, workdir, stale, slurm)
    return
  if slurm:
    launchers.check_slurm(slurm)
  if rerun_stale:
    for name in stale:
      move_aside(os.path.join(workdir, name))
    stale = {}
  current = [j for j in jobs if j.name not in stale]
  todo, results, notes = to_launch(current, workdir)
  if todo:
    previous = rundir.read_sweep(workdir)  # Unreadable: stop here.
    check_data(todo)
    os.makedirs(workdir, exist_ok=True)
    # What launches, and this sweep's runs already there: they train what it
    # trains (not stale). A sweep that launches nothing leaves it as it was.
    record_sweep(workdir, previous, spec, sweep, overrides, current)
  if slurm:
    launched, submitted = submit_jobs(todo, workdir, slurm)
    results |= launched
    notes |= submitted
  else:
    results |= run_jobs(todo, workdir, parallel)
  results |= {name: 'stale' for name in stale}
  notes |= {name: '; '.join(changes) for name, changes in stale.items()}
  print_table(jobs, results, notes)
  if problems := unfinished(results, stale):
    raise SystemExit('\n'.join(problems))


def print_status(workdir: str) -> None:
  """Prints the state of each run of the sweep in workdir (sweep.json)."""
  path = os.path.join(workdir, rundir.SWEEP)
  try:
    names = list(rundir.read_json(path)['runs'])
  except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
    raise ValueError(f'{path} not found or unreadable: is {workdir!r} a '
                     'sweep directory (scripts/sweep.py --workdir)?') from None
  states = launchers.sweep_states(workdir, names)
  rows = [('run', 'state', 'steps', 'val_acc', 'job', 'error')]
  for name, s in states.items():
    steps = ('-' if s.steps is None else
             f'{s.steps}/{s.total_steps}' if s.total_steps else str(s.steps))
    rows.append((name, s.state, steps,
                 '-' if s.val_accuracy is None else f'{s.val_accuracy:.4f}',
                 s.job_id or '-', s.error))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  for row in rows:
    print('  '.join(f'{c:{w}}' for c, w in zip(row, widths)) + '  ' + row[-1])


def slurm_resources() -> launchers.SlurmResources:
  return launchers.SlurmResources(
      partition=FLAGS.partition, time_limit_min=FLAGS.time_limit_min,
      cpus_per_task=FLAGS.cpus_per_task, gpus_per_node=FLAGS.gpus_per_node,
      nodes=FLAGS.nodes, tasks_per_node=FLAGS.tasks_per_node,
      sbatch=tuple(FLAGS.sbatch))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    if not FLAGS.workdir:
      raise ValueError('--workdir is required.')
    if FLAGS.status:
      print_status(FLAGS.workdir)
      return
    if not FLAGS.sweep:
      raise ValueError('--sweep is required (or --status, to see the runs of '
                       '--workdir).')
    given = [f'--{f}' for f in SLURM_FLAGS if FLAGS[f].present]
    if given and FLAGS.launcher != 'slurm':
      raise ValueError(f'{", ".join(given)} apply to --launcher=slurm only.')
    run_sweep(FLAGS.sweep, FLAGS.workdir, CONFIG_OVERRIDES, seeds=FLAGS.seeds,
              parallel=FLAGS.parallel, dry_run=FLAGS.dry_run,
              rerun_stale=FLAGS.rerun_stale, launcher=FLAGS.launcher,
              resources=slurm_resources())
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None


def _parse(argv):
  argv, overrides = split_config_overrides(argv)
  CONFIG_OVERRIDES.extend(overrides)
  return app.parse_flags_with_usage(argv)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
