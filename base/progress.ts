/**
 * A progress bar for long jobs (loading weights, building data, training): redrawn in place on a
 * terminal at most ~10 times a second, and as occasional plain lines when stderr is a log file.
 */

export interface ProgressStream {
  writeSync(p: Uint8Array): number;
  isTerminal?(): boolean;
}

export interface ProgressOptions {
  label: string;
  total: number;
  /** "B" formats counts as bytes (KiB, MiB, GiB); "items" (default) as plain numbers. */
  unit?: "B" | "items";
  stream?: ProgressStream;
  /** Overrides terminal detection (tests). */
  tty?: boolean;
  /** Milliseconds clock (tests). */
  now?: () => number;
  /** Seconds between plain lines when not a terminal (default 10). */
  lineInterval?: number;
}

export interface Progress {
  /** Adds `n` (default 1) to the count done. */
  tick(n?: number): void;
  /** Sets the count done. */
  update(done: number): void;
  /** Prints the final state (once) and ends the line. */
  done(): void;
}

const encoder = new TextEncoder();

export function formatCount(n: number, unit: "B" | "items"): string {
  if (unit === "items") return n >= 1e4 ? n.toExponential(2) : String(Math.round(n));
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (x: number) => String(x).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? Deno.stderr;
  const tty = options.tty ?? (stream.isTerminal?.() ?? false);
  const now = options.now ?? (() => performance.now());
  const unit = options.unit ?? "items";
  const total = Math.max(0, options.total);
  const lineInterval = (options.lineInterval ?? 10) * 1000;
  const start = now();
  let count = 0;
  let lastDraw = -Infinity;
  let finished = false;

  const render = (): string => {
    const elapsed = (now() - start) / 1000;
    const rate = elapsed > 0 ? count / elapsed : 0;
    const frac = total > 0 ? Math.min(1, count / total) : 1;
    const eta = rate > 0 ? (total - count) / rate : Infinity;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    const rateText = `${formatCount(rate, unit)}${unit === "B" ? "/s" : " /s"}`;
    return `${options.label} [${bar}] ${(frac * 100).toFixed(1)}% ` +
      `${formatCount(count, unit)}/${formatCount(total, unit)} ${rateText} ` +
      (count >= total ? `in ${formatDuration(elapsed)}` : `ETA ${formatDuration(eta)}`);
  };

  const draw = (force: boolean) => {
    const t = now();
    if (!force && t - lastDraw < (tty ? 100 : lineInterval)) return;
    lastDraw = t;
    stream.writeSync(encoder.encode(tty ? `\r${render()}\x1b[K` : `${render()}\n`));
  };

  return {
    tick(n = 1) {
      count += n;
      if (!finished) draw(false);
    },
    update(done: number) {
      count = done;
      if (!finished) draw(false);
    },
    done() {
      if (finished) return;
      finished = true;
      draw(true);
      if (tty) stream.writeSync(encoder.encode("\n"));
    },
  };
}
