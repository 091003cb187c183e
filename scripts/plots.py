"""The report's Pareto plots: accuracy against a cost, one point per group.

  plots.plot_pareto(points, 'pareto_macs.png', xlabel, 'MACs per image',
                    tick_label=str, colour_key='model.module')

scripts/report.py picks the groups and their values (Point); this module only
draws them: log x axis, the mean accuracy with its 95% confidence interval as
an error bar (none where one run gives no interval), the Pareto front of the
means as a step line, points coloured by one varied key's value, points of
equal cost side by side (a small shift on x, noted on the plot), and every
point labelled, placed greedily where it covers no other point, label,
legend, error bar or the front.
"""

import itertools
import math
from typing import Callable, NamedTuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402
from matplotlib.text import Text  # noqa: E402

# x axes of the Pareto plots: (file suffix, report key, axis label, title).
PLOTS = (
    ('macs', 'macs_per_image', 'multiply-accumulates per image (MACs, log scale)',
     'MACs per image'),
    ('params', 'params', 'parameters (count, log scale)', 'parameters'),
    ('time', 'train_seconds', 'training time (seconds, log scale)',
     'training time'),
)
YLABEL = 'final val acc (mean over seeds; bars: 95% CI)'
SIDE_BY_SIDE = 0.03  # Points of equal cost: this fraction of the x axis apart.
MARKERS = 'osD^vPX*'


class Point(NamedTuple):
  label: str           # The varied keys' values (or the group's name).
  colour: str          # The colour key's value; '' draws all alike.
  x: float             # The cost, > 0.
  y: float             # The mean accuracy.
  ci95: float | None   # The half-width of its 95% CI; None: no bar.


class _TickFormatter(ticker.LogFormatter):
  """Log-axis tick labels through a function (1M, 20K, ...), not 10^6."""

  def __init__(self, label: Callable[[float], str], **kwargs):
    super().__init__(**kwargs)
    self.label = label

  def _num_to_string(self, x, vmin, vmax):
    return self.label(x)


def _overlap(a, b) -> float:
  w = min(a.x1, b.x1) - max(a.x0, b.x0)
  h = min(a.y1, b.y1) - max(a.y0, b.y0)
  return w * h if w > 0 and h > 0 else 0.0


# Label offsets from a point, in points: (dx, dy, ha, va), nearest first.
_OFFSETS = [(dx * r, dy * r, ha, va)
            for r in (1, 2.2, 3.6)
            for dx, dy, ha, va in ((7, 5, 'left', 'bottom'),
                                   (7, -5, 'left', 'top'),
                                   (-7, 5, 'right', 'bottom'),
                                   (-7, -5, 'right', 'top'),
                                   (0, 9, 'center', 'bottom'),
                                   (0, -9, 'center', 'top'),
                                   (9, 0, 'left', 'center'),
                                   (-9, 0, 'right', 'center'))]


def _place_labels(fig, ax, points, texts, obstacles) -> None:
  """Greedy label placement: for each point the nearest offset whose label
  stays inside the axes and overlaps no marker, legend or earlier label."""
  renderer = fig.canvas.get_renderer()
  frame = ax.get_window_extent(renderer)
  to_px = ax.transData.transform
  markers = []
  for x, y in points:
    px, py = to_px((x, y))
    markers.append(transforms.Bbox.from_extents(
        px - 5, py - 5, px + 5, py + 5))
  placed = list(obstacles)
  # Crowded points first: they have the fewest good spots.
  order = sorted(range(len(points)), key=lambda i: sum(
      _overlap(markers[i].expanded(8, 8), m) > 0 for m in markers))[::-1]
  for i in order:
    best = None
    for rank, (dx, dy, ha, va) in enumerate(_OFFSETS):
      text = _label(ax, texts[i], points[i], dx, dy, ha, va, rank >= 8)
      # The text's own box, without its leader line.
      text.update_positions(renderer)
      box = Text.get_window_extent(text, renderer).expanded(1.05, 1.1)
      outside = (box.width * box.height -
                 _overlap(box, frame)) * 4  # Clipped text: worst.
      cost = outside + sum(_overlap(box, o) for o in placed + markers)
      if rank < 8 and _ambiguous(box, i, markers):
        cost += 60  # Unclear whose label it is: a far one with a leader.
      cost += rank * 0.5  # Prefer near offsets among equals.
      if best is None or cost < best[0]:
        if best is not None:
          best[1].remove()
        best = (cost, text, box, rank)
      else:
        text.remove()
      if cost <= rank * 0.5:
        break  # Free spot: take it.
    _, text, box, rank = best
    if rank < 8 and _ambiguous(box, i, markers):
      # Nearer another point than its own: a leader line says whose it is.
      dx, dy, ha, va = _OFFSETS[rank]
      text.remove()
      _label(ax, texts[i], points[i], dx, dy, ha, va, True)
    placed.append(box)


def _label(ax, text, xy, dx, dy, ha, va, leader: bool):
  return ax.annotate(
      text, xy, xytext=(dx, dy), textcoords='offset points', ha=ha, va=va,
      fontsize=8, zorder=4,
      bbox=dict(boxstyle='round,pad=0.15', fc='white', ec='none', alpha=0.75),
      arrowprops=(dict(arrowstyle='-', color='0.45', lw=0.7, shrinkA=0,
                       shrinkB=3) if leader else None))


def _ambiguous(box, i, markers) -> bool:
  """Whether the label box is as near another marker as its own."""
  own = _distance(box, markers[i])
  return any(_distance(box, m) <= own + 2
             for j, m in enumerate(markers) if j != i)


def _distance(box, marker) -> float:
  """Pixels from a marker's centre to the nearest point of a box."""
  (x, y), = marker.get_points().mean(axis=0, keepdims=True)
  dx = max(box.x0 - x, 0, x - box.x1)
  dy = max(box.y0 - y, 0, y - box.y1)
  return math.hypot(dx, dy)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
  """The (cost, accuracy) points no cheaper-or-equal point beats, by cost."""
  front = []
  for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
    if not front or y > front[-1][1]:
      front.append((x, y))
  return front


def side_by_side(points: list[Point], step: float) -> list[Point]:
  """The points, those of equal cost (within 1%) moved apart on the log x
  axis, `step` decades from one to the next and centred on their cost, so
  that no marker or error bar hides another (a zero-cost ablation sits on
  its baseline otherwise). Others stay where they are."""
  order = sorted(range(len(points)), key=lambda i: points[i].x)
  clusters = []
  for i in order:
    if clusters and points[i].x <= points[clusters[-1][0]].x * 1.01:
      clusters[-1].append(i)
    else:
      clusters.append([i])
  moved = list(points)
  for cluster in clusters:
    for k, i in enumerate(cluster):
      shift = (k - (len(cluster) - 1) / 2) * step
      moved[i] = points[i]._replace(x=points[i].x * 10 ** shift)
  return moved


def _draw_points(ax, points: list[Point], colour_key: str) -> None:
  """Markers and error bars, one colour and marker per colour value."""
  values = list(dict.fromkeys(p.colour for p in points))
  for k, (value, marker) in enumerate(zip(values, itertools.cycle(MARKERS))):
    colour = f'C{k % 10}'
    group = [p for p in points if p.colour == value]
    bars = [p for p in group if p.ci95 is not None]
    if bars:
      ax.errorbar([p.x for p in bars], [p.y for p in bars],
                  yerr=[p.ci95 for p in bars], fmt='none', ecolor=colour,
                  elinewidth=1.2, capsize=4, zorder=2.5)
    label = (f'{colour_key}={value}' if value else
             'other' if colour_key else 'groups')
    ax.scatter([p.x for p in group], [p.y for p in group], s=42,
               color=colour, marker=marker, label=label, zorder=3,
               edgecolors='black', linewidths=0.5)


def _bar_boxes(ax, points: list[Point]) -> list:
  """The error bars' pixel boxes, for labels to keep off."""
  boxes = []
  for p in points:
    if p.ci95:
      (x0, y0), (x1, y1) = ax.transData.transform(
          [(p.x, p.y - p.ci95), (p.x, p.y + p.ci95)])
      boxes.append(transforms.Bbox.from_extents(x0 - 4, y0, x1 + 4, y1))
  return boxes


def plot_pareto(points: list[Point], path, xlabel: str, title: str,
                name: str = '', tick_label: Callable[[float], str] = str,
                colour_key: str = '') -> None:
  """Plots the points' accuracy against their cost into `path` (a PNG);
  `name` (the sweep) goes into the title, tick_label formats x ticks,
  colour_key names what Point.colour is the value of (the legend)."""
  fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
  if points:
    xs = [p.x for p in points]
    lows = [p.y - (p.ci95 or 0) for p in points]
    highs = [p.y + (p.ci95 or 0) for p in points]
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max(0.12 * (hi - lo), 0.08)
    shown = side_by_side(points, SIDE_BY_SIDE * (hi - lo + 2 * pad))
    _draw_points(ax, shown, colour_key)
    if shown != points:
      ax.text(0.99, 0.01, 'equal costs drawn side by side', ha='right',
              va='bottom', fontsize=7, color='0.4', transform=ax.transAxes)
    ax.set_xscale('log')
    ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
    ylo, yhi = min(lows), max(highs)
    ypad = max(0.15 * (yhi - ylo), 0.01)
    ax.set_ylim(ylo - ypad, yhi + 1.5 * ypad)
    front = pareto_front([(p.x, p.y) for p in shown])
    fx, fy = zip(*front)
    fx = [*fx, 10 ** (hi + pad)]
    ax.step(fx, [*fy, fy[-1]], where='post', color='0.35', ls='--',
            lw=1.2, zorder=2, label='Pareto front (best mean at ≤ cost)')
    corners = [(fx[0], fy[0])]  # The step line's, for labels to keep off.
    for k, y in enumerate(fy):
      corners += [(fx[k + 1], y)] + ([(fx[k + 1], fy[k + 1])]
                                     if k + 1 < len(fy) else [])
    ax.xaxis.set_major_formatter(_TickFormatter(tick_label,
                                                labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(_TickFormatter(
        tick_label, labelOnlyBase=False, minor_thresholds=(2, 0.7)))
    ax.tick_params(axis='x', which='minor', labelsize=7, labelcolor='0.3')
  else:
    ax.text(0.5, 0.5, 'no finished runs with an accuracy and this cost',
            ha='center', va='center', transform=ax.transAxes, color='0.4')
    ax.set_xscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(YLABEL)
  ax.set_title(f'Accuracy vs {title}' + (f' — {name}' if name else ''))
  ax.grid(True, which='major', alpha=0.3)
  ax.grid(True, which='minor', axis='x', alpha=0.12)
  fig.tight_layout()  # Before placing labels: it moves the axes.
  if points:
    legend = ax.legend(loc='best', fontsize=8, framealpha=0.9)
    fig.canvas.draw()  # Settles the legend's place before labels avoid it.
    renderer = fig.canvas.get_renderer()
    px = [ax.transData.transform(c) for c in corners]
    line = [transforms.Bbox.from_extents(
        min(a[0], b[0]) - 1.5, min(a[1], b[1]) - 1.5,
        max(a[0], b[0]) + 1.5, max(a[1], b[1]) + 1.5)
            for a, b in zip(px, px[1:])]
    _place_labels(fig, ax, [(p.x, p.y) for p in shown],
                  [p.label for p in shown],
                  [legend.get_window_extent(renderer)] + line
                  + _bar_boxes(ax, shown))
  fig.savefig(path)
  plt.close(fig)
