/**
 * The queries that re-read a session's history from its store when the
 * dashboard (re)connects: runs, lineage, logs, tests, step metrics (all of
 * them for a short run; the extremes of each of a few thousand step buckets
 * for a long one, computed by DuckDB) and epoch summaries. Values are always
 * bound as parameters.
 */
export const historySql = {
  runs: 'SELECT id, name, kind, status, created_at FROM runs ORDER BY created_at',
  edges: 'SELECT * FROM run_edges',
  logs: 'SELECT level, message, step, created_at FROM events ORDER BY id DESC LIMIT 500',
  tests: 'SELECT run_id AS run, split, step, epoch, loss, metrics FROM tests ORDER BY created_at',
  /** Up to this many steps are read whole; past it, bucketed. */
  fullLimit: 50_000,
  buckets: 4000,
  stepRangeCount: 'SELECT count(*) AS n FROM steps WHERE run_id = ? AND step BETWEEN ? AND ?',
  stepRange: 'SELECT step, epoch, loss, lr, grad_norm, samples_per_s, rss_mb, gpu_mem_mb FROM steps WHERE run_id = ? AND step BETWEEN ? AND ? ORDER BY step',
  steps: 'SELECT step, epoch, loss, lr, grad_norm, samples_per_s, rss_mb, gpu_mem_mb FROM steps WHERE run_id = ? ORDER BY step',
  /**
   * Params: run, buckets, run, run. Per bucket of steps, the first, last,
   * lowest-loss and highest-loss rows, and the run's step count `n` on each
   * row: one round trip for any run length (hash aggregates: ~0.2 s for 1M
   * steps). A run of up to 4 x buckets steps comes back whole.
   */
  stepsBucketed: `
    WITH r AS (
      SELECT min(step) AS lo, max(step) AS hi, count(*) AS n FROM steps WHERE run_id = ?
    ), s AS (
      SELECT step, loss, CAST(floor((step - r.lo) * ? / (r.hi - r.lo + 1)) AS BIGINT) AS b
      FROM steps, r WHERE run_id = ?
    ), a AS (
      SELECT min(step) AS f, max(step) AS l, arg_min(step, loss) AS lo, arg_max(step, loss) AS hi
      FROM s GROUP BY b
    ), k AS (
      SELECT DISTINCT unnest([f, l, lo, hi]) AS step FROM a
    )
    SELECT step, epoch, loss, lr, grad_norm, samples_per_s, rss_mb, gpu_mem_mb, (SELECT n FROM r) AS n
    FROM steps WHERE run_id = ? AND step IN (SELECT step FROM k) ORDER BY step`,
  epochs: 'SELECT run_id AS run, split, epoch, step, count, mean, min, max, p10, p50, p90, p99, hist_edges, hist_counts FROM epochs WHERE run_id = ? ORDER BY epoch, split',
};
