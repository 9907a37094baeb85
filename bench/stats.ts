// Summary statistics for benchmark samples: pure, no I/O. Percentiles use the
// nearest-rank method (the p-th percentile is a sample that was observed, never
// an interpolation), which is what a "p95 of 20 runs" can honestly claim.

export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of already sorted values (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no samples');
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error('summary of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    mean: sorted.reduce((s, v) => s + v, 0) / sorted.length,
  };
}

export function median(samples: readonly number[]): number {
  return summarize(samples).p50;
}

export interface LineFit {
  /** Change of y per unit of x. */
  slope: number;
  intercept: number;
  /** Coefficient of determination: 1 = the points lie on the line; near 0 = the slope says little. */
  r2: number;
}

/** Ordinary least-squares line through (x, y) points: an increment from every point, not from two. */
export function fitLine(points: ReadonlyArray<readonly [number, number]>): LineFit {
  if (points.length < 2) throw new Error(`a line needs at least 2 points, got ${points.length}`);
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  if (sxx === 0) throw new Error('a line needs at least 2 different x values');
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const syy = points.reduce((s, [, y]) => s + (y - my) ** 2, 0);
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) };
}
