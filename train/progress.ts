/**
 * The trainer's live progress: one line with step, epoch, loss, learning rate, tokens/s, GPU
 * memory in use and ETA, redrawn in place on a terminal (carriage return) and printed as plain
 * lines (every `loggingSteps`) otherwise; evaluation results and notices go on their own lines;
 * and the final summary table.
 */

import { formatCount, formatDuration, type ProgressStream } from "../base/mod.ts";
import type { GpuMemory } from "./gpu_memory.ts";

export interface StepStatus {
  step: number;
  totalSteps: number;
  epoch: number;
  /** Mean loss of the last optimizer step (NaN when unknown). */
  loss: number;
  lr: number;
  tokensPerSecond: number;
  /** GPU bytes held by live tensors (core's pool), or null when unknown. */
  gpuBytes: number | null;
  /** Seconds left, or null when unknown. */
  etaSeconds: number | null;
}

/** The progress line's text (no newline). */
export function formatStepLine(s: StepStatus): string {
  const pct = s.totalSteps > 0 ? ` (${((100 * s.step) / s.totalSteps).toFixed(1)}%)` : "";
  return [
    `step ${s.step}/${s.totalSteps}${pct}`,
    `epoch ${s.epoch.toFixed(2)}`,
    `loss ${Number.isFinite(s.loss) ? s.loss.toFixed(4) : "-"}`,
    `lr ${s.lr.toExponential(2)}`,
    `${
      s.tokensPerSecond >= 100 ? Math.round(s.tokensPerSecond) : s.tokensPerSecond.toFixed(1)
    } tok/s`,
    `GPU ${s.gpuBytes === null ? "?" : formatCount(s.gpuBytes, "B")}`,
    `ETA ${s.etaSeconds === null ? "?" : formatDuration(s.etaSeconds)}`,
  ].join(" | ");
}

export interface TrainProgressOptions {
  stream?: ProgressStream;
  /** Overrides terminal detection (tests). */
  tty?: boolean;
  /** Plain-line mode prints every N-th step (and the last); default 1. */
  lineEvery?: number;
  /** Milliseconds clock (tests). */
  now?: () => number;
}

export interface TrainProgress {
  /** Reports a finished optimizer step. `tokens`: supervised tokens the step trained on. */
  step(s: Omit<StepStatus, "etaSeconds" | "tokensPerSecond">, tokens: number): StepStatus;
  /** Prints a line of its own (an eval result, a skipped step, a checkpoint), keeping the live line. */
  note(text: string): void;
  /** Ends the live line. */
  done(): void;
}

const enc = new TextEncoder();

/**
 * ETA and tokens/s come from this session's steps only (a resumed run does not count the steps it
 * skipped); tokens/s is over the last `window` steps, so it follows the current speed.
 */
export function createTrainProgress(options: TrainProgressOptions = {}): TrainProgress {
  const stream = options.stream ?? Deno.stderr;
  const tty = options.tty ?? (stream.isTerminal?.() ?? false);
  const now = options.now ?? (() => performance.now());
  const every = Math.max(1, options.lineEvery ?? 1);
  const window: { t: number; tokens: number }[] = [{ t: now(), tokens: 0 }];
  const start = now();
  let firstStep: number | null = null;
  let live = "";
  const write = (s: string) => stream.writeSync(enc.encode(s));

  return {
    step(s, tokens) {
      const t = now();
      if (firstStep === null) firstStep = s.step - 1;
      window.push({ t, tokens });
      if (window.length > 21) window.shift();
      const spanSeconds = (t - window[0].t) / 1000;
      const spanTokens = window.slice(1).reduce((n, w) => n + w.tokens, 0);
      const done = s.step - firstStep;
      const elapsed = (t - start) / 1000;
      const status: StepStatus = {
        ...s,
        tokensPerSecond: spanSeconds > 0 ? spanTokens / spanSeconds : 0,
        etaSeconds: done > 0 && elapsed > 0
          ? (elapsed / done) * Math.max(0, s.totalSteps - s.step)
          : null,
      };
      live = formatStepLine(status);
      if (tty) write(`\r${live}\x1b[K`);
      else if (s.step % every === 0 || s.step >= s.totalSteps) write(`${live}\n`);
      return status;
    },
    note(text) {
      if (tty) write(`\r\x1b[K${text}\n${live}`);
      else write(`${text}\n`);
    },
    done() {
      if (tty && live) write("\n");
      live = "";
    },
  };
}

export interface TrainSummary {
  steps: number;
  epochs: number;
  trainLoss: number;
  bestEvalLoss: number | null;
  bestCheckpoint: string | null;
  lastEvalLoss: number | null;
  runtimeSeconds: number;
  tokensPerSecond: number;
  samplesPerSecond: number;
  skippedSteps: number;
  /** Resident GPU memory at the run's peak (train/gpu_memory.ts), or null when unknown. */
  gpuMemory: GpuMemory | null;
  outputDir: string;
}

/** The resident total and what it is made of (the pool's peak alone would leave out weights). */
function formatGpuMemory(m: GpuMemory): string {
  const b = (n: number) => formatCount(n, "B");
  return `${b(m.total)} resident: weights ${b(m.weights)} + adapters ${b(m.adapters)} + ` +
    `gradients ${b(m.gradients)} + optimizer ${b(m.optimizer)} + activations and temporaries ` +
    `at their peak ${b(m.temporaries)}`;
}

/** The final summary as a two-column table. */
export function formatTrainSummary(s: TrainSummary): string {
  const rows: [string, string][] = [
    ["optimizer steps", String(s.steps)],
    ["epochs", s.epochs.toFixed(2)],
    ["train loss (mean)", Number.isFinite(s.trainLoss) ? s.trainLoss.toFixed(4) : "-"],
    ["last eval loss", s.lastEvalLoss === null ? "-" : s.lastEvalLoss.toFixed(4)],
    ["last eval perplexity", s.lastEvalLoss === null ? "-" : Math.exp(s.lastEvalLoss).toFixed(3)],
    ["best eval loss", s.bestEvalLoss === null ? "-" : s.bestEvalLoss.toFixed(4)],
    ["best checkpoint", s.bestCheckpoint ?? "-"],
    ["runtime", formatDuration(s.runtimeSeconds)],
    ["tokens/s", s.tokensPerSecond.toFixed(1)],
    ["samples/s", s.samplesPerSecond.toFixed(2)],
    ["skipped steps (NaN/Inf)", String(s.skippedSteps)],
    ["peak GPU memory", s.gpuMemory === null ? "?" : formatGpuMemory(s.gpuMemory)],
    ["output", s.outputDir],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return ["training summary", ...rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`)].join("\n");
}
