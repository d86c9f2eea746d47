/**
 * The run the dashboard shows, and what it holds of it: its epoch summaries,
 * the session's tests, the step metrics that arrive while its history is
 * being read, and whether it follows the run the trainer is on. Pure: the
 * dashboard asks it what to do and does it.
 */
import type { EpochPayload, StepsPayload, TestPayload } from '../../src/protocol/types';
import { upsertEpoch } from './records';

/** Points drawn over the loss chart: validation and test losses. */
export interface Overlay {
  label: string;
  x: number[]; // steps
  y: (number | null)[];
}

export class ShownRun {
  /** The run shown (undefined: none yet). */
  run: string | undefined;
  /** Switch along when the trainer starts another run (the user did not pin one). */
  following: boolean;
  /** The shown run's epoch summaries, one per split and epoch. */
  epochs: EpochPayload[] = [];
  /** The session's test results, every run's. */
  tests: TestPayload[] = [];
  /** Steps in the store for the shown run, when it had more than the dashboard reads whole (else 0). */
  bucketedSteps = 0;
  private generation = 0;
  /** The generation of the read in progress, 0 when none. */
  private loading = 0;
  private buffered: StepsPayload[] = [];

  /** @param pinned the run the user chose last time, if any: the dashboard then does not follow. */
  constructor(pinned?: string) {
    this.run = pinned;
    this.following = !pinned;
  }

  /** The run to remember as chosen by the user (undefined while following). */
  get pinned(): string | undefined {
    return this.following ? undefined : this.run;
  }

  /**
   * Show `id`. A choice by the user pins it, unless it is the run the
   * trainer is on (`liveRun`): then the dashboard keeps following.
   */
  choose(id: string, byUser: boolean, liveRun: string | undefined): void {
    if (byUser) this.following = id === liveRun;
    this.run = id;
  }

  /** Whether the trainer moved to `run` and the dashboard should move along. */
  shouldFollow(run: string | null | undefined): run is string {
    return this.following && !!run && run !== this.run;
  }

  /** A new session: its tests are read again. */
  clearSession(): void {
    this.tests = [];
  }

  /** Start reading the shown run's history; returns the read's generation. */
  startRead(): number {
    this.loading = ++this.generation;
    this.buffered = [];
    this.epochs = [];
    this.bucketedSteps = 0;
    return this.loading;
  }

  /** Whether a later read replaced the one of `generation`. */
  superseded(generation: number): boolean {
    return generation !== this.loading;
  }

  /** The read of `generation` is done: the steps that arrived meanwhile, oldest first. */
  finishRead(generation: number): StepsPayload[] {
    if (this.superseded(generation)) return [];
    const steps = this.buffered;
    this.buffered = [];
    this.loading = 0;
    return steps;
  }

  /**
   * Live step metrics of the session: the ones to draw now. Steps of another
   * run than the shown one are dropped; while the history is read they wait.
   *
   * @param liveRun the run the trainer is on.
   */
  liveSteps(steps: StepsPayload, liveRun: string | undefined): StepsPayload | undefined {
    if (!this.run || (liveRun && liveRun !== this.run)) return undefined;
    if (this.loading) {
      this.buffered.push(steps);
      return undefined;
    }
    return steps;
  }

  /** A pass finished; true when it is one of the shown run's (and was taken). */
  addEpoch(e: EpochPayload): boolean {
    if (e.run !== this.run) return false;
    this.epochs = upsertEpoch(this.epochs, e);
    return true;
  }

  addTest(t: TestPayload): void {
    this.tests.push(t);
  }

  /** The validation and test losses of the shown run, drawn over the loss chart. */
  overlays(): Overlay[] {
    const val = this.epochs.filter((e) => e.split === 'val' && e.mean !== null);
    const test = this.tests.filter((t) => t.run === this.run && t.loss !== null);
    return [
      { label: 'val loss', x: val.map((e) => e.step), y: val.map((e) => e.mean) },
      { label: 'test loss', x: test.map((t) => t.step), y: test.map((t) => t.loss) },
    ];
  }

  /** The steps at which the shown run's training epochs ended, in order. */
  epochEnds(): number[] {
    return this.epochs
      .filter((e) => e.split === 'train')
      .map((e) => e.step)
      .sort((a, b) => a - b);
  }
}
