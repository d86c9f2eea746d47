/**
 * The per-sample loss distribution of a pass as the per-sample view draws
 * it. The histogram and quantile lines of a pass come from its epoch summary
 * (the `epoch` notification, or the same record read back from the store),
 * so a finished pass is drawn as soon as it is announced; `report` adds the
 * hardest samples, and is drawn from only when no summary of the pass is
 * held. Pure: no DOM.
 */
import type { EpochPayload, Quantiles } from '../../src/protocol/types';
import { fmt } from './format';

/** What both an epoch summary and a `report` result hold of a pass. */
export type LossDistribution = Pick<EpochPayload, 'run' | 'split' | 'epoch' | 'count' | 'mean' | 'quantiles' | 'hist'>;

export const QUANTILES = ['p10', 'p50', 'p90', 'p99'] as const satisfies readonly (keyof Quantiles)[];

/** The epoch shown: the latest summarized one, or a chosen one. */
export type EpochChoice = 'latest' | number;

/** The held summary of the pass to show, if any. */
export function pickPass(epochs: readonly EpochPayload[], run: string, split: string, choice: EpochChoice): EpochPayload | undefined {
  let best: EpochPayload | undefined;
  for (const e of epochs) {
    if (e.run !== run || e.split !== split) continue;
    if (choice === 'latest' ? !best || e.epoch > best.epoch : e.epoch === choice) best = e;
  }
  return best;
}

/** The epochs of a split that have a summary, in order (the epoch picker's options). */
export function summarizedEpochs(epochs: readonly EpochPayload[], split: string): number[] {
  return [...new Set(epochs.filter((e) => e.split === split).map((e) => e.epoch))].sort((a, b) => a - b);
}

/**
 * The histogram as bars: the left edge of each bin and its count. Edges
 * are one more than counts; a histogram that is not (or an empty one) draws
 * no bars.
 */
export function histogramBars(hist: EpochPayload['hist']): [number[], number[]] {
  const { edges, counts } = hist;
  if (!counts.length || edges.length !== counts.length + 1) return [[], []];
  return [edges.slice(0, counts.length), [...counts]];
}

/** The quantile bands over epochs of a split: epochs, then one series per quantile. */
export function quantileBands(epochs: readonly EpochPayload[], split: string): [number[], ...(number | null)[][]] {
  const rows = epochs.filter((e) => e.split === split).sort((a, b) => a.epoch - b.epoch);
  return [rows.map((r) => r.epoch), ...QUANTILES.map((q) => rows.map((r) => r.quantiles?.[q] ?? null))];
}

/** The pass in one line: `epoch 3 · 60,000 samples · mean 0.4100 · p50 0.1200 · p99 4.750`. */
export function distributionLine(d: LossDistribution): string {
  return `epoch ${d.epoch} · ${d.count.toLocaleString()} samples · mean ${fmt(d.mean)} · p50 ${fmt(d.quantiles.p50)} · p99 ${fmt(d.quantiles.p99)}`;
}
