"""scripts/sweep.py --launcher=slurm against a real Slurm: a one-node, 2-CPU
cluster on this machine (tests/slurm_cluster.py), started once per session.
Without Slurm (or root) these tests skip, saying why; with CI=true they fail.

Two sweeps share the cluster and the asserts (the `runs` fixture). One has
three runs of configs/test.py (6 steps; one Inception module, to compile
fast): `a`; `b`, the same config, preempted mid-way by Slurm's preemption
signal (as before a time limit), which requeues itself; `bad`, whose data
train.py cannot read. The test freezes b's train.py after step 1 until the
signal is handled, so that it lands mid-way however fast the steps. The
other sweep runs `a`'s config as one job of 2 tasks, 2 JAX processes. The
tests read the run directories, --status and scripts/report.py.
"""

import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

import rundir
import trainer
from tests.conftest import CACHE_DIR
from tests.slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = 'configs/test.py'
STEPS = 6  # configs/test.py: num_train_steps; checkpoints every 3.
TIMEOUT_S = 400  # For every job of the module to end.
SMALL = '--config.model.num_modules=1'
# A data source that exists (the sweep's checks pass) but that train.py
# cannot read: the run fails at its start, inside its job. The `runs`
# fixture writes it.
NOT_AN_ARCHIVE = os.path.join(tempfile.gettempdir(),
                              'pointwise-test-slurm-not-an-archive.tar.gz')
RUNS = [('a', CONFIG), ('b', CONFIG),
        ('bad', CONFIG, {'data.source': NOT_AN_ARCHIVE})]


@pytest.fixture(scope='session')
def cluster(tmp_path_factory):
  """The running cluster; skips (fails with CI=true) where it cannot run."""
  try:
    with SlurmCluster(tmp_path_factory.mktemp('slurm')) as running:
      yield running
      return
  except ClusterUnavailable as e:
    reason = f'no Slurm cluster here: {e}'
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail(reason)
  pytest.skip(reason)


def write_sweep(path, runs):
  path.write_text(
      'from configs.sweeps.common import Run\n\n\n'
      f'def get_sweep(arg=None):\n  return [Run(*r) for r in {runs!r}]\n')
  return str(path)


def sweep_env(cluster):
  """The tests' environment (XLA flags, compilation cache), which jobs
  inherit, and the cluster's."""
  return cluster.env() | {'JAX_COMPILATION_CACHE_DIR': CACHE_DIR,
                          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                          'TF_CPP_MIN_LOG_LEVEL': '2'}


def sweep(cluster, *args):
  return subprocess.run([sys.executable, 'scripts/sweep.py', *args], cwd=REPO,
                        env=sweep_env(cluster), capture_output=True, text=True,
                        timeout=120)


def submit(cluster, spec, workdir, *resources):
  """Starts sweep.py --launcher=slurm; its Popen."""
  return subprocess.Popen(
      [sys.executable, 'scripts/sweep.py', f'--sweep={spec}',
       f'--workdir={workdir}', SMALL, '--launcher=slurm', '--cpus_per_task=1',
       '--time_limit_min=60', *resources], cwd=REPO, env=sweep_env(cluster),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc):
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  return out


def read_json(path):
  with open(path) as f:
    return json.load(f)


def wait_for(predicate, what, timeout=TIMEOUT_S, poll_s=0.2):
  deadline = time.monotonic() + timeout
  while not (result := predicate()):
    if time.monotonic() > deadline:
      raise TimeoutError(f'timed out waiting for {what}')
    time.sleep(poll_s)
  return result


def train_pid(run_dir) -> int | None:
  """The pid of the train.py process training in run_dir, if any."""
  for entry in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        argv = f.read().split(b'\0')
    except OSError:
      continue
    if b'train.py' in argv and f'--workdir={run_dir}'.encode() in argv:
      return int(entry)
  return None


def preempt_mid_way(cluster, run_dir, job_id) -> None:
  """Freezes the run's train.py once it has logged step 1, sends the job
  Slurm's preemption signal, and lets train.py go on once submitit has
  called TrainJob.checkpoint (which sent it SIGTERM)."""
  pid = wait_for(lambda: train_pid(run_dir), "b's train.py")
  metrics = run_dir / 'metrics.jsonl'
  wait_for(lambda: metrics.exists() and metrics.stat().st_size, 'step 1',
           poll_s=0.005)
  os.kill(pid, signal.SIGSTOP)
  try:
    subprocess.run(['scancel', '--signal=USR2', job_id], check=True,
                   env=cluster.env())
    log = run_dir / 'slurm' / f'{job_id}_0_log.out'
    wait_for(lambda: 'Calling checkpoint method' in read(log), 'checkpoint()',
             timeout=60)
  finally:
    os.kill(pid, signal.SIGCONT)


def read(path) -> str:
  return path.read_text() if path.exists() else ''


def status(cluster, workdir) -> dict[str, list[str]]:
  """--status as {run: [state, steps, val_acc, job, error]}."""
  out = sweep(cluster, '--status', f'--workdir={workdir}')
  assert out.returncode == 0, out.stderr
  _, *rows = out.stdout.strip().splitlines()
  return {row.split()[0]: row.split(None, 5)[1:] for row in rows}


@pytest.fixture(scope='module')
def runs(cluster, tmp_path_factory):
  """Submits both sweeps, preempts `b` mid-way, and waits for every job to
  end. {'one': first sweep's dir, 'two': the 2-task
  sweep's, 'submitted': sweep.py's output, 'early': --status right after
  submitting, 'jobs': {run: first job id}}."""
  root = tmp_path_factory.mktemp('sweeps')
  one, two = root / 'one', root / 'two'
  pathlib.Path(NOT_AN_ARCHIVE).write_text('not an archive\n')
  submitted = finished(submit(cluster, write_sweep(root / 'three.py', RUNS),
                              one))
  second = submit(cluster, write_sweep(root / 'a.py', RUNS[:1]), two,
                  '--tasks_per_node=2')
  early = status(cluster, one)
  jobs = {run: read_json(one / run / 'job.json')['job_id']
          for run, *_ in RUNS}
  finished(second)
  try:
    preempt_mid_way(cluster, one / 'b', jobs['b'])
    wait_for(lambda: not cluster.jobs(), 'the jobs to end')
  except TimeoutError as e:
    logs = {p: read(p)[-3000:] for p in sorted(root.glob('**/*.log*'))}
    pytest.fail(f'{e}; queue: {cluster.jobs()}; logs: {logs}')
  return {'one': one, 'two': two, 'submitted': submitted, 'early': early,
          'jobs': jobs}


@functools.cache
def final_state(workdir) -> dict:
  """The run's last checkpoint: {'params/...': array, ...}."""
  _, state = trainer.restore_for_eval(rundir.load_run_config(str(workdir)),
                                    str(workdir))
  out = {}
  for name in ('params', 'batch_stats', 'opt_state'):
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        getattr(state, name))[0]:
      out[f'{name}/{jax.tree_util.keystr(path)}'] = np.asarray(leaf)
  return out | {'step': np.asarray(state.step)}


def test_submitted_jobs_are_recorded_and_shown_queued(runs):
  for run, job_id in runs['jobs'].items():
    assert re.search(rf'^{run} +submitted  \(slurm job {job_id}\)$',
                     runs['submitted'], re.M)
    job = read_json(runs['one'] / run / 'job.json')
    assert job['launcher'] == 'slurm' and job['tasks_per_node'] == 1
    state, _, _, shown_id, *_ = runs['early'][run]
    assert state in ('pending', 'running') and shown_id == job_id


def test_status_and_report_after_the_jobs_end(cluster, runs):
  after = status(cluster, runs['one'])
  for run in ('a', 'b'):
    state, steps, accuracy, job_id = after[run]
    assert (state, steps, job_id) == ('ok', f'{STEPS}/{STEPS}',
                                      runs['jobs'][run])
    summary = read_json(runs['one'] / run / 'summary.json')
    assert float(accuracy) == pytest.approx(summary['val_accuracy'], abs=1e-4)
  # The failure reached --status as one line and did not stop a or b.
  *bad, error = after['bad']
  assert bad == ['failed', '-', '-', runs['jobs']['bad']]
  assert re.fullmatch(r'error: .*not-an-archive.*', error)  # train.py's last line.
  report = subprocess.run([sys.executable, 'scripts/report.py',
                           str(runs['one'])], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert report.returncode == 0, report.stderr
  rows = {r.split(',')[0]: r for r in
          read(runs['one'] / 'results.csv').splitlines()[1:]}
  assert set(rows) == {'a', 'b', 'bad'}
  assert '`bad` (failed)' in report.stdout


def test_preempted_run_requeues_and_ends_as_an_uninterrupted_one(runs):
  log = read(runs['one'] / 'b' / 'train.log')
  stopped = re.search(r'Stopping at step (\d+) \(SIGTERM\)', log)
  assert stopped, log[-3000:]
  assert 0 < int(stopped.group(1)) < STEPS
  assert f'Resuming from step {stopped.group(1)}' in log
  submitit_log = ''.join(
      read(p) for p in (runs['one'] / 'b' / 'slurm').glob('*_log.out'))
  assert f'Requeued job {runs["jobs"]["b"]}' in submitit_log
  a, b = final_state(runs['one'] / 'a'), final_state(runs['one'] / 'b')
  assert a['step'] == b['step'] == STEPS
  assert a.keys() == b.keys()
  different = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not different, different[:3]


def test_two_tasks_match_one_process(runs):
  summary = read_json(runs['two'] / 'a' / 'summary.json')
  assert summary['status'] == 'ok' and summary['steps'] == STEPS
  assert (summary['process_count'], summary['device_count']) == (2, 2)
  one, two = final_state(runs['one'] / 'a'), final_state(runs['two'] / 'a')
  assert one.keys() == two.keys()
  for key in one:
    np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)


def test_a_rerun_resubmits_only_the_failed_run(cluster, runs, tmp_path):
  out = finished(submit(cluster, write_sweep(tmp_path / 'three.py', RUNS),
                        runs['one']))
  job_id = read_json(runs['one'] / 'bad' / 'job.json')['job_id']
  subprocess.run(['scancel', job_id], env=cluster.env())
  assert job_id != runs['jobs']['bad']
  table = dict(line.split(None, 1) for line in out.splitlines())
  assert table == {'a': 'ok', 'b': 'ok',
                   'bad': f'submitted  (slurm job {job_id})'}
