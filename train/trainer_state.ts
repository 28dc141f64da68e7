/**
 * `trainer_state.json` in the shape the HF Trainer writes it (so tools that read HF runs read
 * ours): `log_history` entries `{loss, learning_rate, epoch, step}` for training logs and
 * `{eval_loss, eval_…, epoch, step}` for evaluations, `global_step`, `best_metric` (lowest eval
 * loss) and `best_model_checkpoint`, and the run's step settings.
 */

import { MAX_INDEX_JSON_BYTES, readJsonFile } from "../base/mod.ts";

export interface TrainLogEntry {
  step: number;
  epoch: number;
  loss: number;
  learning_rate: number;
  grad_norm?: number;
  tokens_per_second?: number;
}

export interface EvalLogEntry {
  step: number;
  epoch: number;
  eval_loss: number;
  eval_perplexity?: number;
  eval_runtime?: number;
  eval_samples_per_second?: number;
  eval_steps_per_second?: number;
  eval_tokens_per_second?: number;
}

export interface SummaryLogEntry {
  step: number;
  epoch: number;
  train_loss: number;
  train_runtime: number;
  train_samples_per_second: number;
  train_steps_per_second: number;
  total_flos: number;
}

export type LogEntry = TrainLogEntry | EvalLogEntry | SummaryLogEntry | Record<string, number>;

export interface TrainerState {
  best_metric: number | null;
  best_model_checkpoint: string | null;
  epoch: number;
  eval_steps: number;
  global_step: number;
  is_hyper_param_search: boolean;
  is_local_process_zero: boolean;
  is_world_process_zero: boolean;
  log_history: LogEntry[];
  logging_steps: number;
  max_steps: number;
  num_train_epochs: number;
  save_steps: number;
  total_flos: number;
  train_batch_size: number;
  trial_name: null;
  trial_params: null;
}

export function createTrainerState(settings: {
  maxSteps: number;
  epochs: number;
  loggingSteps: number;
  evalSteps: number;
  saveSteps: number;
  batchSize: number;
}): TrainerState {
  return {
    best_metric: null,
    best_model_checkpoint: null,
    epoch: 0,
    eval_steps: settings.evalSteps,
    global_step: 0,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    log_history: [],
    logging_steps: settings.loggingSteps,
    max_steps: settings.maxSteps,
    num_train_epochs: settings.epochs,
    save_steps: settings.saveSteps,
    total_flos: 0,
    train_batch_size: settings.batchSize,
    trial_name: null,
    trial_params: null,
  };
}

/** Appends a training log entry and moves `global_step` / `epoch`. */
export function logTrain(state: TrainerState, entry: TrainLogEntry): void {
  state.log_history.push({ ...entry });
  state.global_step = entry.step;
  state.epoch = entry.epoch;
}

/**
 * Appends an evaluation; returns true when it is the best eval loss so far (the caller then sets
 * `best_model_checkpoint` when it saves this step).
 */
export function logEval(state: TrainerState, entry: EvalLogEntry): boolean {
  state.log_history.push({ ...entry });
  state.global_step = Math.max(state.global_step, entry.step);
  state.epoch = Math.max(state.epoch, entry.epoch);
  if (state.best_metric === null || entry.eval_loss < state.best_metric) {
    state.best_metric = entry.eval_loss;
    return true;
  }
  return false;
}

/** The training losses and evaluation losses of a run, for plots. */
export function lossSeries(state: Pick<TrainerState, "log_history">): {
  train: { step: number; loss: number }[];
  eval: { step: number; loss: number }[];
} {
  const train: { step: number; loss: number }[] = [];
  const evals: { step: number; loss: number }[] = [];
  for (const e of state.log_history as Record<string, number>[]) {
    if (typeof e.loss === "number" && Number.isFinite(e.loss)) {
      train.push({ step: e.step, loss: e.loss });
    }
    if (typeof e.eval_loss === "number" && Number.isFinite(e.eval_loss)) {
      evals.push({ step: e.step, loss: e.eval_loss });
    }
  }
  return { train, eval: evals };
}

/** Validates a parsed trainer_state.json (ours or the HF Trainer's); `source` names the file. */
export function parseTrainerState(json: unknown, source: string): TrainerState {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  const o = json as Record<string, unknown>;
  if (!Array.isArray(o.log_history)) throw new Error(`${source}: log_history must be a list`);
  if (typeof o.global_step !== "number" || !Number.isInteger(o.global_step) || o.global_step < 0) {
    throw new Error(`${source}: global_step must be a non-negative integer`);
  }
  o.log_history.forEach((e, i) => {
    if (e === null || typeof e !== "object" || Array.isArray(e)) {
      throw new Error(`${source}: log_history[${i}] must be an object`);
    }
    const step = (e as Record<string, unknown>).step;
    if (typeof step !== "number" || !Number.isInteger(step)) {
      throw new Error(`${source}: log_history[${i}].step must be an integer`);
    }
  });
  if (o.best_metric !== null && o.best_metric !== undefined && typeof o.best_metric !== "number") {
    throw new Error(`${source}: best_metric must be a number or null`);
  }
  if (
    o.best_model_checkpoint !== null && o.best_model_checkpoint !== undefined &&
    typeof o.best_model_checkpoint !== "string"
  ) {
    throw new Error(`${source}: best_model_checkpoint must be a string or null`);
  }
  return {
    best_metric: null,
    best_model_checkpoint: null,
    epoch: 0,
    eval_steps: 0,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    logging_steps: 0,
    max_steps: 0,
    num_train_epochs: 0,
    save_steps: 0,
    total_flos: 0,
    train_batch_size: 0,
    trial_name: null,
    trial_params: null,
    ...o,
  } as TrainerState;
}

/** Reads and validates a trainer_state.json file. */
export async function readTrainerState(path: string): Promise<TrainerState> {
  // The log history grows with the run: the larger of the JSON caps.
  const json = await readJsonFile(path, { strict: false, maxBytes: MAX_INDEX_JSON_BYTES });
  return parseTrainerState(json, path);
}
