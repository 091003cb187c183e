"""Times the input pipeline per batch: host fetch (indices + gather) + augment.

  python benchmarks/bench_input.py [--json] [--source=PATH] [--batch_size=128]

Without --source it uses random uint8 data of CIFAR-10's shape (50000 x
32x32x3). Each of `--steps` batches is fetched as train.py does (shuffled
indices, then a gather from the uint8 array) and augmented by the jitted
`input_pipeline.augment_batch` (the first batch compiles and is not timed).
Prints the source, its size and load time, and the median time per batch of
the fetch, the augmentation and both, with the images/s that gives, for
comparison with the train step's time; with --json, one JSON object of
those figures.
"""

import json
import time

from absl import app, flags
import jax
import numpy as np

from benchmarks import benchlib  # noqa: F401  (defines --json)
import input_pipeline

flags.DEFINE_string('source', None, 'Image folder or archive; default: '
                    'random data.')
flags.DEFINE_string('split', 'train', 'Split of --source.',
                    allow_override=True)  # eval.py defines --split too.
flags.DEFINE_string('cache_dir', None, 'Default ~/.cache/pointwise.')
flags.DEFINE_integer('batch_size', 128, 'Batch size.')
flags.DEFINE_integer('steps', 200, 'Timed batches.',
                     allow_override=True)  # profile_step.py's: traced steps.
FLAGS = flags.FLAGS


def load(source: str | None, split: str = 'train',
         cache_dir: str | None = None) -> tuple[input_pipeline.Split, float]:
  """(split, seconds load_split took); random data without a source."""
  if not source:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50000, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, 50000, np.int32)
    return input_pipeline.Split(images, labels, list('0123456789'),
                                'random'), 0.0
  cfg = input_pipeline.default_config()
  cfg.source = source
  cfg.cache_dir = cache_dir
  start = time.perf_counter()
  loaded = input_pipeline.load_split(cfg, split)
  return loaded, time.perf_counter() - start


def main(argv):
  del argv
  split, load_s = load(FLAGS.source, FLAGS.split, FLAGS.cache_dir)
  images = split.images  # (N, H, W, 3) uint8
  description = f'{FLAGS.source}:{split.name}' if FLAGS.source else 'random'
  mean, std = input_pipeline.dataset_stats(split)
  image_size = images.shape[1]

  @jax.jit
  def augment(rng, step, batch):  # As a train step would: key folded in.
    return input_pipeline.augment_batch(
        jax.random.fold_in(rng, step), batch, image_size=image_size,
        mean=mean, std=std)

  rng = jax.random.key(0)
  fetch_s, augment_s = [], []
  for step in range(FLAGS.steps + 1):  # Step 0 compiles; not timed.
    start = time.perf_counter()
    idx = input_pipeline.batch_indices(len(images), FLAGS.batch_size, step,
                                       seed=0)
    batch = images[idx]  # (B, H, W, 3) uint8
    fetched = time.perf_counter()
    augment(rng, step, batch).block_until_ready()
    if step:
      fetch_s.append(fetched - start)
      augment_s.append(time.perf_counter() - fetched)

  fetch_ms = 1e3 * float(np.median(fetch_s))
  augment_ms = 1e3 * float(np.median(augment_s))
  total_ms = 1e3 * float(np.median(np.add(fetch_s, augment_s)))
  result = dict(
      source=description, num_examples=len(images),
      image_shape=list(images.shape[1:]), load_s=round(load_s, 3),
      class_names=split.class_names, mean=[round(float(m), 4) for m in mean],
      std=[round(float(s), 4) for s in std],
      batch_size=FLAGS.batch_size, steps=FLAGS.steps,
      device=str(jax.devices()[0].platform), host_fetch_ms=round(fetch_ms, 4),
      augment_ms=round(augment_ms, 4), total_ms=round(total_ms, 4),
      images_per_s=round(FLAGS.batch_size / total_ms * 1e3))
  if FLAGS.json:
    print(json.dumps(result))
  else:
    print(f'{description}: {len(images)} x {images.shape[1:]} (load '
          f'{load_s:.2f} s); batch {FLAGS.batch_size} on {result["device"]}: '
          f'fetch {fetch_ms:.3f} ms + augment {augment_ms:.3f} ms = '
          f'{total_ms:.3f} ms/batch, {result["images_per_s"]:,} images/s')


if __name__ == '__main__':
  app.run(main)
