"""Helpers shared by the test files (which import from here, not from each
other): tiny image folders, a tiny synthetic data source, random inputs and
variables, tolerance checks, an ops config and a jitted forward and backward
pass of a model."""

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

CLASSES = ('cat', 'dog', 'frog')


# --- Image folders -----------------------------------------------------------


def make_folder(root, per_class, classes=CLASSES, size=8, fmt='png', seed=0):
  """Writes root/<split>/<class>/<i:04d>.<fmt> for {split: images per class}.

  Each image is noise around its class's colour, so that the classes differ a
  little (a net can learn them) while every image is distinct. Returns
  {relative path: the uint8 pixels written}; a lossy `fmt` (JPEG) decodes to
  other pixels.
  """
  rng = np.random.default_rng(seed)
  pixels = {}
  for split, n in per_class.items():
    for c, cls in enumerate(classes):
      os.makedirs(os.path.join(root, split, cls))
      for i in range(n):
        rel = f'{split}/{cls}/{i:04d}.{fmt}'
        image = rng.normal(60 + 60 * c, 50, (size, size, 3)).clip(0, 255)
        image = image.astype(np.uint8)
        Image.fromarray(image).save(os.path.join(root, rel))
        pixels[rel] = image
  return pixels


def synthetic_data(image_size=8, train=200, test=50, seed=0):
  """Config overrides, as flattened keys, for a tiny built-in synthetic source.

  For `config.update_from_flattened_dict`, or `config_flags` for a command
  line. image_size 8 matches configs/test.py; every split needs at least one
  example per class (10).
  """
  return {'data.source': 'synthetic', 'data.synthetic_size': (train, test),
          'data.synthetic_image_size': image_size,
          'data.synthetic_seed': seed}


def config_flags(overrides):
  """{'data.source': 'x', ...} -> ['--config.data.source=x', ...].

  For a subprocess's argv (in a shell, quote them). Tuples are written as
  '(200,50)', which ml_collections' config flags parse back to a tuple.
  """
  def text(value):
    if isinstance(value, tuple):
      return f'({",".join(map(str, value))})'
    return str(value)
  return [f'--config.{key}={text(value)}' for key, value in overrides.items()]


# --- Random inputs and variables ---------------------------------------------


def normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


def random_variables(model, x, seed=0, **kwargs):
  """Variables shaped like `model.init`'s, filled with numpy randoms.

  Cheaper than `init` (no RNG program to compile) and, unlike `init`, gives
  batch-norm scales, offsets and running statistics that are not 1 and 0, so
  that a permutation of channels cannot go unnoticed.
  """
  rng = np.random.default_rng(seed)
  spec = jax.eval_shape(functools.partial(model.init, **kwargs),
                        jax.random.PRNGKey(0), x)

  def fill(path, a):
    name = path[-1].key
    if name == 'kernel':
      v = rng.standard_normal(a.shape) / math.sqrt(math.prod(a.shape[:-1]))
    elif name in ('scale', 'var'):
      v = rng.uniform(0.5, 1.5, a.shape)
    else:  # bias, mean
      v = 0.3 * rng.standard_normal(a.shape)
    return jnp.asarray(v, a.dtype)

  return jax.tree_util.tree_map_with_path(fill, spec)


# --- Tolerances --------------------------------------------------------------


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, *, absolute=False,
                 err_msg=''):
  """Elementwise; atol is relative to the reference's largest entry (when
  that is over 1), or taken as is with absolute=True."""
  expected = np.asarray(expected)
  scale = 1.0 if absolute else max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol,
                             atol=atol * scale, err_msg=err_msg)


def assert_trees_close(a, b, **tolerances):
  """The same tree structure, and every leaf `assert_close` (its keywords)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                          jax.tree.leaves(b)):
    assert_close(x, y, err_msg=jax.tree_util.keystr(path), **tolerances)


# --- Models and ops ----------------------------------------------------------


def ops_config(dtype='float32', **choices):
  """The parts of a config that ops.resolve and ops.compiler_options read."""
  return ml_collections.ConfigDict({'ops': choices, 'model': {'dtype': dtype}})


def run_with_grads(model, variables, x, train):
  """Output, batch stats and param gradients of sum(output * g), jitted."""
  def loss(params):
    y, state = model.apply({**variables, 'params': params}, x, train=train,
                           mutable=['batch_stats'])
    return jnp.sum(y * normal(11, y.shape)), (y, state)
  (_, (y, state)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables['params'])
  return y, state, grads
