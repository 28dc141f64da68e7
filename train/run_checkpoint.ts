/**
 * What the trainer does at each save step: write the checkpoint (atomically), record it as the
 * best when this step's evaluation is the best so far, rotate (keep the newest K and the best),
 * and refresh the run's top-level `trainer_state.json` and loss plots beside the checkpoints.
 * Also: finding the checkpoint a `--resume` means and checking it fits the current config.
 */

import { writeJsonAtomic } from "../base/mod.ts";
import {
  type CheckpointData,
  checkpointName,
  cleanStaleTemps,
  findLatestCheckpoint,
  rotateCheckpoints,
  saveCheckpoint,
  type SaveHooks,
} from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import { writeLossPlots } from "./plot/loss_plot.ts";

export interface RunCheckpointResult {
  dir: string;
  /** This checkpoint holds the best eval loss so far. */
  best: boolean;
  removed: string[];
  /** A plot that could not be written (the checkpoint itself is saved). */
  warning?: string;
}

/** True when the run's best eval loss was measured at `step` (HF: metric improved at this save). */
export function isBestStep(state: CheckpointData["trainerState"], step: number): boolean {
  if (state.best_metric === null) return false;
  return state.log_history.some((e) =>
    (e as Record<string, number>).step === step &&
    (e as Record<string, number>).eval_loss === state.best_metric
  );
}

export async function saveRunCheckpoint(
  outputDir: string,
  data: CheckpointData,
  options: { keep: number; plotTitle?: string; hooks?: SaveHooks },
): Promise<RunCheckpointResult> {
  const root = outputDir.replace(/\/+$/, "");
  const best = isBestStep(data.trainerState, data.step);
  if (best) data.trainerState.best_model_checkpoint = `${root}/${checkpointName(data.step)}`;
  const dir = await saveCheckpoint(root, data, options.hooks);
  const removed = await rotateCheckpoints(
    root,
    options.keep,
    data.trainerState.best_model_checkpoint,
  );
  await writeJsonAtomic(`${root}/trainer_state.json`, data.trainerState);
  let warning: string | undefined;
  try {
    await writeLossPlots(root, data.trainerState, options.plotTitle ?? "loss");
  } catch (err) {
    warning = `loss plot not written: ${(err as Error).message}`;
  }
  return { dir, best, removed, warning };
}

/**
 * The checkpoint to resume from: `config.resume` "" = the newest complete checkpoint of
 * `outputDir` (after removing leftovers of interrupted saves), else the directory given. Null for
 * a fresh run. Throws when a resume was asked for and there is nothing to resume.
 */
export async function resolveResume(
  config: Pick<TrainConfig, "resume" | "outputDir">,
): Promise<string | null> {
  if (config.resume === null) return null;
  if (config.resume !== "") {
    try {
      await Deno.stat(`${config.resume.replace(/\/+$/, "")}/trainer_state.json`);
    } catch {
      throw new Error(
        `--resume ${config.resume}: not a complete checkpoint (no trainer_state.json)`,
      );
    }
    return config.resume.replace(/\/+$/, "");
  }
  await cleanStaleTemps(config.outputDir);
  const latest = await findLatestCheckpoint(config.outputDir);
  if (!latest) {
    throw new Error(`--resume: no checkpoint-N folder in ${config.outputDir} to resume from`);
  }
  return latest;
}

/** Settings that must match for a resumed run to continue the same training. */
const MUST_MATCH: (keyof TrainConfig)[] = [
  "full",
  "quantize",
  "loraR",
  "loraAlpha",
  "targetModules",
  "batchSize",
  "gradAccumulation",
  "maxLength",
  "seed",
  "scheduler",
  "warmupSteps",
];

/**
 * Compares the saved `training_args.json` with the current config: `errors` for settings that
 * would change what is being trained (LoRA shape, batch layout, data order, schedule), `notes` for
 * the others that differ (they take the new value).
 */
export function checkResumeCompatible(
  saved: unknown,
  current: TrainConfig,
): { errors: string[]; notes: string[] } {
  const errors: string[] = [], notes: string[] = [];
  if (saved === null || typeof saved !== "object" || Array.isArray(saved)) {
    return { errors, notes: ["the checkpoint has no training_args.json; settings not compared"] };
  }
  const s = saved as Record<string, unknown>;
  const skip = new Set(["resume", "dryRun", "outputDir", "preset"]);
  for (const [key, value] of Object.entries(current)) {
    if (skip.has(key) || !(key in s)) continue;
    const before = JSON.stringify(s[key]), now = JSON.stringify(value);
    if (before === now) continue;
    const line = `${key}: checkpoint ${before}, now ${now}`;
    if (MUST_MATCH.includes(key as keyof TrainConfig)) errors.push(line);
    else notes.push(line);
  }
  return { errors, notes };
}
