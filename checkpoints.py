"""Checkpoints in DIR/checkpoints: orbax CheckpointManager plus a fingerprint.

Each checkpoint holds the train state and a JSON `meta` with the model config
and every parameter's shape. A run refuses a workdir whose checkpoints were
written by another model (before anything is compiled or overwritten), and a
checkpoint that fails to restore falls back to the one before it. How the
layers are computed (config.ops) is not part of the model: the params are
the same under every choice, so a checkpoint resumes under any of them.
"""

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


def fingerprint(model_config: dict, abstract_state: Any) -> dict:
  """What must agree for a checkpoint to belong to this run."""
  shapes = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  return {'model': dict(model_config),
          'param_shapes': {jax.tree_util.keystr(k): list(v.shape)
                           for k, v in shapes}}


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
    # A model key added since (rundir.ADDED_KEYS) has the value it trained as.
    stored = rundir.with_added_keys({'model': {}} | stored)
    diffs = [k for k in self.meta if stored.get(k) != self.meta[k]]
    if diffs:
      model_diff = {k: (stored['model'].get(k), v)
                    for k, v in self.meta['model'].items()
                    if stored.get('model', {}).get(k) != v}
      raise CheckpointMismatchError(
          f'{self.directory} holds checkpoints (latest: step {step}) of a '
          f'different model or shape: {", ".join(diffs)} differ'
          + (f' (model key: (stored, requested) {model_diff})' if model_diff
             else '') + '. Nothing was overwritten. Use a new --workdir, or '
          'the config that wrote it (saved in the workdir as config.json).')

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
