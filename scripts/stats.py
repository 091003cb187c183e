"""The report's statistics over seeds: one group's accuracy, two groups'
difference, and that difference in words.

  a = stats.describe([0.781, 0.776, 0.790])  # {'n', 'mean', 'sd', 'ci95'}
  d = stats.welch(a, stats.describe([0.772, 0.769, 0.780]))
  stats.verdict('naive', 'reduced', 'final val acc', d, 3, 3)

Confidence intervals are 95% and given as half-widths (ci95): the mean's by
Student's t with n - 1 degrees of freedom, a difference's by Welch's t with
Welch-Satterthwaite degrees of freedom (no equal-variance assumption), or,
where seeds match across two groups, by the paired t over the matched seeds
(paired). Each needs two values a side (two pairs); with fewer, ci95 is None.
"""

import math
import statistics

import scipy.special

LEVEL = 0.95


def _t(df: float) -> float:
  """The two-sided critical value of Student's t at LEVEL (stdtrit: the
  quantile function, without scipy.stats' import time)."""
  return float(scipy.special.stdtrit(df, 0.5 + LEVEL / 2))


def describe(values: list[float]) -> dict:
  """n, mean, sd (ddof=1) and ci95, the half-width of the mean's confidence
  interval. sd and ci95 are None for one value; mean too for none."""
  n = len(values)
  out = dict(n=n, mean=statistics.fmean(values) if n else None, sd=None,
             ci95=None)
  if n > 1:
    out['sd'] = statistics.stdev(values)
    out['ci95'] = _t(n - 1) * out['sd'] / math.sqrt(n)
  return out


def welch(a: dict, b: dict) -> dict | None:
  """The difference of the means of two describe()d samples, a - b: diff,
  ci95 (the half-width of its confidence interval by Welch's t) and df (the
  Welch-Satterthwaite degrees of freedom); ci95 and df are None where a side
  has one value. None where a side has none."""
  if not a['n'] or not b['n']:
    return None
  out = dict(diff=a['mean'] - b['mean'], ci95=None, df=None)
  if a['n'] < 2 or b['n'] < 2:
    return out
  va, vb = a['sd'] ** 2 / a['n'], b['sd'] ** 2 / b['n']
  if va + vb == 0:  # Every seed alike on both sides: the difference is exact.
    return out | dict(ci95=0.0)
  df = (va + vb) ** 2 / (va ** 2 / (a['n'] - 1) + vb ** 2 / (b['n'] - 1))
  return out | dict(ci95=_t(df) * math.sqrt(va + vb), df=df)


def paired(a: list[float], b: list[float]) -> dict | None:
  """The mean difference a[i] - b[i] of matched values (one seed in two
  groups: the same initialisation and data order): diff, ci95 (the
  half-width of its confidence interval by the paired t test,
  scipy.stats.ttest_rel), df (n - 1) and n, the pairs. Seeds that move both
  groups alike cancel in each difference, so its interval is narrower than
  Welch's where they do. ci95 and df are None for one pair; None for none."""
  n = len(a)
  if not n:
    return None
  differences = [x - y for x, y in zip(a, b)]
  out = dict(diff=statistics.fmean(differences), ci95=None, df=None, n=n)
  if n < 2:
    return out
  if statistics.stdev(differences) < 1e-12:  # Every pair alike but rounding.
    return out | dict(ci95=0.0, df=n - 1)
  import scipy.stats  # pylint: disable=import-outside-toplevel
  result = scipy.stats.ttest_rel(a, b)
  low, high = result.confidence_interval(LEVEL)
  return out | dict(ci95=float(high - low) / 2, df=float(result.df))


def verdict(group: str, baseline: str, what: str, diff: dict, n: int,
            n_baseline: int) -> str:
  """welch()'s difference of accuracies `what` in words, in points
  (percentage points); detectable iff the confidence interval excludes 0."""
  d = diff['diff'] * 100
  side = 'above' if d > 0 else 'below' if d < 0 else 'away from'
  seeds = (f'{n} seed{"s" * (n != 1)}' if n == n_baseline
           else f'{n} and {n_baseline} seeds')
  if diff['ci95'] is None:
    return (f'{group} is {abs(d):.2f} points {side} {baseline} in {what}: '
            f'no interval can be given with {seeds} (it needs 2 a side).')
  half = diff['ci95'] * 100
  found = ('a difference at 95%' if abs(d) > half else
           f'no detectable difference with {seeds}')
  return (f'{group} is {abs(d):.2f} ± {half:.2f} points {side} {baseline} in '
          f'{what}: {found}.')
