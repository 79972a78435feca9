// A one-line progress bar for long loops (stage-1 epochs): done/total, a bar, the rate and the time left.
// On a terminal it redraws one line; into a file or pipe it prints a plain line at most every
// `everySeconds`, so logs stay readable.
import { stderr } from "../platform/runtime.ts";

/**
 * A duration for display: `"1h05m"`, `"3m07s"` or `"42s"`, rounded to whole seconds; `"?"` when `seconds`
 * is negative or not finite (an unknown ETA).
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
    ? `${m}m${String(r).padStart(2, "0")}s`
    : `${r}s`;
}

/** `label [#####-----] done/total unit, rate unit/s, ETA t`; the ETA from the rate so far. */
export function progressLine(
  label: string,
  done: number,
  total: number,
  rate: number,
  unit: string,
  width = 24,
): string {
  const share = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(share * width);
  const eta = rate > 0 ? (total - done) / rate : NaN;
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} ${unit}, ` +
    `${rate.toFixed(1)} ${unit}/s, ETA ${formatDuration(eta)}`;
}

/**
 * Draws {@linkcode progressLine}s: on a terminal it redraws one line in place; otherwise it prints a plain
 * line at most every `everySeconds`, and always at completion.
 */
export class ProgressBar {
  private lastPrint = -Infinity;
  private drawn = false;
  /**
   * A bar that writes through `write`.
   * @param write where the text goes; standard error by default.
   * @param tty whether to redraw in place (default: whether standard error is a terminal).
   * @param everySeconds the least interval between plain lines when not a terminal; default 10.
   */
  constructor(
    private readonly write: (text: string) => void = (t) => stderr.write(t),
    private readonly tty: boolean = stderr.isTTY,
    private readonly everySeconds = 10,
  ) {}

  /** Shows progress `done` of `total` at `rate` `unit`s per second (`unit` defaults to `"images"`). */
  update(label: string, done: number, total: number, rate: number, unit = "images"): void {
    const line = progressLine(label, done, total, rate, unit);
    if (this.tty) {
      this.write(`\r\x1b[2K${line}`);
      this.drawn = true;
      return;
    }
    const now = performance.now() / 1000;
    if (done >= total || now - this.lastPrint >= this.everySeconds) {
      this.lastPrint = now;
      this.write(line + "\n");
    }
  }

  /** Ends the redrawn line, so the next output starts on a fresh one. */
  done(): void {
    if (this.drawn) this.write("\n");
    this.drawn = false;
  }
}
