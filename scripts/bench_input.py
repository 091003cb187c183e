"""Times the input pipeline per batch: host fetch (indices + gather) + augment.

  python scripts/bench_input.py [--json] [--source=PATH] [--batch_size=128]

Without --source it uses random uint8 data of CIFAR-10's shape. Prints the
median time per batch over `--steps` batches, for comparison with the train
step's time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json
import time

import jax
import numpy as np

import input_pipeline


def load(args) -> tuple[input_pipeline.Split, float]:
  """(split, seconds load_split took)."""
  if not args.source:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50000, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, 50000, np.int32)
    return input_pipeline.Split(images, labels, list('0123456789'),
                                'random'), 0.0
  cfg = input_pipeline.default_config()
  cfg.source = args.source
  cfg.cache_dir = args.cache_dir
  start = time.perf_counter()
  split = input_pipeline.load_split(cfg, args.split)
  return split, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--json', action='store_true', help='print JSON')
  parser.add_argument('--source', help='image folder/archive; default random')
  parser.add_argument('--split', default='train')
  parser.add_argument('--cache_dir', help='default ~/.cache/pointwise')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=200, help='timed batches')
  args = parser.parse_args()

  split, load_s = load(args)
  images = split.images  # (N, H, W, 3) uint8
  description = f'{args.source}:{split.name}' if args.source else 'random'
  mean, std = input_pipeline.dataset_stats(split)
  image_size = images.shape[1]

  @jax.jit
  def augment(rng, step, batch):  # As a train step would: key folded in.
    return input_pipeline.augment_batch(
        jax.random.fold_in(rng, step), batch, image_size=image_size,
        mean=mean, std=std)

  rng = jax.random.key(0)
  fetch_s, augment_s = [], []
  for step in range(args.steps + 1):  # Step 0 compiles; not timed.
    start = time.perf_counter()
    idx = input_pipeline.batch_indices(len(images), args.batch_size, step,
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
      batch_size=args.batch_size, steps=args.steps,
      device=str(jax.devices()[0].platform), host_fetch_ms=round(fetch_ms, 4),
      augment_ms=round(augment_ms, 4), total_ms=round(total_ms, 4),
      images_per_s=round(args.batch_size / total_ms * 1e3))
  if args.json:
    print(json.dumps(result))
  else:
    print(f'{description}: {len(images)} x {images.shape[1:]} (load '
          f'{load_s:.2f} s); batch {args.batch_size} on {result["device"]}: '
          f'fetch {fetch_ms:.3f} ms + augment {augment_ms:.3f} ms = '
          f'{total_ms:.3f} ms/batch, {result["images_per_s"]:,} images/s')


if __name__ == '__main__':
  main()
