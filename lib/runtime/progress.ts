/**
 * Progress lines for long work (feature extraction, k-NN, linear probing, memory banks): how many
 * units are done of how many, the mean rate since the start and the time left at that rate, one
 * line every few seconds, then a closing line with the total time.
 *
 * ```ts
 * import { Progress } from "./progress.ts";
 * const progress = new Progress({ label: "train features", write: console.log });
 * for (let done = 128; done <= 60000; done += 128) progress.update(done, 60000);
 * progress.finish();
 * // train features: 12800/60000 images (21%), 312 images/s, 2 min 31 s left
 * // train features: 60000 images in 3 min 12 s (312 images/s)
 * ```
 *
 * @module
 */

/** Where progress lines go: one call per line, without a newline. */
export type ProgressWriter = (line: string) => void;

/** Options of a {@link Progress}. */
export interface ProgressOptions {
  /** What is being done; every line starts with it (e.g. `train features`). */
  readonly label: string;
  /** Name of the units, plural (default `images`). */
  readonly unit?: string;
  /** Where lines go; without it nothing is printed. */
  readonly write?: ProgressWriter;
  /** Seconds between two lines (default {@link DEFAULT_PROGRESS_INTERVAL_SECONDS}). */
  readonly intervalSeconds?: number;
  /** Clock in milliseconds (default `performance.now`); tests inject their own. */
  readonly now?: () => number;
}

/** Default seconds between two progress lines. */
export const DEFAULT_PROGRESS_INTERVAL_SECONDS = 5;

/**
 * Counts the finished units of one piece of work. Making it starts the clock; a line is printed
 * when `intervalSeconds` have passed since the previous one (or the start), and
 * {@link Progress.finish} prints the closing line.
 */
export class Progress {
  readonly #label: string;
  readonly #unit: string;
  readonly #write: ProgressWriter | undefined;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #start: number;
  #lastLine: number;
  #done = 0;

  /** Starts the clock. */
  constructor(options: ProgressOptions) {
    const interval = options.intervalSeconds ?? DEFAULT_PROGRESS_INTERVAL_SECONDS;
    if (!(interval > 0)) throw new Error(`progress interval must be positive, got ${interval}`);
    this.#label = options.label;
    this.#unit = options.unit ?? "images";
    this.#write = options.write;
    this.#intervalMs = interval * 1000;
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
    this.#lastLine = this.#start;
  }

  /**
   * Records that `done` of `total` units are finished; prints a line when the interval has passed
   * since the previous one.
   */
  update(done: number, total: number): void {
    this.#done = done;
    if (!this.#write) return;
    const now = this.#now();
    if (now - this.#lastLine < this.#intervalMs) return;
    this.#lastLine = now;
    this.#write(progressLine(this.#label, done, total, this.#unit, (now - this.#start) / 1000));
  }

  /** Prints the closing line: the units done, the time taken and the mean rate. */
  finish(): void {
    if (!this.#write) return;
    const seconds = (this.#now() - this.#start) / 1000;
    const rate = seconds > 0 ? `${formatRate(this.#done / seconds)} ${this.#unit}/s` : "at once";
    this.#write(
      `${this.#label}: ${this.#done} ${this.#unit} in ${formatDuration(seconds)} (${rate})`,
    );
  }
}

/**
 * One progress line: `label: done/total unit (p%), rate unit/s, T left`, the rate being
 * the mean since the start (`elapsedSeconds` ago) and the time left (total − done) / rate.
 */
export function progressLine(
  label: string,
  done: number,
  total: number,
  unit: string,
  elapsedSeconds: number,
): string {
  const percent = total > 0 ? Math.floor(100 * done / total) : 100;
  const head = `${label}: ${done}/${total} ${unit} (${percent}%)`;
  if (!(done > 0 && elapsedSeconds > 0)) return `${head}, time left unknown`;
  const rate = done / elapsedSeconds;
  const left = formatDuration(Math.max(0, total - done) / rate);
  return `${head}, ${formatRate(rate)} ${unit}/s, ${left} left`;
}

/** A rate with at most three significant digits and at least the units: 0.123, 4.56, 78.9, 1234. */
export function formatRate(rate: number): string {
  if (rate >= 100) return rate.toFixed(0);
  if (rate >= 10) return rate.toFixed(1);
  if (rate >= 1) return rate.toFixed(2);
  return rate.toPrecision(3);
}

/** A duration rounded to whole seconds or minutes: `42 s`, `3 min 05 s`, `2 h 07 min`. */
export function formatDuration(seconds: number): string {
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  }
  const minutes = Math.round(whole / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}
