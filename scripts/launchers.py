"""Where a sweep's runs train, and the state each run is in.

Launchers (scripts/sweep.py --launcher): 'local' runs train.py here, one
process per run; 'slurm' submits one Slurm job per run through submitit. A
job runs TrainJob, which runs train.py in a child process and requeues the
job when Slurm signals it before a time limit or a preemption.

Each launch is recorded in its run directory, DIR/<run>/job.json (JOB):

  {'launcher': 'local', 'host': ..., 'pid': train.py's, 'started': ...}
  {'launcher': 'slurm', 'job_id': '123', 'submitted': ..., 'folder':
   submitit's folder (DIR/<run>/slurm: the sbatch script and the job's
   logs), 'nodes': N, 'tasks_per_node': N}

The run directory is the single source of truth (run_state): a run is
'pending' or 'running' while Slurm has its job queued or running (squeue,
else sacct) or its local process is alive; otherwise it is what its
summary.json says ('ok', 'interrupted', 'diverged', 'failed' with the
error), 'failed' where a job or process ended without a summary, and
'not-started' where nothing was launched. A Slurm job's run not 'ok' is
'unknown' where this machine has no squeue to ask.
"""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import time

import submitit

REPO = pathlib.Path(__file__).resolve().parents[1]

import rundir

JOB = 'job.json'
SLURM_DIR = 'slurm'  # submitit's folder in a run directory.
LOG = 'train.log'
LAUNCHERS = ('local', 'slurm')
LIVE = ('pending', 'running')
UNKNOWN = 'unknown'  # A Slurm job's state where squeue is not installed.
# Slurm job states (squeue, sacct) that are not over yet.
SLURM_PENDING = ('PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED',
                 'RESV_DEL_HOLD')
SLURM_RUNNING = ('RUNNING', 'CONFIGURING', 'COMPLETING', 'SIGNALING',
                 'STAGE_OUT', 'SUSPENDED', 'RESIZING')


# --------------------------------------------------------------- outcomes


def one_line(text: str) -> str:
  return ' '.join(str(text).split())


def record_result(run_dir: str, returncode: int, log_path: str,
                  cmd: list[str]) -> str:
  """The run's status after train.py exited with returncode: summary.json's,
  or 'failed' for a crash, recorded in summary.json with the log's last
  line (a diverged or interrupted run keeps the summary train.py wrote);
  'in-use', writing nothing, where another training held the workdir."""
  if returncode == rundir.IN_USE_EXIT_CODE:
    return 'in-use'  # Another training holds run_dir: its files are its own.
  status = rundir.read_status(run_dir)
  if returncode == 0 or status in ('diverged', 'interrupted'):
    return status or 'failed'
  with open(log_path) as f:
    tail = f.read()[-2000:].strip()
  rundir.write_json_atomic(os.path.join(run_dir, rundir.SUMMARY), {
      'status': 'failed', 'returncode': returncode,
      'error': tail.splitlines()[-1] if tail else '',
      'command': shlex.join(cmd)})
  return 'failed'


def write_job(run_dir: str, record: dict) -> None:
  rundir.write_json_atomic(os.path.join(run_dir, JOB), record)


def read_job(run_dir: str) -> dict | None:
  try:
    job = rundir.read_json(os.path.join(run_dir, JOB))
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  return job if isinstance(job, dict) else None


def local_record(pid: int) -> dict:
  return {'launcher': 'local', 'host': socket.gethostname(), 'pid': pid,
          'started': time.strftime('%Y-%m-%dT%H:%M:%S')}


# ------------------------------------------------------------------ slurm


@dataclasses.dataclass(frozen=True)
class SlurmResources:
  """What each run's job asks Slurm for. tasks_per_node x nodes > 1 starts
  one train.py (one JAX process) per task, with --distributed."""
  partition: str | None = None
  time_limit_min: int = 240
  cpus_per_task: int | None = None
  gpus_per_node: int = 0
  nodes: int = 1
  tasks_per_node: int = 1
  sbatch: tuple[str, ...] = ()  # More sbatch options: 'key=value' or 'key'.

  @property
  def tasks(self) -> int:
    return self.nodes * self.tasks_per_node

  def extra_options(self) -> dict:
    """--sbatch options as submitit's additional_parameters."""
    options = {}
    for option in self.sbatch:
      key, sep, value = option.removeprefix('--').partition('=')
      if not key:
        raise ValueError(f'--sbatch={option!r}: give an sbatch option as '
                         'key=value (e.g. --sbatch=account=myproject) or key.')
      options[key] = value if sep else True
    return options

  def parameters(self, job_name: str) -> dict:
    """submitit.SlurmExecutor's parameters. The job starts in the repository
    (where the pickled TrainJob imports from) and may be requeued."""
    params = {'job_name': job_name, 'time': self.time_limit_min,
              'nodes': self.nodes, 'ntasks_per_node': self.tasks_per_node,
              'stderr_to_stdout': True,
              'additional_parameters': {'chdir': str(REPO), 'requeue': True,
                                        **self.extra_options()}}
    if self.partition:
      params['partition'] = self.partition
    if self.cpus_per_task:
      params['cpus_per_task'] = self.cpus_per_task
    if self.gpus_per_node:
      params['gpus_per_node'] = self.gpus_per_node
    return params

  def sbatch_lines(self) -> list[str]:
    """The #SBATCH lines every run's job shares, as submitit writes them
    (less the job name and the log paths, which are the run's)."""
    from submitit.slurm import slurm  # pylint: disable=import-outside-toplevel
    text = slurm._make_sbatch_string(  # pylint: disable=protected-access
        command='', folder='.', **self.parameters('x'))
    own = ('--job-name=', '--output=', '--error=', '--open-mode=')
    return [line for line in text.splitlines()
            if line.startswith('#SBATCH') and not line[8:].startswith(own)]


def check_slurm(resources: SlurmResources) -> None:
  """A ValueError of one line where jobs cannot be submitted from here, or
  an --sbatch option is malformed: before anything is written."""
  resources.extra_options()
  if not shutil.which('sbatch'):
    raise ValueError("--launcher=slurm needs Slurm's sbatch, which is not on "
                     "PATH here: run the sweep on the cluster's login node, "
                     'or use --launcher=local.')


def submit(name: str, cmd: list[str], run_dir: str,
           resources: SlurmResources) -> str:
  """Submits one run as a Slurm job; records it in job.json; the job id."""
  folder = os.path.join(run_dir, SLURM_DIR)
  os.makedirs(folder, exist_ok=True)
  executor = submitit.SlurmExecutor(folder=folder)
  executor.update_parameters(**resources.parameters(name))
  try:
    with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's.
      job = executor.submit(TrainJob(cmd, run_dir))
  except submitit.core.utils.FailedJobError as e:
    *_, last = str(e).strip().splitlines() or ['']
    raise ValueError(f'sbatch refused run {name!r}: {last}') from None
  write_job(run_dir, {
      'launcher': 'slurm', 'job_id': job.job_id,
      'submitted': time.strftime('%Y-%m-%dT%H:%M:%S'), 'folder': folder,
      'nodes': resources.nodes, 'tasks_per_node': resources.tasks_per_node})
  return job.job_id


def _preemption_signal() -> signal.Signals:
  """The signal Slurm sends before a time limit or a preemption
  (submitit's --signal)."""
  return getattr(signal, 'SIG' + submitit.JobEnvironment.USR_SIG)


def _ignore_preemption_signal() -> None:
  # Slurm signals every process of the job step; train.py stops on SIGTERM,
  # which TrainJob.checkpoint sends it, and would die of the default action.
  signal.signal(_preemption_signal(), signal.SIG_IGN)


class TrainJob(submitit.helpers.Checkpointable):
  """One run as a Slurm job (each task of it): train.py in a child process,
  its output in the run's train.log (task k > 0: train.task<k>.log).

  Before a time limit or on preemption Slurm signals the job and submitit
  calls checkpoint() on the first task: it forwards SIGTERM to train.py,
  which saves a checkpoint and exits, and requeues this job, which resumes
  from that checkpoint. The other tasks' train.py processes stop at the
  same step (trainer.StopSignal agrees across processes). A crash is recorded
  in summary.json as the local launcher records it, and fails the job."""

  def __init__(self, cmd: list[str], run_dir: str, stop_timeout_s: int = 60):
    self.cmd = list(cmd)
    self.run_dir = run_dir
    self.stop_timeout_s = stop_timeout_s  # Within submitit's signal delay.
    self._proc = None

  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != '_proc'}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state, _proc=None)

  def __call__(self) -> str:
    rank = int(os.environ.get('SLURM_PROCID', '0'))
    log_path = os.path.join(self.run_dir,
                            LOG if rank == 0 else f'train.task{rank}.log')
    with open(log_path, 'a') as log:
      self._proc = subprocess.Popen(
          self.cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
          preexec_fn=_ignore_preemption_signal)
      # Poll: a blocking wait() would hold the lock that checkpoint(), a
      # signal handler in this thread, needs.
      while self._proc.poll() is None:
        time.sleep(0.5)
    returncode = self._proc.returncode
    if rank != 0:
      if returncode:
        raise RuntimeError(f'train.py exited with {returncode}: {log_path}')
      return 'done'
    status = record_result(self.run_dir, returncode, log_path, self.cmd)
    if returncode:
      summary = rundir.read_json(os.path.join(self.run_dir, rundir.SUMMARY))
      raise RuntimeError(f'{status}: {summary.get("error", "")}')
    return status

  def checkpoint(self, *args, **kwargs):
    """Stops train.py (SIGTERM: it checkpoints) and resubmits this job;
    None (no requeue) where the run finished anyway."""
    if self._proc is not None and self._proc.returncode is None:
      stop_child(self._proc.pid, self.stop_timeout_s)
    if rundir.read_status(self.run_dir) == 'ok':
      return None
    return super().checkpoint(*args, **kwargs)


def stop_child(pid: int, timeout_s: float) -> None:
  """SIGTERM to the child, then waits (up to timeout_s) for it to exit,
  reaping it with os.waitpid: Popen's wait would need a lock its poll()
  in the interrupted frame may hold."""
  try:
    os.kill(pid, signal.SIGTERM)
  except ProcessLookupError:
    return
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      if os.waitpid(pid, os.WNOHANG)[0]:
        return
    except ChildProcessError:  # Reaped already.
      return
    time.sleep(0.2)


# ------------------------------------------------------------------ state


@dataclasses.dataclass(frozen=True)
class RunState:
  """What --status shows of a run directory."""
  state: str
  steps: int | None = None
  total_steps: int | None = None
  val_accuracy: float | None = None
  job_id: str = ''
  error: str = ''


def _run(argv: list[str]) -> str:
  """A Slurm command's stdout; '' where it is missing or fails."""
  try:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.TimeoutExpired):
    return ''
  return out.stdout if out.returncode == 0 else ''


def slurm_states(job_ids: list[str]) -> dict[str, str]:
  """{job id: Slurm state} of the jobs Slurm still knows: squeue's, then
  sacct's (where accounting is on) for jobs squeue has forgotten; UNKNOWN
  for each where there is no squeue."""
  if job_ids and not shutil.which('squeue'):
    return dict.fromkeys(job_ids, UNKNOWN)
  states = {}
  if job_ids:
    out = _run(['squeue', '-h', '-o', '%i|%T', '--states=all',
                f'--jobs={",".join(job_ids)}'])
    states = dict(line.split('|', 1) for line in out.splitlines()
                  if '|' in line)
  missing = [j for j in job_ids if j not in states]
  if missing:
    out = _run(['sacct', '-n', '-X', '-P', '-o', 'JobID,State',
                *(f'--jobs={j}' for j in missing)])
    for line in out.splitlines():
      job_id, _, state = line.partition('|')
      states.setdefault(job_id, state.split()[0] if state else '')
  return states


def _process_alive(job: dict, run_dir: str) -> bool:
  """Whether a local launch's train.py is still running (on this host)."""
  if job.get('host') != socket.gethostname() or not job.get('pid'):
    return False
  try:
    with open(f'/proc/{int(job["pid"])}/cmdline', 'rb') as f:
      return os.path.abspath(run_dir).encode() in f.read()
  except OSError:
    return False


def live_state(job: dict | None, run_dir: str,
               scheduler: dict[str, str]) -> str | None:
  """'pending' or 'running' while the launch is not over, UNKNOWN where
  Slurm cannot be asked; else None."""
  if not job:
    return None
  if job.get('launcher') == 'slurm':
    state = scheduler.get(str(job.get('job_id')), '')
    return ('pending' if state in SLURM_PENDING else
            'running' if state in SLURM_RUNNING else
            UNKNOWN if state == UNKNOWN else None)
  return 'running' if _process_alive(job, run_dir) else None


def _progress(run_dir: str) -> tuple[int | None, float | None]:
  """The last step metrics.jsonl logged, and the last val accuracy."""
  step, accuracy = None, None
  try:
    with open(os.path.join(run_dir, rundir.METRICS)) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # A line being written.
        if not isinstance(record, dict):
          continue
        step = record.get('step', step)
        accuracy = record.get('val/accuracy', accuracy)
  except FileNotFoundError:
    pass
  return step, accuracy


def _total_steps(run_dir: str) -> int | None:
  try:
    steps = rundir.read_json(os.path.join(run_dir, rundir.CONFIG)).get(
        'num_train_steps')
  except (FileNotFoundError, json.JSONDecodeError, AttributeError):
    return None
  return steps if isinstance(steps, int) and steps > 0 else None


def run_state(run_dir: str, scheduler: dict[str, str]) -> RunState:
  """The run's state (the module docstring's), from its directory and,
  for a Slurm job, the scheduler's states (slurm_states)."""
  job = read_job(run_dir)
  job_id = str(job.get('job_id', '')) if job else ''
  try:
    summary = rundir.read_json(os.path.join(run_dir, rundir.SUMMARY))
  except (FileNotFoundError, json.JSONDecodeError):
    summary = {}
  step, accuracy = _progress(run_dir)
  state = live_state(job, run_dir, scheduler)
  error = ''
  if state == UNKNOWN and summary.get('status') != 'ok':
    error = f'no squeue here to ask Slurm about job {job_id}'
  elif state == UNKNOWN:
    state = None
  if state is None:
    state = summary.get('status')
    error = summary.get('error', '') if state == 'failed' else ''
  if state is None and job:
    state = 'failed'
    ended = scheduler.get(job_id) or 'gone from the queue'
    error = (f'{job["launcher"]} job {job_id or job.get("pid")} ended '
             f'({ended}) without a summary.json; see {LOG}')
  return RunState(state or 'not-started',
                  step if step is not None else summary.get('steps'),
                  _total_steps(run_dir),
                  accuracy if accuracy is not None
                  else summary.get('val_accuracy'),
                  job_id, one_line(error))


def sweep_states(workdir: str, names: list[str]) -> dict[str, RunState]:
  """run_state of each named run directory, with one squeue call."""
  dirs = {n: os.path.join(workdir, n) for n in names}
  jobs = {n: read_job(d) for n, d in dirs.items()}
  ids = [str(j['job_id']) for j in jobs.values()
         if j and j.get('launcher') == 'slurm' and j.get('job_id')]
  scheduler = slurm_states(ids)
  return {n: run_state(d, scheduler) for n, d in dirs.items()}
