"""Checkpoints in DIR/checkpoints: orbax CheckpointManager plus a fingerprint.

Each checkpoint holds the train state and a JSON `meta`: the run's config
and every parameter's shape (fingerprint). A run refuses a workdir whose
checkpoints are of another run, before anything is compiled or overwritten;
whether two configs are the same run is rundir.training_changes' to say, the
rule config.json is checked by too (so a checkpoint resumes under any ops,
cadence or data path, as a workdir does). A checkpoint that fails to restore
falls back to the one before it.
"""

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

import rundir


class CheckpointMismatchError(ValueError):
  pass


def directory(workdir: str) -> str:
  """Where a run's checkpoints live: workdir/checkpoints."""
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def fingerprint(config: dict, abstract_state: Any) -> dict:
  """What each checkpoint records of its run: the config (as JSON reads it
  back) and every parameter's shape (whether this code's network can take
  the checkpoint's params)."""
  shapes = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  return {'config': json.loads(json.dumps(config, default=str)),
          'param_shapes': {jax.tree_util.keystr(k): list(v.shape)
                           for k, v in shapes}}


# The keys of the config that checkpoints recorded before they recorded all
# of it (as meta['model'] and meta['image_size']).
LEGACY_KEYS = ('model', 'image_size')


def recorded_changes(meta: dict, config: dict) -> list[str]:
  """rundir.training_changes from the config a checkpoint's meta recorded
  to `config`: over all of it, or for an older checkpoint over the keys it
  recorded (LEGACY_KEYS)."""
  if 'config' in meta:
    return rundir.training_changes(rundir.saved_config(dict(meta['config'])),
                                   config)
  keys = [k for k in LEGACY_KEYS if k in meta]
  saved = rundir.saved_config({k: meta[k] for k in keys})
  return rundir.training_changes({k: saved[k] for k in keys},
                                 {k: config.get(k) for k in keys})


class Checkpoints:
  """Saves when asked (train.py: every checkpoint interval, at the end
  and on a stop), keeping the last `keep`."""

  def __init__(self, workdir: str, keep: int, meta: dict):
    self.directory = directory(workdir)
    self.meta = meta
    self.unrestorable = set()  # Steps that failed in restore_latest.
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def check_compatible(self) -> None:
    """Raises CheckpointMismatchError if the latest checkpoint is not ours."""
    stored, step = None, None
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        stored = self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
        break
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Unreadable metadata of checkpoint %d in %s (%s); '
                        'checking the previous one.', step, self.directory, e)
    if stored is None:
      return
    what = f'{self.directory} holds checkpoints (latest: step {step}) of'
    fix = 'Nothing was overwritten. Use a new --workdir, or the '
    changes = recorded_changes(stored, self.meta['config'])
    if changes:
      raise CheckpointMismatchError(rundir.changes_error(
          what, changes, fix + 'config that wrote them (saved in the workdir '
          'as config.json).'))
    saved, shapes = stored.get('param_shapes') or {}, self.meta['param_shapes']
    changed = sorted(k for k in set(saved) | set(shapes)
                     if saved.get(k) != shapes.get(k))
    if changed:
      raise CheckpointMismatchError(
          f'{what} the same config, but this code builds parameters of other '
          f'shapes: {len(changed)} differ, e.g. {changed[0]} '
          f'{saved.get(changed[0])} -> {shapes.get(changed[0])}. {fix}code '
          'that wrote them.')

  def restore_latest(self, abstract_state: Any) -> Any | None:
    """The newest checkpoint that restores, or None if there is none."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))['state']
      except Exception as e:  # pylint: disable=broad-except
        self.unrestorable.add(step)
        logging.warning('Checkpoint at step %d in %s failed to restore (%s: '
                        '%s); falling back to the previous one.', step,
                        self.directory, type(e).__name__, str(e)[:300])
    return None

  def save(self, step: int, state: Any) -> None:
    # Checkpoints that failed to restore at or after `step` would block this
    # save (it is skipped if the step exists; orbax skips steps <= its latest):
    # this state replaces them.
    for broken in sorted(s for s in self.unrestorable if s >= step):
      self.manager.delete(broken)
      self.unrestorable.discard(broken)
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta)))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
