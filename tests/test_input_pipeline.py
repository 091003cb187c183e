"""Tests for input_pipeline: tiny image folders and synthetic data made here,
no network."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import types
import zipfile

from absl import flags
import jax
from ml_collections import config_flags as ml_config_flags
import numpy as np
from PIL import Image
import pytest

from configs import base
import input_pipeline
import local_data
import rundir
from tests.helpers import CLASSES, config_flags, make_folder, synthetic_data

PER_CLASS = 10
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pack(folder, kind):
  """`folder`, or a .tar.gz/.tgz (with a wrapping folder) or .zip of it."""
  if kind == 'dir':
    return str(folder)
  path = f'{folder}.{kind}'
  if kind in ('tar.gz', 'tgz'):
    with tarfile.open(path, 'w:gz') as archive:
      archive.add(folder, arcname='cifar')  # cifar/train/cat/0000.png
  else:
    with zipfile.ZipFile(path, 'w') as archive:
      for file in sorted(folder.rglob('*.*')):
        archive.write(file, file.relative_to(folder))
  return path


def make_source(tmp_path, kind, splits=('train',)):
  """Returns (source path, {relative path: pixels}): PER_CLASS images of
  each of the CLASSES in each split."""
  pixels = make_folder(tmp_path / 'images', dict.fromkeys(splits, PER_CLASS))
  return pack(tmp_path / 'images', kind), pixels


def config(source, tmp_path, **overrides):
  cfg = input_pipeline.default_config()
  cfg.source = source
  cfg.cache_dir = str(tmp_path / 'cache')
  cfg.num_workers = 1
  cfg.update(overrides)
  return cfg


def rows(images):
  return {image.tobytes() for image in images}


# --- Local sources -----------------------------------------------------------


@pytest.mark.parametrize('kind', ['dir', 'tar.gz', 'tgz', 'zip'])
def test_local_source_loads_labels_and_exact_pixels(tmp_path, kind):
  source, pixels = make_source(tmp_path, kind)
  split = input_pipeline.load_split(config(source, tmp_path), 'train')

  assert split.images.shape == (30, 8, 8, 3) and split.images.dtype == np.uint8
  assert split.labels.dtype == np.int32
  assert split.class_names == list(CLASSES) and split.name == 'train'
  expected = [pixels[f'train/{c}/{i:04d}.png'] for c in CLASSES
              for i in range(PER_CLASS)]  # Sorted by class, then file name.
  np.testing.assert_array_equal(split.images, np.stack(expected))
  np.testing.assert_array_equal(split.labels, np.repeat([0, 1, 2], PER_CLASS))


def test_uppercase_jpeg_extension_is_loaded(tmp_path):
  make_folder(tmp_path / 'images', {'train': PER_CLASS}, fmt='JPEG')
  split = input_pipeline.load_split(config(str(tmp_path / 'images'), tmp_path),
                                    'train')
  assert split.images.shape == (30, 8, 8, 3)


def test_percent_splits_are_stratified_disjoint_covering(tmp_path):
  source, _ = make_source(tmp_path, 'dir')
  cfg = config(source, tmp_path)
  full = input_pipeline.load_split(cfg, 'train')
  head = input_pipeline.load_split(cfg, 'train[:90%]')
  tail = input_pipeline.load_split(cfg, 'train[90%:]')
  middle = input_pipeline.load_split(cfg, 'train[10%:20%]')

  assert [len(s.labels) for s in (head, tail, middle)] == [27, 3, 3]
  assert not rows(head.images) & rows(tail.images)
  assert rows(head.images) | rows(tail.images) == rows(full.images)
  for c in range(len(CLASSES)):  # The same range of every class.
    in_class = full.images[full.labels == c]
    np.testing.assert_array_equal(head.images[head.labels == c], in_class[:9])
    np.testing.assert_array_equal(tail.images[tail.labels == c], in_class[9:])
    np.testing.assert_array_equal(middle.images[middle.labels == c],
                                  in_class[1:2])
  for same_as_tail in ('train[90%:]', 'train[-10%:]'):  # Deterministic.
    again = input_pipeline.load_split(cfg, same_as_tail)
    np.testing.assert_array_equal(again.images, tail.images)


def test_multiprocess_decode_matches_serial(tmp_path, monkeypatch, caplog):
  source, _ = make_source(tmp_path, 'dir')
  serial = input_pipeline.load_split(config(source, tmp_path), 'train')
  monkeypatch.setattr(local_data, '_DECODE_CHUNK', 4)  # 8 chunks.
  parallel = input_pipeline.load_split(
      config(source, tmp_path, cache_dir=str(tmp_path / 'cache2'),
             num_workers=2), 'train')
  np.testing.assert_array_equal(parallel.images, serial.images)
  assert 'Decoding processes died' not in caplog.text  # No serial fallback.


@pytest.mark.parametrize('kind', ['dir', 'tar.gz'])
def test_cache_hit_and_invalidation(tmp_path, monkeypatch, kind):
  source, _ = make_source(tmp_path, kind)
  cfg = config(source, tmp_path)
  first = input_pipeline.load_split(cfg, 'train')

  def fail(*args):
    raise AssertionError('decoded although cached')
  monkeypatch.setattr(local_data, '_decode_images', fail)
  second = input_pipeline.load_split(cfg, 'train[:90%]')  # Same cache file.
  np.testing.assert_array_equal(second.images,
                                first.images[np.arange(30) % PER_CLASS < 9])

  # Changing the source must re-decode.
  Image.new('RGB', (8, 8), 'red').save(tmp_path / 'images/train/dog/0003.png')
  pack(tmp_path / 'images', kind)
  with pytest.raises(AssertionError, match='decoded although cached'):
    input_pipeline.load_split(cfg, 'train')
  monkeypatch.undo()
  changed = input_pipeline.load_split(cfg, 'train')
  assert (changed.images[13] == [255, 0, 0]).all()


@pytest.mark.parametrize('kind', ['dir', 'zip'])
def test_corrupt_image_error_names_the_file(tmp_path, kind):
  make_folder(tmp_path / 'images', {'train': PER_CLASS})
  (tmp_path / 'images/train/dog/0003.png').write_bytes(b'not a png')
  source = pack(tmp_path / 'images', kind)
  with pytest.raises(ValueError, match=r'train/dog/0003\.png.*remove or repl'):
    input_pipeline.load_split(config(source, tmp_path), 'train')


def test_missing_split_lists_present_splits(tmp_path):
  source, _ = make_source(tmp_path, 'dir', splits=('train', 'extra'))
  with pytest.raises(input_pipeline.MissingSplitError,
                     match=r"no split 'test'.*\['extra', 'train'\]"
                     r".*train\[:90%\]"):
    input_pipeline.load_split(config(source, tmp_path), 'test[:50%]')


def test_mixed_sizes_error_names_file_and_sizes(tmp_path):
  make_folder(tmp_path / 'images', {'train': PER_CLASS})
  Image.new('RGB', (16, 12)).save(tmp_path / 'images/train/frog/0005.png')
  with pytest.raises(ValueError, match=r"train/frog/0005\.png.*16x12.*8x8"):
    input_pipeline.load_split(config(str(tmp_path / 'images'), tmp_path),
                              'train')


@pytest.mark.parametrize('split, message', [
    ('train[50%:50%]', 'no examples'),
    ('train[:90]', 'Cannot parse'),
    ('train[:150%]', 'percents'),
])
def test_bad_or_empty_split(tmp_path, split, message):
  source, _ = make_source(tmp_path, 'dir')
  with pytest.raises(ValueError, match=message):
    input_pipeline.load_split(config(source, tmp_path), split)


def test_missing_source_error(tmp_path):
  with pytest.raises(input_pipeline.DataError, match='does not exist'):
    input_pipeline.load_split(config(str(tmp_path / 'nope'), tmp_path), 'train')


def test_import_does_not_import_tensorflow():
  code = 'import sys, input_pipeline; assert "tensorflow" not in sys.modules'
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=os.path.dirname(os.path.dirname(__file__)))


def test_local_data_imports_neither_jax_nor_ml_collections():
  """The PyTorch anchor's venv has neither: it reads data through local_data."""
  code = ('import sys, local_data; '
          'assert not {"jax", "ml_collections"} & set(sys.modules)')
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=os.path.dirname(os.path.dirname(__file__)))


def test_default_config_is_the_base_configs_data_block():
  cfg = input_pipeline.default_config()
  assert cfg.to_dict() == base.get_config().data.to_dict()
  assert (cfg.train_split, cfg.eval_split, cfg.test_split) == (
      'train[:90%]', 'train[90%:]', 'test')
  cfg.num_workers = 7
  assert input_pipeline.default_config().num_workers == 2  # A fresh copy.


def fake_tfds(monkeypatch, images, labels, class_names):
  """Makes `tfds.builder` serve (images, labels) as split 'train'.

  Returns the list of split names that `as_dataset` is asked for.
  """
  tfds = pytest.importorskip('tensorflow_datasets')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  requested = []

  def as_dataset(split, as_supervised):
    assert as_supervised
    requested.append(split)
    return tf.data.Dataset.from_tensor_slices((images, labels))

  def builder(name, data_dir):
    del data_dir
    assert name == 'cifar10'
    return types.SimpleNamespace(
        is_prepared=lambda: True, as_dataset=as_dataset,
        info=types.SimpleNamespace(
            splits={'train': None}, supervised_keys=('image', 'label'),
            features={'label': types.SimpleNamespace(names=class_names)}))
  monkeypatch.setattr(tfds, 'builder', builder)
  return requested


def test_tfds_percent_split_selects_what_a_local_folder_does(tmp_path,
                                                             monkeypatch):
  # The same images from both sources, stored sorted by class (a file order
  # in which TFDS's own slicing would take whole classes).
  source, _ = make_source(tmp_path, 'dir')
  local_cfg = config(source, tmp_path)
  full = input_pipeline.load_split(local_cfg, 'train')
  requested = fake_tfds(monkeypatch, full.images, full.labels.astype(np.int64),
                        list(CLASSES))
  tfds_cfg = config('tfds', tmp_path)

  for split, first, last in (('train[:50%]', 0, 5), ('train[50%:]', 5, 10),
                             ('train[:90%]', 0, 9), ('train[-10%:]', 9, 10)):
    from_tfds = input_pipeline.load_split(tfds_cfg, split)
    local = input_pipeline.load_split(local_cfg, split)
    # Positions first..last-1 of every class, class by class.
    expected = [c * PER_CLASS + i for c in range(len(CLASSES))
                for i in range(first, last)]
    for got in (from_tfds, local):
      np.testing.assert_array_equal(got.images, full.images[expected])
      np.testing.assert_array_equal(got.labels,
                                    np.repeat([0, 1, 2], last - first))
      assert got.class_names == list(CLASSES) and got.name == split
      assert got.labels.dtype == np.int32
  assert set(requested) == {'train'}  # Whole split from TFDS, sliced here.


def test_tfds_percent_split_keeps_stored_order_of_mixed_classes(tmp_path,
                                                                monkeypatch):
  labels = np.array([2, 0, 1, 0, 0, 2, 1, 0, 2, 0])  # 5, 2 and 3 per class.
  images = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None, None],
                           (10, 4, 4, 3)).copy()  # Image i is all i.
  fake_tfds(monkeypatch, images, labels, ['a', 'b', 'c'])
  cfg = config('tfds', tmp_path)

  # Per class, the first n * 50 // 100 in stored order: class 0 (at 1, 3, 4,
  # 7, 9) gives 1, 3; class 1 (at 2, 6) gives 2; class 2 (at 0, 5, 8) gives 0.
  for split, expected in (('train[:50%]', [0, 1, 2, 3]),
                          ('train[50%:]', [4, 5, 6, 7, 8, 9]),
                          ('train', list(range(10)))):
    got = input_pipeline.load_split(cfg, split)
    np.testing.assert_array_equal(got.images[:, 0, 0, 0], expected)
    np.testing.assert_array_equal(got.labels, labels[expected])
  with pytest.raises(input_pipeline.MissingSplitError,
                     match=r"no split 'test'.*\['train'\]"):
    input_pipeline.load_split(cfg, 'test[:50%]')


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  # As if online (the download server resolves): mock_data fakes the rest.
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *args, **kwargs: [])
  cfg = config('tfds', tmp_path, data_dir=str(tmp_path / 'tfds'))
  with tfds.testing.mock_data(num_examples=12):
    full = input_pipeline.load_split(cfg, 'train')
    half = input_pipeline.load_split(cfg, 'train[:50%]')
  assert full.images.shape == (12, 32, 32, 3)
  assert full.images.dtype == np.uint8 and full.labels.dtype == np.int32
  assert len(full.class_names) == 10 and full.labels.max() < 10
  counts = np.bincount(full.labels, minlength=10)
  np.testing.assert_array_equal(np.bincount(half.labels, minlength=10),
                                counts // 2)


def test_tfds_failure_explains_manual_download_and_local_copy(
    tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')

  def offline(*args, **kwargs):
    raise ConnectionError('no internet')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      offline)
  # The server's name resolves: the download itself fails.
  monkeypatch.setattr(socket, 'getaddrinfo', lambda *args, **kwargs: [])
  cfg = config('tfds', tmp_path, data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(RuntimeError) as error:
    input_pipeline.load_split(cfg, 'train')
  message = str(error.value)
  assert 'no internet' in message and 'cifar-10-binary.tar.gz' in message
  assert str(tmp_path / 'tfds/downloads/manual') in message
  assert ('--config.data.source=PATH/TO/cifar10'
          in message)


# --- Synthetic source ------------------------------------------------------

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck']
# The first 16 hex digits of the sha256 of synthetic('test', train=10, test=10).
GOLDEN_DIGEST = 'f700f982ffb07415'


def synthetic(split, **kwargs):
  """`split` of the synthetic source of `synthetic_data(**kwargs)`."""
  config = base.get_config()
  config.update_from_flattened_dict(synthetic_data(**kwargs))
  return input_pipeline.load_split(config.data, split)


def test_synthetic_shapes_dtypes_and_balanced_classes():
  train, test = synthetic('train'), synthetic('test')  # 8x8, 200 and 50.
  assert train.images.shape == (200, 8, 8, 3) and test.images.shape[0] == 50
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  assert train.class_names == test.class_names == CIFAR10_CLASSES
  assert train.name == 'train' and train.num_classes == 10
  np.testing.assert_array_equal(np.bincount(train.labels), [20] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [5] * 10)
  assert len(rows(train.images)) == 200  # No two images alike,
  assert not rows(train.images) & rows(test.images)  # nor shared by splits.
  assert train.images.std() > 20  # Not flat,
  assert np.isin(train.images, (0, 255)).mean() < 0.05  # and rarely clipped.
  # The base config's defaults: CIFAR's 32x32.
  config = base.get_config().data
  config.source, config.synthetic_size = 'synthetic', (10, 10)
  assert input_pipeline.load_split(config, 'test').images.shape == (
      10, 32, 32, 3)


def test_synthetic_is_deterministic_and_seeded():
  first, again = synthetic('train'), synthetic('train')
  np.testing.assert_array_equal(first.images, again.images)
  np.testing.assert_array_equal(first.labels, again.labels)
  saved = json.loads(json.dumps(synthetic_data()))  # As in config.json:
  config = base.get_config()  # the tuple comes back a list.
  config.update_from_flattened_dict(saved)
  from_json = input_pipeline.load_split(config.data, 'train')
  np.testing.assert_array_equal(from_json.images, first.images)
  other = synthetic('train', seed=1)
  np.testing.assert_array_equal(other.labels, first.labels)
  assert not rows(other.images) & rows(first.images)
  # Frozen bytes: a change to the generator changes the data of every
  # synthetic run, which configs cannot show; change this only deliberately.
  tiny = synthetic('test', train=10, test=10)
  assert hashlib.sha256(tiny.images.tobytes()).hexdigest()[:16] == (
      GOLDEN_DIGEST)


def test_synthetic_percent_splits_partition_train_per_class():
  full = synthetic('train')
  head, tail = synthetic('train[:90%]'), synthetic('train[90%:]')
  np.testing.assert_array_equal(np.bincount(head.labels), [18] * 10)
  np.testing.assert_array_equal(np.bincount(tail.labels), [2] * 10)
  assert not rows(head.images) & rows(tail.images)
  assert rows(head.images) | rows(tail.images) == rows(full.images)
  # Labels cycle through the classes, so the first 90% of every class is
  # the first 90% of the split.
  np.testing.assert_array_equal(head.images, full.images[:180])
  np.testing.assert_array_equal(tail.images, full.images[180:])


def nearest_class_mean_accuracy(train_x, train_y, test_x, test_y):
  """Test accuracy of the nearest (Euclidean) mean of each class's train
  features: a reference classifier, independent of the project's models."""
  flat = lambda x: x.reshape(len(x), -1).astype(np.float64)
  means = np.stack([flat(train_x)[train_y == c].mean(0) for c in range(10)])
  distances = ((flat(test_x)[:, None] - means) ** 2).sum(-1)
  return (distances.argmin(1) == test_y).mean()


def test_synthetic_classes_are_learnable_from_shape_not_colour():
  train = synthetic('train', image_size=32, train=1000, test=500)
  test = synthetic('test', image_size=32, train=1000, test=500)
  learned = nearest_class_mean_accuracy(train.images, train.labels,
                                        test.images, test.labels)
  shuffled = nearest_class_mean_accuracy(
      train.images, np.random.default_rng(0).permutation(train.labels),
      test.images, test.labels)
  colour = nearest_class_mean_accuracy(  # Each image's mean colour only.
      train.images.mean((1, 2)), train.labels, test.images.mean((1, 2)),
      test.labels)
  assert learned > 0.35  # Chance: 0.1.
  assert shuffled < 0.2 and colour < 0.2


def test_synthetic_unknown_split_names_train_and_test():
  with pytest.raises(input_pipeline.MissingSplitError,
                     match=r"synthetic.*no split 'validation'.*"
                     r"\['test', 'train'\]"):
    synthetic('validation[:50%]')


@pytest.mark.parametrize('key, value, message', [
    ('synthetic_size', (5, 100), r'synthetic_size=\(5, 100\).*at least 10'),
    ('synthetic_size', (100,), r'synthetic_size=\(100,\).*\(train, test\)'),
    ('synthetic_image_size', 4, r'synthetic_image_size=4.*>= 5'),
    ('synthetic_seed', -1, r'synthetic_seed=-1.*>= 0'),
])
def test_synthetic_bad_settings_name_the_key(key, value, message):
  config = base.get_config().data
  config.source = 'synthetic'
  config[key] = value  # As a config file or a flag could set it.
  with pytest.raises(input_pipeline.DataError, match=message):
    input_pipeline.load_split(config, 'train')


def test_synthetic_data_flags_parse_to_the_overrides():
  overrides = synthetic_data(image_size=8, train=30, test=20, seed=3)
  argv = ['prog', f'--config={os.path.join(REPO, "configs", "test.py")}',
          *config_flags(overrides)]
  flag_values = flags.FlagValues()
  ml_config_flags.DEFINE_config_file('config', flag_values=flag_values,
                                     sys_argv=argv)
  flag_values(argv)
  parsed = rundir.flatten(flag_values.config.to_dict())
  assert {key: parsed[key] for key in overrides} == overrides


def test_dataset_stats_match_numpy():
  images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), np.uint8)
  split = input_pipeline.Split(images, np.zeros(5, np.int32), ['a'], 'train')
  mean, std = input_pipeline.dataset_stats(split)
  assert mean.dtype == std.dtype == np.float32 and mean.shape == (3,)
  np.testing.assert_allclose(mean, (images / 255).mean((0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, (images / 255).std((0, 1, 2)), rtol=1e-5)


# --- Augmentation ------------------------------------------------------------

IMAGES = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 3), np.uint8)
MEAN = np.array([0.5, 0.4, 0.3], np.float32)
STD = np.array([0.2, 0.25, 0.3], np.float32)


def normalized(images):
  return (images.astype(np.float32) / 255 - MEAN) / STD


def test_augment_without_knobs_only_normalizes():
  out = input_pipeline.augment_batch(
      jax.random.key(0), IMAGES, image_size=8, mean=MEAN, std=STD,
      crop_padding=0, flip=False, random_crop=False)
  assert out.shape == (16, 8, 8, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, normalized(IMAGES), rtol=1e-6, atol=1e-6)
  unnormalized = input_pipeline.augment_batch(
      jax.random.key(0), IMAGES, image_size=8, mean=None, std=None,
      crop_padding=0, flip=False, random_crop=False)
  np.testing.assert_allclose(unnormalized, IMAGES / 255, rtol=1e-6)


def test_augment_flip_mirrors_some_examples():
  out = input_pipeline.augment_batch(
      jax.random.key(0), IMAGES, image_size=8, mean=None, std=None,
      crop_padding=0, flip=True, random_crop=False)
  out = np.asarray(out) * 255
  flipped = [np.allclose(o, x[:, ::-1], atol=1e-3) for o, x in zip(out, IMAGES)]
  same = [np.allclose(o, x, atol=1e-3) for o, x in zip(out, IMAGES)]
  assert all(f != s for f, s in zip(flipped, same))  # Exactly one holds.
  assert any(flipped) and any(same)


def test_augment_random_crop_is_window_of_reflect_padded_image():
  out = input_pipeline.augment_batch(
      jax.random.key(3), IMAGES, image_size=8, mean=None, std=None,
      crop_padding=2, flip=False, random_crop=True)
  out = np.rint(np.asarray(out) * 255).astype(np.uint8)
  offsets = set()
  for o, x in zip(out, IMAGES):
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode='reflect')  # (12, 12, 3)
    windows = [(i, j) for i in range(5) for j in range(5)
               if (padded[i:i + 8, j:j + 8] == o).all()]
    assert windows
    offsets.update(windows)
  assert len(offsets) > 1  # Not one fixed crop.


def test_preprocess_eval_center_crops_and_normalizes():
  out = input_pipeline.preprocess_eval(IMAGES, image_size=4, mean=MEAN, std=STD)
  assert out.shape == (16, 4, 4, 3)
  np.testing.assert_allclose(out, normalized(IMAGES[:, 2:6, 2:6]), rtol=1e-6,
                             atol=1e-6)


# --- Batching ----------------------------------------------------------------


def test_batch_indices_deterministic_and_seeded():
  a = input_pipeline.batch_indices(100, 8, step=17, seed=3)
  np.testing.assert_array_equal(a, input_pipeline.batch_indices(100, 8, 17, 3))
  assert not np.array_equal(a, input_pipeline.batch_indices(100, 8, 17, 4))


def test_one_epoch_is_a_permutation_subset():
  steps = input_pipeline.steps_per_epoch(100, 8)
  assert steps == 12
  for epoch in range(2):
    seen = np.concatenate([input_pipeline.batch_indices(100, 8, s, seed=0)
                           for s in range(epoch * steps, (epoch + 1) * steps)])
    assert len(seen) == len(set(seen)) == 96 and seen.max() < 100
    if epoch == 0:
      first = seen
  assert not np.array_equal(first, seen)  # A new order every epoch.


def test_process_shards_concatenate_to_global_batch():
  global_batch = input_pipeline.batch_indices(100, 8, 5, seed=1)
  shards = [input_pipeline.batch_indices(100, 8, 5, seed=1, process_index=i,
                                         process_count=4) for i in range(4)]
  assert all(s.shape == (2,) for s in shards)
  np.testing.assert_array_equal(np.concatenate(shards), global_batch)
  with pytest.raises(ValueError, match='divide'):
    input_pipeline.batch_indices(100, 8, 5, seed=1, process_count=3)


def test_eval_batches_cover_every_example_once():
  batches = list(input_pipeline.eval_batches(10, 4))
  assert len(batches) == 3
  assert all(idx.shape == mask.shape == (4,) for idx, mask in batches)
  valid = np.concatenate([idx[mask] for idx, mask in batches])
  np.testing.assert_array_equal(valid, np.arange(10))
  assert all((idx < 10).all() for idx, _ in batches)  # Safe to gather.
