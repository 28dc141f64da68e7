/**
 * The trainer's independent parts (the lead re-exports this from train/mod.ts): optimizer,
 * schedules, config and presets, checkpoints and trainer state, progress, loss plots and the
 * dry-run memory plan.
 *
 * @module
 */

export * from "./optim/mod.ts";
export {
  lrAt,
  lrFactor,
  parseSchedulerState,
  SCHEDULE_KINDS,
  type ScheduleConfig,
  type ScheduleKind,
  type SchedulerState,
  schedulerState,
} from "./schedule.ts";
export {
  DEFAULT_PRESET,
  flagOf,
  loadTrainConfig,
  type ParsedTrainArgs,
  parseTrainFlags,
  preset,
  PRESETS,
  resolveTrainConfig,
  type TrainConfig,
  trainHelp,
  validateTrainConfig,
} from "./config.ts";
export {
  type CheckpointData,
  checkpointName,
  type CheckpointWeights,
  cleanStaleTemps,
  findLatestCheckpoint,
  listCheckpoints,
  loadAdapterStandalone,
  loadCheckpoint,
  type LoadedCheckpoint,
  readOptimizerState,
  rotateCheckpoints,
  saveCheckpoint,
  type SaveHooks,
} from "./checkpoint.ts";
export {
  createTrainerState,
  type EvalLogEntry,
  logEval,
  logTrain,
  lossSeries,
  parseTrainerState,
  readTrainerState,
  type TrainerState,
  type TrainLogEntry,
} from "./trainer_state.ts";
export {
  createTrainProgress,
  formatStepLine,
  formatTrainSummary,
  type StepStatus,
  type TrainProgress,
  type TrainSummary,
} from "./progress.ts";
export {
  fmtBytes,
  formatTrainMemoryPlan,
  limitWarnings,
  type TrainMemoryPlan,
  trainMemoryPlan,
  type TrainMemoryPlanInput,
} from "./memory_plan.ts";
export { adapterLimits, CHATGLM_6B_CONFIG_URL, dryRunReport, readModelConfig } from "./dry_run.ts";
export { lossPlotSpec, writeLossPlots } from "./plot/loss_plot.ts";
export { findTrainerState, plotMain } from "./plot_cli.ts";
export {
  checkResumeCompatible,
  isBestStep,
  resolveResume,
  type RunCheckpointResult,
  saveRunCheckpoint,
} from "./run_checkpoint.ts";
export { type InterruptWatch, watchInterrupt } from "./interrupt.ts";
export { type EvalAccumulator, evalAccumulator } from "./eval_metrics.ts";
export { train, type TrainOptions, type TrainResult } from "./train.ts";
export {
  type MicroStepOptions,
  type MicroStepResult,
  runMicroStep,
  trainableTensors,
} from "./loop/step.ts";
export {
  type BatchStream,
  createBatchStream,
  type DataOrderState,
  type Example,
  loadExamples,
} from "./loop/examples.ts";
export { DEMO_DATA_CONFIG, DEMO_NOTICE } from "./loop/demo_paths.ts";
