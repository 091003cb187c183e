"""The airbench recipe's pieces (issue 26): the Inception net of its family,
the decoupled SGD and bias learning rate, the whitening stem, the one-cycle
ends, the alternating flip; each against a hand or numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import config_checks
import input_pipeline
import optim
import whitening
from configs import base
from models import build_model
from models.air_inception import module_widths


def air_config(**model):
  config = base.get_config()
  config.model.name = 'air_inception'
  config.model.update(dict(act='gelu', reduce_act='gelu', **model))
  return config


def param_count(model, size=32):
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jnp.zeros((1, size, size, 3)))
  return sum(np.prod(p.shape) for p in jax.tree.leaves(variables['params']))


# --- The network -------------------------------------------------------------


def test_plain_block_is_airbench93s_net():
  """block='conv' at widths 64/128/128 has airbench93's parameters, summed
  by hand from lib_airbench93.py's make_net93: the 2x2 whitening conv with
  bias, six 3x3 convs, a scale and a bias per batch-norm channel and the
  bias-free 128 -> 10 head."""
  convs = 9 * (24 * 64 + 64 * 64 + 64 * 128 + 3 * 128 * 128)
  expected = (4 * 3 * 24 + 24) + convs + 2 * (2 * 64 + 4 * 128) + 128 * 10
  model = build_model(air_config(block='conv', widths=(64, 128, 128)).model)
  assert param_count(model) == expected == 569_656


@pytest.mark.parametrize('width', [64, 96, 192, 100])
def test_module_widths_fill_the_output_width(width):
  c1, r3, c3, r5, c5, pool_proj = module_widths(width)
  assert c1 + c3 + c5 + pool_proj == width
  assert 0 < r5 < r3 < c3 and pool_proj > 0


@pytest.mark.parametrize('module', ['naive', 'reduced'])
def test_inception_net_maps_images_to_logits(module):
  model = build_model(air_config(module=module, widths=(16, 24, 24)).model)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  stem = variables['params']['whiten']['conv']
  assert stem['kernel'].shape == (2, 2, 3, 24) and stem['bias'].shape == (24,)


def test_pooled_conv_block_pools_before_its_norm():
  """pool=2: conv, 2x2 max-pool, then the batch norm over the pooled
  values and the activation (airbench's ConvGroup order), by hand."""
  from models import ConvBlock
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 7, 4))
  block = ConvBlock(6, 3, pool=2, norm_scale=False)
  variables = block.init(jax.random.PRNGKey(0), x)
  y, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
  kernel = variables['params']['conv']['kernel']
  conv = lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  pooled = lax.reduce_window(conv, -jnp.inf, lax.max, (1, 2, 2, 1),
                             (1, 2, 2, 1), 'VALID')  # (3, 3, 3, 6)
  mean, var = pooled.mean((0, 1, 2)), pooled.var((0, 1, 2))
  expected = jax.nn.relu((pooled - mean) / jnp.sqrt(var + 1e-5))
  assert y.shape == (3, 3, 3, 6)
  np.testing.assert_allclose(y, expected, atol=1e-5)


def test_stem_pool_first_moves_the_pool_and_keeps_the_function_unnormed():
  """Without norms, pooling before the stem's ReLU or after it is the same
  net (max-pool commutes with a non-decreasing activation): the same
  params, the same logits; with batch norms (training mode: the batch's
  statistics) the stem's statistics differ."""
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
  logits, trees = {}, {}
  for norm in ('none', 'batch'):
    for first in (False, True):
      model = build_model(air_config(stem_width=16, widths=(16, 24, 24),
                                     norm=norm, stem_pool_first=first).model)
      variables = model.init(jax.random.PRNGKey(0), x)
      trees[norm, first] = jax.tree.map(jnp.shape, variables)
      logits[norm, first], _ = model.apply(variables, x, train=True,
                                           mutable=['batch_stats'])
  assert trees['none', False] == trees['none', True]
  assert trees['batch', False] == trees['batch', True]
  scale = np.abs(logits['none', False]).max()  # Small: no norm rescales.
  np.testing.assert_allclose(logits['none', True], logits['none', False],
                             atol=1e-2 * scale)
  assert not np.allclose(logits['batch', True], logits['batch', False],
                         atol=1e-2 * np.abs(logits['batch', False]).max())


def test_naive_modules_grow_wider_than_reduced_ones():
  """The naive pool branch passes every input channel on."""
  shapes = {}
  for module in ('naive', 'reduced'):
    model = build_model(air_config(module=module, widths=(16, 24, 24)).model)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                               jnp.zeros((1, 32, 32, 3)))
    shapes[module] = variables['params']['head']['kernel'].shape[0]
  assert shapes['reduced'] == 24 and shapes['naive'] > 24


def test_whiten_needs_a_stem():
  config = base.get_config()
  config.whiten = True
  with pytest.raises(ValueError, match='whitening stem'):
    config_checks.check_values(config)


# --- Decoupled SGD, bias learning rate, frozen stem -------------------------


def torch_sgd_steps(p, grads, lr, weight_decay, momentum):
  """torch.optim.SGD(nesterov=True) as its documentation writes it, on a
  list of gradients: d = g + wd p; b = m b + d (b = d at first);
  d = d + m b; p = p - lr d."""
  buf = None
  for g in grads:
    d = g + weight_decay * p
    buf = d if buf is None else momentum * buf + d
    p = p - lr * (d + momentum * buf)
  return p


def decoupled_config(batch, **kw):
  config = base.get_config()
  config.update(dict(optimizer='sgd_decoupled', learning_rate=11.5,
                     weight_decay=0.0153, momentum=0.85, batch_size=batch,
                     schedule='onecycle', warmup_epochs=0.0,
                     lr_start_factor=1.0, lr_end_factor=1.0) | kw)
  return config


def run_optimizer(config, params, mean_grads, steps_per_epoch=100):
  tx, _ = optim.make_optimizer(config, steps_per_epoch, 1000)
  state = tx.init(params)
  for g in mean_grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_decoupled_sgd_matches_airbenchs_torch_arithmetic():
  """airbench (utils.py, train) sums the loss over the batch and gives
  torch's SGD lr / (1024 (1 + 1/(1-m))) and weight_decay wd B / that / lr.
  Our optimizer takes mean-loss gradients: three steps must land on the
  same params."""
  batch, m = 1024, 0.85
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=5)
  mean_grads = [rng.normal(size=5) for _ in range(3)]
  kilostep = 1024 * (1 + 1 / (1 - m))
  lr, wd = 11.5 / kilostep, 0.0153 * batch / kilostep
  expected = torch_sgd_steps(p0, [batch * g for g in mean_grads], lr, wd / lr,
                             m)
  got = run_optimizer(decoupled_config(batch), {'w': jnp.asarray(p0)},
                      [{'w': jnp.asarray(g)} for g in mean_grads])['w']
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_decoupled_sgd_moves_as_far_per_example_at_any_batch_size():
  """With a constant gradient and no momentum or decay, the distance moved
  after the same number of examples does not depend on the batch size."""
  moved = {}
  for batch in (256, 1024):
    config = decoupled_config(batch, momentum=0.0, weight_decay=0.0)
    steps = 4096 // batch
    moved[batch] = run_optimizer(config, {'w': jnp.zeros(3)},
                                 [{'w': jnp.ones(3)}] * steps)['w']
  np.testing.assert_allclose(moved[256], moved[1024], rtol=1e-6)
  assert moved[256][0] == pytest.approx(-4096 * 11.5 / 1024 / 2)


def test_bias_lr_scale_multiplies_only_the_norm_biases_steps():
  params = {'conv': {'kernel': jnp.ones((2, 2))},
            'bn': {'bias': jnp.ones(2), 'scale': jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  moved = {}
  for scale in (1.0, 64.0):
    config = decoupled_config(1024, momentum=0.0, weight_decay=0.0,
                              bias_lr_scale=scale)
    out = run_optimizer(config, params, [grads])
    moved[scale] = jax.tree.map(lambda a, b: b - a, params, out)
  ratio = jax.tree.map(lambda a, b: b / a, moved[1.0], moved[64.0])
  np.testing.assert_allclose(ratio['bn']['bias'], 64.0)
  np.testing.assert_allclose(ratio['bn']['scale'], 1.0)
  np.testing.assert_allclose(ratio['conv']['kernel'], 1.0)


def test_whitening_stem_kernel_is_frozen_and_bias_stops_after_its_epochs():
  params = {'whiten': {'conv': {'kernel': jnp.ones((2,)), 'bias': jnp.ones(2)}},
            'head': {'kernel': jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  config = decoupled_config(1024, whiten=True, whiten_bias_epochs=0.5,
                            momentum=0.0)
  tx, _ = optim.make_optimizer(config, 4, 100)  # Bias trained 2 steps.
  state, history = tx.init(params), [params]
  for _ in range(4):
    updates, state = tx.update(grads, state, history[-1])
    history.append(optax.apply_updates(history[-1], updates))
  kernels = [h['whiten']['conv']['kernel'][0] for h in history]
  biases = [h['whiten']['conv']['bias'][0] for h in history]
  heads = [h['head']['kernel'][0, 0] for h in history]
  assert len(set(map(float, kernels))) == 1
  assert biases[0] != biases[1] != biases[2] == biases[3] == biases[4]
  assert len(set(map(float, heads))) == 5


def test_onecycle_runs_from_start_factor_to_peak_to_end_factor():
  config = base.get_config()
  config.update(dict(schedule='onecycle', learning_rate=2.0,
                     warmup_epochs=2.0, lr_start_factor=0.2,
                     lr_end_factor=0.07))
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=100)
  assert float(schedule(0)) == pytest.approx(0.4)
  assert float(schedule(10)) == pytest.approx(0.4 + 0.5 * 1.6)
  assert float(schedule(20)) == pytest.approx(2.0)
  assert float(schedule(60)) == pytest.approx(2.0 - 0.5 * (2.0 - 0.14))
  assert float(schedule(100)) == pytest.approx(0.14)


def airbench_muon_step(kernel, grad, lr, steps=3):
  """One step of airbench94_muon.py's Muon on an HWIO kernel, in float64:
  rescale to norm sqrt(out), then subtract lr x the quintic Newton-Schulz
  iteration of the (out, in*kh*kw) gradient (its first step: the momentum
  buffer is the gradient)."""
  a, b, c = 3.4445, -4.7750, 2.0315
  g = np.asarray(grad, np.float64).transpose(3, 2, 0, 1)  # OIHW, as torch.
  x = g.reshape(len(g), -1)
  x = x / (np.linalg.norm(x) + 1e-7)
  wide = x.shape[0] <= x.shape[1]
  x = x if wide else x.T
  for _ in range(steps):
    m = x @ x.T
    x = a * x + (b * m + c * m @ m) @ x
  x = (x if wide else x.T).reshape(g.shape).transpose(2, 3, 1, 0)
  p = np.asarray(kernel, np.float64)
  return p * np.sqrt(p.shape[-1]) / np.linalg.norm(p) - lr * x


@pytest.mark.parametrize('shape', [(3, 3, 8, 16), (1, 1, 32, 8)])
def test_muon_step_matches_airbench94_muon(shape):
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  params = {'conv': {'kernel': jax.random.normal(keys[0], shape)}}
  grads = {'conv': {'kernel': jax.random.normal(keys[1], shape)}}
  config = decoupled_config(512, muon_lr=0.24)
  out = run_optimizer(config, params, [grads])['conv']['kernel']
  expected = airbench_muon_step(params['conv']['kernel'],
                                grads['conv']['kernel'], 0.24)
  np.testing.assert_allclose(out, expected, atol=2e-5)
  # Orthogonalised: every singular value of the step lies near lr.
  rescaled = airbench_muon_step(params['conv']['kernel'], grads['conv']['kernel'], 0.0)
  singular = np.linalg.svd((out - rescaled).reshape(-1, shape[-1]),
                           compute_uv=False)
  assert 0.24 * 0.5 < singular.min() and singular.max() < 0.24 * 1.5


def test_muon_takes_only_the_conv_kernels_outside_the_stem():
  params = {'whiten': {'conv': {'kernel': jnp.ones((2, 2, 3, 4))}},
            'conv': {'kernel': jnp.ones((3, 3, 4, 4)),
                     'bn': {'bias': jnp.ones(4)}},
            'head': {'kernel': jnp.ones((4, 10))}}
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
  plain = run_optimizer(decoupled_config(512), params, [grads, grads])
  with_muon = run_optimizer(decoupled_config(512, muon_lr=0.24), params,
                            [grads, grads])
  muon_kernel = with_muon['conv'].pop('kernel')
  assert not np.allclose(muon_kernel, plain['conv'].pop('kernel'))
  jax.tree.map(np.testing.assert_array_equal, with_muon, plain)


# --- Whitening and the alternating flip --------------------------------------


def test_whitening_kernel_decorrelates_patches_to_unit_variance():
  """Convolved with the images (lax, not the patches the kernel came from),
  the first half of the channels has covariance lambda / (lambda + eps):
  about the identity, and the second half is their negative."""
  rng = np.random.default_rng(0)
  mixing = rng.normal(size=(3, 3))  # Correlated channels, smooth in space.
  images = rng.normal(size=(64, 12, 12, 3)) @ mixing
  images = (images + np.roll(images, 1, axis=1)).astype(np.float32)
  kernel = whitening.whitening_kernel(images, epsilon=1e-6)
  out = lax.conv_general_dilated(images, kernel, (1, 1), 'VALID',
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  out = np.asarray(out, np.float64).reshape(-1, 24)
  covariance = out[:, :12].T @ out[:, :12] / len(out)
  np.testing.assert_allclose(covariance, np.eye(12), atol=2e-3)
  np.testing.assert_allclose(out[:, 12:], -out[:, :12], rtol=1e-5, atol=1e-5)


def test_set_stem_refuses_a_kernel_of_another_shape():
  params = {'whiten': {'conv': {'kernel': np.zeros((2, 2, 3, 24)),
                                'bias': np.zeros(24)}}}
  out = whitening.set_stem(params, np.ones((2, 2, 3, 24), np.float32))
  assert out['whiten']['conv']['kernel'].sum() == 2 * 2 * 3 * 24
  with pytest.raises(ValueError, match='shape'):
    whitening.set_stem(params, np.ones((3, 3, 3, 24)))


def test_alternating_flip_mirrors_each_image_once_every_two_epochs():
  n, batch = 1000, 100
  per_epoch = []
  for epoch in range(3):
    flips = np.zeros(n, bool)
    for step in range(epoch * 10, epoch * 10 + 10):
      idx = input_pipeline.batch_indices(n, batch, step, seed=3)
      flips[idx] = input_pipeline.alternating_flips(idx, step, n, batch, 3)
    per_epoch.append(flips)
  assert 400 < per_epoch[0].sum() < 600
  np.testing.assert_array_equal(per_epoch[1], ~per_epoch[0])
  np.testing.assert_array_equal(per_epoch[2], per_epoch[0])


def test_mirror_flips_only_the_chosen_images():
  images = np.arange(2 * 2 * 3 * 1).reshape(2, 2, 3, 1)
  out = input_pipeline.mirror(images, np.array([True, False]))
  np.testing.assert_array_equal(out[0], images[0, :, ::-1])
  np.testing.assert_array_equal(out[1], images[1])


def test_batch_norm_without_scale_matches_flax_and_has_no_scale_param():
  from ops.norm import BatchNorm
  from flax import linen as nn
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 3, 5)) * 3 + 1
  ours = BatchNorm(use_scale=False)
  ref = nn.BatchNorm(use_running_average=False, use_scale=False,
                     momentum=0.99, epsilon=1e-5)
  v_ours, v_ref = ours.init(jax.random.PRNGKey(0), x), ref.init(
      jax.random.PRNGKey(0), x)
  assert set(v_ours['params']) == set(v_ref['params']) == {'bias'}
  y = ours.apply(v_ours, x, mutable=['batch_stats'])[0]
  y_ref = ref.apply(v_ref, x, mutable=['batch_stats'])[0]
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  model = build_model(air_config(block='conv', widths=(64, 128, 128),
                                 norm_scale=False).model)
  assert param_count(model) == 569_656 - 2 * 64 - 4 * 128


# --- The trainer's parts: lookahead, translate TTA, the stem's init ----------

import trainer  # noqa: E402
from configs import test as test_config  # noqa: E402
from tests.helpers import assert_trees_close  # noqa: E402

STATS = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))


def tiny(**overrides):
  config = test_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def steps_of(config, total, batch_seed=0):
  """(jitted step, fresh state, batch) of configs/test.py's network."""
  runner = trainer.Runner(config, STATS, build_model(config.model), total)
  tx, _ = optim.make_optimizer(config, 10, total)
  rng = np.random.default_rng(batch_seed)
  images = rng.integers(0, 256, (config.batch_size, 8, 8, 3), np.uint8)
  labels = rng.integers(0, 10, (config.batch_size,), np.int32)
  return runner.train_step, runner.create_state(tx), images, labels, runner


def live(state):
  return jax.device_get({'params': state.params,
                         'batch_stats': state.batch_stats})


def test_lookahead_follows_airbenchs_recurrence():
  """Five steps with lookahead every 2 against the plain step with the
  recurrence applied by hand in numpy between steps: slow += (1 - d)
  (live - slow) and live = slow at steps 2 and 4, d = 0.5 (t / 5)^3, and
  live = slow after the last step."""
  total, every, base_decay = 5, 2, 0.5
  config = tiny(lookahead_every=every, lookahead_decay=base_decay,
                learning_rate=0.3)
  step, state, images, labels, runner = steps_of(config, total)
  plain_step, plain, *_ = steps_of(tiny(learning_rate=0.3), total)
  key = runner.seed_key
  slow = live(plain)
  for t in range(1, total + 1):
    state, _ = step(state, images, labels, key)
    plain, _ = plain_step(plain, images, labels, key)
    weights = live(plain)
    if t % every == 0:
      d = base_decay * (t / total) ** 3
      slow = jax.tree.map(lambda s, w: s + (1 - d) * (w - s), slow, weights)
    if t % every == 0 or t == total:
      weights = slow
      plain = plain.replace(params=weights['params'],
                            batch_stats=weights['batch_stats'])
    assert_trees_close(live(state), weights, rtol=1e-5, atol=1e-6)
  assert_trees_close(live(state), slow, rtol=1e-5, atol=1e-6)


def test_translate_tta_averages_airbenchs_six_views():
  config = tiny()
  model = build_model(config.model)
  x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(x))
  apply = lambda v: np.asarray(model.apply(variables, jnp.asarray(v)))
  mirror = lambda v: (apply(v) + apply(v[:, :, ::-1])) / 2
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  expected = (mirror(x) / 2 + mirror(padded[:, :8, :8]) / 4 +
              mirror(padded[:, 2:, 2:]) / 4)
  got = trainer.eval_logits(variables, jnp.asarray(x), model=model, flip=True,
                            translate=1)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_whitened_run_starts_from_the_datas_kernel():
  config = air_config(widths=(8, 8, 8))
  config.whiten = True
  config.data.source = 'synthetic'
  config.data.synthetic_size = (60, 10)
  train = input_pipeline.load_split(config.data, 'train')
  kernel = trainer.stem_kernel(config, train, STATS)
  images = (train.images.astype(np.float32) / 255 - STATS[0]) / STATS[1]
  # Float rounding of the normalization, amplified by 1 / sqrt(eigenvalue).
  np.testing.assert_allclose(kernel, whitening.whitening_kernel(images),
                             rtol=1e-3, atol=1e-3)
  runner = trainer.Runner(config, STATS, build_model(config.model), 10)
  state = runner.create_state(optim.make_optimizer(config, 1, 10)[0], kernel)
  np.testing.assert_allclose(state.params['whiten']['conv']['kernel'], kernel)


def test_tta_final_only_scores_plain_images_until_the_last_evaluation():
  config = tiny(eval_flip=True, eval_translate=1, eval_tta_final_only=True)
  model = build_model(config.model)
  runner = trainer.Runner(config, STATS, model, 10)
  tx, _ = optim.make_optimizer(config, 10, 10)
  state = runner.create_state(tx)
  split = input_pipeline.load_split(config.data, 'test')
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  x = input_pipeline.preprocess_eval(split.images, image_size=8,
                                     mean=STATS[0], std=STATS[1])
  labels = np.asarray(split.labels)
  for final, flip, translate in ((False, False, 0), (True, True, 1)):
    logits = trainer.eval_logits(variables, x, model=model, flip=flip,
                                 translate=translate)
    expected = float(np.mean(np.asarray(logits).argmax(-1) == labels))
    got = runner.evaluate(state, split, final=final)['accuracy']
    assert got == pytest.approx(expected)
