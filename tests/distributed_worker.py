"""train.py's command, plus a dump of the final in-memory train state.

  python tests/distributed_worker.py --dump=DIR <train.py flags>

Runs train.py itself as `__main__` (the same flags and parser, including
--distributed), then writes DIR/state_<process index>.npz: every leaf of the
state that the last checkpoint save received (params, batch_stats, opt_state),
as this process holds it, keyed 'params/...', 'batch_stats/...', 'opt_state/...'.
tests/test_train.py compares these across processes and device counts.
"""

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # pylint: disable=g-import-not-at-top
import jax
import numpy as np

import checkpoints

flags.DEFINE_string('dump', None, 'Folder for state_<process index>.npz.')

_saved = {}


def _capture_saves():
  original = checkpoints.Checkpoints.save

  def save(self, step, state):
    _saved['state'] = state  # The state after the newest step.
    return original(self, step, state)
  checkpoints.Checkpoints.save = save


def local_copy(x) -> np.ndarray:
  """This process's copy of a replicated array."""
  return np.asarray(x.addressable_data(0))


def dump(folder: str) -> None:
  state = _saved['state']
  arrays = {}
  for name in ('params', 'batch_stats', 'opt_state'):
    leaves = jax.tree_util.tree_flatten_with_path(getattr(state, name))[0]
    for path, leaf in leaves:
      arrays[name + '/' + jax.tree_util.keystr(path)] = local_copy(leaf)
  arrays['step'] = local_copy(state.step)
  os.makedirs(folder, exist_ok=True)
  np.savez(os.path.join(folder, f'state_{jax.process_index()}.npz'), **arrays)


def _same_cache_keys_on_every_process():
  """Lets every process use the persistent compilation cache (for speed).

  JAX puts a fingerprint of the CPU topology, which differs between the
  processes of one run, into the cache key, and only process 0 writes entries:
  so other processes would compile everything from scratch on every run while
  process 0 waits at the first collective (and fails with 'Gloo context
  initialization failed: DEADLINE_EXCEEDED' if that takes over ~30 s). Hashing
  the device kinds instead gives all processes process 0's keys; the programs
  are the same.
  """
  from jax._src import cache_key  # pylint: disable=g-import-not-at-top
  if hasattr(cache_key, '_hash_accelerator_config') and hasattr(
      cache_key, '_hash_devices'):
    cache_key._hash_accelerator_config = cache_key._hash_devices


def main():
  if '--distributed' in sys.argv:
    _same_cache_keys_on_every_process()
  _capture_saves()
  try:  # train.py's app.run parses the flags, --dump too, and exits.
    runpy.run_path(os.path.join(ROOT, 'train.py'), run_name='__main__')
  except SystemExit as e:
    if e.code not in (None, 0):
      raise
  dump(flags.FLAGS.dump)


if __name__ == '__main__':
  flags.mark_flags_as_required(['dump'])
  main()
