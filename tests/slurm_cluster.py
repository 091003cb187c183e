"""A one-node Slurm cluster on this machine, for tests: munged, slurmctld and
slurmd from the Debian packages (slurm-wlm, munge), run as root.

  with SlurmCluster(tmp_dir) as cluster:   # Raises ClusterUnavailable.
    subprocess.run(['sbatch', ...], env=cluster.env())

Everything lives in tmp_dir: the munge key and socket, slurm.conf (node
'localhost', 2 CPUs, one partition), the controller's state, the spool and
the logs. Ports are free ones picked at start. Clients find the cluster
through SLURM_CONF (env()); jobs inherit it, as they inherit the whole
environment of the process that submits them.

Settings that make a test cluster fast and small: select/cons_tres by CPU,
proctrack/linuxproc and task/none (no cgroups), no accounting (sacct has
nothing to report: the tools fall back on squeue), cred_expire=5 (a requeued
job may start again 6 s later rather than 121 s), ReturnToService=2.
"""

import os
import shutil
import socket
import subprocess
import time

CPUS = 2
PARTITION = 'debug'
NODE = 'localhost'  # Also the coordinator host that jax.distributed derives.
DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'scancel', 'srun', 'sinfo')  # On PATH.
SBIN = ('/usr/sbin', '/sbin')  # Where daemons are, if not on PATH.


class ClusterUnavailable(RuntimeError):
  """Slurm cannot run here: not installed, not root, or a daemon failed."""


def find(program: str, dirs=SBIN) -> str:
  path = shutil.which(program) or next(
      (os.path.join(d, program) for d in dirs
       if os.access(os.path.join(d, program), os.X_OK)), None)
  if path is None:
    raise ClusterUnavailable(
        f'{program} not found: install the Debian packages slurm-wlm and '
        'munge (.ci/run does).')
  return path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def slurm_conf(root: str, munge_socket: str) -> str:
  ports = free_port(), free_port()
  return f"""\
ClusterName=pointwise-test
SlurmctldHost={NODE}
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MinJobAge=600
KillWait=10
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
  """Starts the daemons on __enter__ (waiting until the node is idle) and
  stops them on __exit__."""

  def __init__(self, root, start_timeout: float = 30):
    self.root = os.path.abspath(root)
    self.conf = os.path.join(self.root, 'slurm.conf')
    self.start_timeout = start_timeout
    self.procs: list[subprocess.Popen] = []

  def env(self, base=None) -> dict:
    """An environment whose Slurm commands talk to this cluster."""
    return dict(os.environ if base is None else base, SLURM_CONF=self.conf)

  def __enter__(self) -> 'SlurmCluster':
    if os.geteuid() != 0:
      raise ClusterUnavailable('slurmd must run as root (SlurmdUser=root).')
    programs = {name: find(name) for name in DAEMONS + ('mungekey',)}
    for client in CLIENTS:  # The tools under test call them.
      find(client, dirs=())
    try:
      self._start(programs)
    except BaseException:
      self.__exit__()
      raise
    return self

  def _start(self, programs: dict) -> None:
    munge_dir = os.path.join(self.root, 'munge')
    for sub in ('munge', 'state', 'spool'):
      os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
    key = os.path.join(munge_dir, 'munge.key')
    subprocess.run([programs['mungekey'], '--create', f'--keyfile={key}'],
                   check=True, capture_output=True)
    munge_socket = os.path.join(munge_dir, 'munge.socket')
    with open(self.conf, 'w') as f:
      f.write(slurm_conf(self.root, munge_socket))
    self._spawn('munged', [
        programs['munged'], '--foreground', '--force',
        f'--socket={munge_socket}', f'--key-file={key}',
        f'--pid-file={munge_dir}/munged.pid',
        f'--seed-file={munge_dir}/munged.seed',
        f'--log-file={munge_dir}/munged.log'])
    self._wait_for(lambda: os.path.exists(munge_socket), 'munged')
    self._spawn('slurmctld', [programs['slurmctld'], '-D', '-c', '-i',
                              '-f', self.conf])
    self._spawn('slurmd', [programs['slurmd'], '-D', '-N', NODE,
                           '-f', self.conf])
    self._wait_for(self._node_idle, 'the node to come up idle')

  def _spawn(self, name: str, argv: list[str]) -> None:
    log = open(os.path.join(self.root, f'{name}.out'), 'w')
    self.procs.append(subprocess.Popen(argv, stdout=log,
                                       stderr=subprocess.STDOUT,
                                       env=self.env()))
    log.close()

  def _node_idle(self) -> bool:
    out = subprocess.run(['sinfo', '-h', '-o', '%T', '-n', NODE],
                         env=self.env(), capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == 'idle'

  def _wait_for(self, ready, what: str) -> None:
    deadline = time.monotonic() + self.start_timeout
    while not ready():
      dead = [p for p in self.procs if p.poll() is not None]
      if dead or time.monotonic() > deadline:
        raise ClusterUnavailable(
            f'Slurm did not start (waiting for {what}; '
            f'{"a daemon exited" if dead else "timed out"}): '
            f'{self.log_tail()}')
      time.sleep(0.2)

  def log_tail(self, lines: int = 5) -> str:
    """The last lines of each daemon's log, for an error message."""
    out = []
    for name in DAEMONS:
      for path in (f'{name}.out', f'{name}.log'):
        path = os.path.join(self.root, path)
        if os.path.exists(path):
          with open(path, errors='replace') as f:
            tail = f.read().strip().splitlines()[-lines:]
          out.append(f'{os.path.basename(path)}: ' + ' | '.join(tail))
    return '; '.join(out) or 'no logs'

  def jobs(self) -> list[str]:
    """The ids of the jobs not finished yet."""
    out = subprocess.run(['squeue', '-h', '-o', '%i'], env=self.env(),
                         capture_output=True, text=True)
    return out.stdout.split()

  def _cancel_all(self, timeout: float = 20) -> None:
    """Cancels every job and waits for them to end: jobs run under
    slurmstepd processes that outlive slurmd."""
    if not self.jobs():
      return
    subprocess.run(['scancel', f'--partition={PARTITION}'], env=self.env(),
                   capture_output=True)
    deadline = time.monotonic() + timeout
    while self.jobs() and time.monotonic() < deadline:
      time.sleep(0.5)

  def __exit__(self, *exc) -> None:
    if len(self.procs) == len(DAEMONS):
      try:
        self._cancel_all()
      except (OSError, subprocess.SubprocessError):
        pass  # Stop the daemons whatever happens.
    for proc in reversed(self.procs):  # slurmd, slurmctld, then munged.
      if proc.poll() is None:
        proc.terminate()
    for proc in reversed(self.procs):
      try:
        proc.wait(timeout=15)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    self.procs = []
