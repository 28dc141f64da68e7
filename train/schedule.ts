/**
 * Learning-rate schedules with warm-up, the formulas of HF transformers'
 * `get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup` and
 * `get_cosine_schedule_with_warmup` (num_cycles 0.5), as plain functions of the step.
 *
 * Step convention (HF Trainer's): `lrAt(s)` is the learning rate after `s` completed optimizer
 * steps, i.e. the rate used by optimizer step `s + 1`. With warm-up the first update therefore runs
 * at lr 0, exactly as in the seed's HF run, and the value the HF Trainer logs at global step `s`
 * (`get_last_lr()` after `scheduler.step()`) is `lrAt(s)`.
 */

export type ScheduleKind = "cosine" | "linear" | "constant";

export const SCHEDULE_KINDS: readonly ScheduleKind[] = ["cosine", "linear", "constant"];

export interface ScheduleConfig {
  kind: ScheduleKind;
  /** Peak learning rate. */
  lr: number;
  warmupSteps: number;
  /** Total optimizer steps of the run (decay ends here); unused by "constant". */
  totalSteps: number;
  /** Cosine cycles; HF's default 0.5 is a half wave from lr down to 0. */
  numCycles?: number;
}

/** The multiplier of the peak learning rate after `step` completed steps (HF's `lr_lambda`). */
export function lrFactor(config: ScheduleConfig, step: number): number {
  const { kind, warmupSteps, totalSteps } = config;
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  if (kind === "constant") return 1;
  if (kind === "linear") {
    return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
  }
  const cycles = config.numCycles ?? 0.5;
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
}

/** The learning rate used by optimizer step `step + 1` (see the module comment). */
export function lrAt(config: ScheduleConfig, step: number): number {
  return config.lr * lrFactor(config, step);
}

/** What a checkpoint stores about the schedule (`scheduler.json`), enough to continue it. */
export interface SchedulerState {
  kind: ScheduleKind;
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  numCycles: number;
  /** Completed optimizer steps (HF's `last_epoch`). */
  step: number;
  /** `lrAt(step)`, for people reading the file. */
  lastLr: number;
}

export function schedulerState(config: ScheduleConfig, step: number): SchedulerState {
  return {
    kind: config.kind,
    lr: config.lr,
    warmupSteps: config.warmupSteps,
    totalSteps: config.totalSteps,
    numCycles: config.numCycles ?? 0.5,
    step,
    lastLr: lrAt(config, step),
  };
}

/** Validates a parsed `scheduler.json`; `source` names the file in errors. */
export function parseSchedulerState(json: unknown, source: string): SchedulerState {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  const o = json as Record<string, unknown>;
  if (!SCHEDULE_KINDS.includes(o.kind as ScheduleKind)) {
    throw new Error(`${source}: kind must be one of ${SCHEDULE_KINDS.join(", ")}`);
  }
  for (const key of ["lr", "warmupSteps", "totalSteps", "numCycles", "step", "lastLr"]) {
    if (typeof o[key] !== "number" || !Number.isFinite(o[key])) {
      throw new Error(`${source}: ${key} must be a finite number`);
    }
  }
  return o as unknown as SchedulerState;
}
