/**
 * `train(config)`: the training loop behind `deno task train`.
 *
 * Per optimizer step: `gradAccumulation` micro-batches (right-padded, §8 layout), each one GPU
 * submission (forward on the tape, backward into the gradient buffers; the last also records
 * clipping, the NaN guard and AdamW). Around it: the schedule, per-epoch shuffling with the RNG
 * state saved in checkpoints, evaluation on the validation split every `evalSteps`, checkpoints
 * every `saveSteps` (atomic; the newest K and the best kept), `--resume` continuing bit for bit,
 * Ctrl-C saving a checkpoint before exiting, the progress line, the summary and the loss plots.
 */

import { resolve } from "node:path";
import { createRng, pathExists, type ProgressStream } from "../base/mod.ts";
import {
  adapterFromModelFor,
  buildTrainBatchFor,
  DEMO_MODEL_DIR,
  isProfiling,
  linearModulesOf,
  poolStats,
  prepareTrainingFor,
  profileReport,
  readTensor,
  resetPoolPeak,
} from "../core/mod.ts";
import { buildDataset, loadConfig } from "../data/mod.ts";
import { loadCheckpoint, type LoadedCheckpoint, type SaveHooks } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import { evalAccumulator } from "./eval_metrics.ts";
import { watchInterrupt } from "./interrupt.ts";
import { createOptimizer } from "./optim/optimizer.ts";
import { lossWindow } from "./optim/accumulate.ts";
import { createTrainProgress, formatTrainSummary, type TrainSummary } from "./progress.ts";
import { residentGpuMemory } from "./gpu_memory.ts";
import { checkResumeCompatible, resolveResume, saveRunCheckpoint } from "./run_checkpoint.ts";
import { lrAt, type ScheduleConfig, schedulerState } from "./schedule.ts";
import { createTrainerState, logEval, logTrain, type TrainerState } from "./trainer_state.ts";
import {
  createBatchStream,
  type DataOrderState,
  droppedMessage,
  type Example,
  loadExamples,
} from "./loop/examples.ts";
import { setupModel } from "./loop/model_setup.ts";
import { runMicroStep, trainableTensors } from "./loop/step.ts";
import { DEMO_DATA_CONFIG, DEMO_NOTICE } from "./loop/demo_paths.ts";

export interface TrainOptions {
  /** Notices and the summary (default: stderr). */
  log?: (line: string) => void;
  /** The live progress line (default: stderr). */
  progressStream?: ProgressStream;
  /**
   * Stop after this many optimizer steps of this session, saving a checkpoint as Ctrl-C does
   * (tests use it to interrupt a run at a known step).
   */
  stopAfterSteps?: number;
  /** Passed to each checkpoint save (tests kill the process mid-save through it). */
  saveHooks?: SaveHooks;
}

export interface TrainResult {
  /** Optimizer steps completed (in total, counting a resumed run's earlier steps). */
  steps: number;
  totalSteps: number;
  /** This session's steps: the mean loss of each (what the progress line prints). */
  losses: { step: number; loss: number }[];
  evals: { step: number; loss: number }[];
  /** The newest checkpoint written (null when none was). */
  lastCheckpoint: string | null;
  interrupted: boolean;
  summary: TrainSummary;
}

const DATA_ORDER_KIND = "medglm-data-order";

/** A dropout seed per micro-batch from the run seed (not from the RNG: recompute and resume reuse it). */
function microSeed(seed: number, micro: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ micro, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

function parseDataOrder(json: unknown, dir: string): DataOrderState {
  const o = json as Record<string, unknown> | null;
  const words = o?.epochRng;
  if (
    !o || o.kind !== DATA_ORDER_KIND || !Number.isInteger(o.epoch) ||
    !Number.isInteger(o.batchInEpoch) || !Array.isArray(words) || words.length !== 4
  ) {
    throw new Error(`${dir}/rng_state.json: not a data-order state written by this trainer`);
  }
  return {
    epoch: o.epoch as number,
    batchInEpoch: o.batchInEpoch as number,
    epochRng: words as DataOrderState["epochRng"],
  };
}

/** The data build of the demo (built from data/configs/demo.json on first use). */
async function demoData(log: (line: string) => void): Promise<string> {
  const out = "out/data/demo";
  const { config } = await loadConfig(DEMO_DATA_CONFIG);
  // Reused while it was built from this config (a build of an older demo.json is rebuilt).
  if (await pathExists(`${out}/manifest.json`)) {
    const built = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`)).config;
    if (JSON.stringify(built) === JSON.stringify(config)) return out;
  }
  log(`no --data: building the demo data set from ${DEMO_DATA_CONFIG} into ${out}`);
  const baseDir = DEMO_DATA_CONFIG.replace(/\/[^/]*$/, "");
  await buildDataset(config, { baseDir, out, progress: false });
  return out;
}

export async function train(config: TrainConfig, options: TrainOptions = {}): Promise<TrainResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const modelDir = (config.model ?? DEMO_MODEL_DIR).replace(/\/+$/, "");
  const isDemo = resolve(modelDir) === resolve(DEMO_MODEL_DIR);
  if (isDemo) log(DEMO_NOTICE);
  const dataDir = config.data ?? (isDemo ? await demoData(log) : null);
  if (!dataDir) {
    throw new Error("--data is required: a data build (`deno task data`) with token shards");
  }
  const started = performance.now();

  // --- resume, model, data -------------------------------------------------------------------
  const resumeDir = await resolveResume(config);
  let resume: LoadedCheckpoint | null = null;
  if (resumeDir) {
    resume = await loadCheckpoint(
      resumeDir,
      config.full ? undefined : { linearModules: await linearModulesOf(modelDir), name: modelDir },
    );
    const check = checkResumeCompatible(resume.trainingArgs, config);
    if (check.errors.length > 0) {
      throw new Error(
        `--resume ${resumeDir}: the checkpoint was trained with other settings:\n  ` +
          check.errors.join("\n  "),
      );
    }
    for (const n of check.notes) log(`resume: ${n}`);
    log(`resuming from ${resumeDir} (step ${resume.step})`);
  }
  const trainSet = await loadExamples(dataDir, "train", config.maxLength);
  const validSet = await loadExamples(dataDir, "valid", config.maxLength);
  if (trainSet.dropped > 0) {
    log(droppedMessage(trainSet.dropped, config.maxLength));
  }
  const model = await setupModel(config, modelDir, resume, log);
  const tm = prepareTrainingFor(model, config.full ? "full" : "lora");
  const optimizer = createOptimizer(model.gpu, trainableTensors(tm), {
    beta1: config.adamBeta1,
    beta2: config.adamBeta2,
    eps: config.adamEpsilon,
    weightDecay: config.weightDecay,
  });
  const interrupt = watchInterrupt();
  try {
    if (resume) optimizer.importState(resume.optimizer);
    const order: DataOrderState = resume
      ? parseDataOrder(resume.rng, resume.dir)
      : { epoch: 0, batchInEpoch: 0, epochRng: createRng(config.seed + 1).state() };
    const stream = createBatchStream(trainSet.examples.length, config.batchSize, order);
    const accum = config.gradAccumulation;
    const stepsPerEpoch = Math.max(1, Math.ceil(stream.batchesPerEpoch / accum));
    const totalSteps = config.maxSteps ?? Math.max(1, Math.ceil(config.epochs * stepsPerEpoch));
    const schedule: ScheduleConfig = {
      kind: config.scheduler,
      lr: config.lr,
      warmupSteps: config.warmupSteps,
      totalSteps,
    };
    const state: TrainerState = resume ? resume.trainerState : createTrainerState({
      maxSteps: totalSteps,
      epochs: config.epochs,
      loggingSteps: config.loggingSteps,
      evalSteps: config.evalSteps,
      saveSteps: config.saveSteps,
      batchSize: config.batchSize,
    });
    const trainable = tm.params.reduce((n, p) => n + p.param.byteLength / 4, 0);
    log(
      `training ${config.full ? "all parameters (full fine-tuning)" : "LoRA"}: ` +
        `${trainable.toLocaleString("en-US")} trainable values; ${trainSet.examples.length} ` +
        `training / ${validSet.examples.length} validation examples; ${totalSteps} steps of ` +
        `${config.batchSize} × ${accum} examples${config.recompute ? "; recompute on" : ""}`,
    );

    const batchOf = (examples: Example[], indices: number[]) =>
      buildTrainBatchFor(
        model,
        indices.map((i) => examples[i].inputIds),
        indices.map((i) => examples[i].labels),
      );

    const evaluate = async (step: number, epoch: number) => {
      const acc = evalAccumulator();
      const t0 = performance.now();
      const n = validSet.examples.length;
      let batches = 0;
      for (let i = 0; i < n; i += config.batchSize) {
        if (config.evalBatches > 0 && batches >= config.evalBatches) break;
        const indices = [...Array(Math.min(config.batchSize, n - i)).keys()].map((k) => i + k);
        const r = await runMicroStep(tm, batchOf(validSet.examples, indices), { evalOnly: true });
        acc.add(r.loss, r.tokens, indices.length);
        batches++;
      }
      return acc.entry(step, epoch, (performance.now() - t0) / 1000);
    };

    const progress = createTrainProgress({
      stream: options.progressStream,
      lineEvery: config.loggingSteps,
    });
    let step = resume ? resume.step : 0;
    const losses: TrainResult["losses"] = [];
    const evals: TrainResult["evals"] = [];
    let lastCheckpoint: string | null = null;
    let savedAt = -1;
    let skipped = 0;
    let tokensSeen = 0;
    let samplesSeen = 0;
    let logSum = 0, logCount = 0;
    let interrupted = false;
    const epochAt = (s: number) => (s * accum) / stream.batchesPerEpoch;

    const save = async () => {
      const weights = config.full
        ? {
          kind: "full" as const,
          tensors: await Promise.all(
            [...model.parameters()].map(async ([name, t]) => ({
              name,
              shape: [...t.shape],
              data: await readTensor(t) as Float32Array,
            })),
          ),
          modelConfig: JSON.parse(await Deno.readTextFile(`${modelDir}/config.json`)),
        }
        : { kind: "lora" as const, adapter: await adapterFromModelFor(model) };
      const result = await saveRunCheckpoint(config.outputDir, {
        step,
        weights,
        optimizer: await optimizer.exportState(),
        scheduler: schedulerState(schedule, step),
        rng: { kind: DATA_ORDER_KIND, ...stream.state() },
        trainerState: state,
        trainingArgs: config,
      }, {
        keep: config.keepCheckpoints,
        plotTitle: `${config.preset} loss`,
        hooks: options.saveHooks,
      });
      lastCheckpoint = result.dir;
      savedAt = step;
      progress.note(`saved ${result.dir}${result.best ? " (best eval loss so far)" : ""}`);
      if (result.warning) progress.note(result.warning);
    };

    // The summary's peak is this run's: what loading held only for a while is not in it.
    resetPoolPeak(model.gpu);
    if (config.evalOnStart && step === 0 && validSet.examples.length > 0) {
      // Before any update: the base (or the initial adapter) on the validation split.
      const entry = await evaluate(0, 0);
      evals.push({ step: 0, loss: entry.eval_loss });
      progress.note(
        `eval before training: loss ${entry.eval_loss.toFixed(4)}, perplexity ${
          entry.eval_perplexity!.toFixed(3)
        }`,
      );
    }
    let sessionSteps = 0;
    while (step < totalSteps) {
      const window = lossWindow();
      const lr = lrAt(schedule, step);
      let report;
      for (let a = 0; a < accum; a++) {
        const { indices } = stream.next();
        const last = a === accum - 1;
        const r = await runMicroStep(tm, batchOf(trainSet.examples, indices), {
          zeroGrads: a === 0,
          optimizer: last ? optimizer : undefined,
          lr,
          maxGradNorm: config.maxGradNorm,
          gradScale: 1 / accum,
          recompute: config.recompute,
          seed: microSeed(config.seed, step * accum + a),
        });
        window.add(r.loss, r.tokens);
        samplesSeen += indices.length;
        if (last) report = r.report;
      }
      step++;
      sessionSteps++;
      tokensSeen += window.tokens;
      if (report?.skipped) {
        skipped++;
        progress.note(`step ${step}: ${report.message ?? "skipped (non-finite gradients)"}`);
      }
      const gpuBytes = poolStats(model.gpu).bytesInUse;
      const epoch = epochAt(step);
      progress.step({ step, totalSteps, epoch, loss: window.mean, lr, gpuBytes }, window.tokens);
      losses.push({ step, loss: window.mean });
      logSum += window.mean;
      logCount++;
      if (step % config.loggingSteps === 0 || step === totalSteps) {
        logTrain(state, {
          step,
          epoch,
          loss: logSum / logCount,
          learning_rate: lr,
          grad_norm: report?.gradNorm,
        });
        logSum = 0;
        logCount = 0;
      }
      const evalNow = validSet.examples.length > 0 &&
        ((config.evalSteps > 0 && step % config.evalSteps === 0) || step === totalSteps);
      if (evalNow) {
        const entry = await evaluate(step, epoch);
        logEval(state, entry);
        evals.push({ step, loss: entry.eval_loss });
        progress.note(
          `eval at step ${step}: loss ${entry.eval_loss.toFixed(4)}, perplexity ${
            entry.eval_perplexity!.toFixed(3)
          }, ${Math.round(entry.eval_tokens_per_second ?? 0)} tok/s`,
        );
      }
      const stopHere = interrupt.requested ||
        (options.stopAfterSteps !== undefined && sessionSteps >= options.stopAfterSteps);
      if (step % config.saveSteps === 0 || step === totalSteps || stopHere) await save();
      if (stopHere) {
        interrupted = true;
        progress.note(`stopped at step ${step}; continue with --resume`);
        break;
      }
    }
    if (savedAt !== step && step > 0) await save();
    progress.done();
    const runtime = (performance.now() - started) / 1000;
    const summary: TrainSummary = {
      steps: step,
      epochs: epochAt(step),
      trainLoss: losses.length ? losses.reduce((s, l) => s + l.loss, 0) / losses.length : NaN,
      bestEvalLoss: state.best_metric,
      bestCheckpoint: state.best_model_checkpoint,
      lastEvalLoss: evals.length ? evals[evals.length - 1].loss : null,
      runtimeSeconds: runtime,
      tokensPerSecond: runtime > 0 ? tokensSeen / runtime : 0,
      samplesPerSecond: runtime > 0 ? samplesSeen / runtime : 0,
      skippedSteps: skipped,
      gpuMemory: residentGpuMemory(model.gpu, {
        weights: model.parameters().values(),
        adapters: tm.params.map((p) => p.param),
        gradients: tm.params.map((p) => p.grad),
        optimizerBytes: optimizer.stateBytes,
      }),
      outputDir: config.outputDir,
    };
    log(formatTrainSummary(summary));
    if (isProfiling(model.gpu)) log(profileReport(model.gpu));
    return { steps: step, totalSteps, losses, evals, lastCheckpoint, interrupted, summary };
  } finally {
    interrupt.dispose();
    optimizer.destroy();
    tm.dispose();
    model.dispose();
  }
}
