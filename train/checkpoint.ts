/**
 * Training checkpoints: `<outputDir>/checkpoint-<step>/` holding
 *
 * - the weights: a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`, written by
 *   core/adapters so peft loads it), or for full fine-tuning `model.safetensors` (+ `config.json`);
 * - `optimizer.safetensors`: AdamW's m and v per tensor (`<name>.exp_avg`, `<name>.exp_avg_sq`,
 *   F32), the per-tensor step counts and hyper-parameters in `__metadata__`;
 * - `scheduler.json`, `rng_state.json`, `training_args.json`;
 * - `trainer_state.json` (HF Trainer's shape), written last.
 *
 * Atomicity: everything is written into `checkpoint-<step>.tmp-<pid>/` (each file fsynced) and the
 * directory is renamed into place, so a crash or SIGKILL mid-save leaves the previous checkpoints
 * untouched and only a temp directory, which readers ignore and {@link cleanStaleTemps} removes.
 * Rotation renames a doomed checkpoint to `.del-<pid>` before deleting it, so a half-deleted
 * directory never looks like a checkpoint either.
 */

import {
  MAX_INDEX_JSON_BYTES,
  pathExists,
  readJsonFile,
  syncDir,
  writeJsonAtomic,
} from "../base/mod.ts";
import {
  buildLoraAdapter,
  bytesToF32,
  decodeSafetensors,
  loadLoraAdapter,
  type LoraAdapter,
  type LoraBase,
  parseLoraTensorKey,
  readLoraConfig,
  saveLoraAdapter,
  writeSafetensors,
} from "../core/mod.ts";
import type { OptimizerState } from "./optim/optimizer.ts";
import { parseSchedulerState, type SchedulerState } from "./schedule.ts";
import { parseTrainerState, type TrainerState } from "./trainer_state.ts";

export type CheckpointWeights =
  | { kind: "lora"; adapter: LoraAdapter }
  | {
    kind: "full";
    tensors: { name: string; shape: number[]; data: Float32Array }[];
    /** The base model's config.json (copied so the checkpoint is a loadable model dir). */
    modelConfig?: unknown;
  };

export interface CheckpointData {
  step: number;
  weights: CheckpointWeights;
  optimizer: OptimizerState;
  scheduler: SchedulerState;
  /** The trainer's RNG and data-order state (any JSON). */
  rng: unknown;
  trainerState: TrainerState;
  /** The resolved training config (any JSON), to check a resume against. */
  trainingArgs?: unknown;
}

export interface SaveHooks {
  /** Called after each file lands in the temp directory (tests kill the process here). */
  afterFile?: (name: string, tempDir: string) => void | Promise<void>;
}

const CHECKPOINT_RE = /^checkpoint-(\d+)$/;
const TEMP_RE = /^checkpoint-\d+\.(tmp|del|old)-(\d+)$/;
const OPTIMIZER_FILE = "optimizer.safetensors";

const join = (dir: string, name: string) => `${dir.replace(/\/+$/, "")}/${name}`;

export function checkpointName(step: number): string {
  return `checkpoint-${step}`;
}

/** Writes a checkpoint atomically; returns its final directory. */
export async function saveCheckpoint(
  outputDir: string,
  data: CheckpointData,
  hooks: SaveHooks = {},
): Promise<string> {
  if (!(Number.isInteger(data.step) && data.step >= 0)) {
    throw new RangeError(`checkpoint step must be a non-negative integer (got ${data.step})`);
  }
  await Deno.mkdir(outputDir, { recursive: true });
  const finalDir = join(outputDir, checkpointName(data.step));
  const tmp = `${finalDir}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp);
  const done = async (name: string) => {
    await hooks.afterFile?.(name, tmp);
  };
  try {
    if (data.weights.kind === "lora") {
      await saveLoraAdapter(tmp, data.weights.adapter);
      await done("adapter_model.safetensors");
    } else {
      await writeSafetensors(
        join(tmp, "model.safetensors"),
        data.weights.tensors.map((t) => ({
          name: t.name,
          dtype: "F32" as const,
          shape: t.shape,
          data: t.data,
        })),
        { format: "pt" },
      );
      if (data.weights.modelConfig !== undefined) {
        await writeJsonAtomic(join(tmp, "config.json"), data.weights.modelConfig);
      }
      await done("model.safetensors");
    }
    await writeOptimizerState(join(tmp, OPTIMIZER_FILE), data.optimizer);
    await done(OPTIMIZER_FILE);
    await writeJsonAtomic(join(tmp, "scheduler.json"), data.scheduler);
    await writeJsonAtomic(join(tmp, "rng_state.json"), data.rng ?? null);
    if (data.trainingArgs !== undefined) {
      await writeJsonAtomic(join(tmp, "training_args.json"), data.trainingArgs);
    }
    await done("scheduler.json");
    // last: its presence marks a complete checkpoint
    await writeJsonAtomic(join(tmp, "trainer_state.json"), data.trainerState);
    await done("trainer_state.json");
    // a checkpoint of the same step (re-saved after a resume) is moved aside, then replaced
    const old = `${finalDir}.old-${Deno.pid}`;
    let hadOld = false;
    try {
      await Deno.rename(finalDir, old);
      hadOld = true;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    await Deno.rename(tmp, finalDir);
    await syncDir(outputDir);
    if (hadOld) await Deno.remove(old, { recursive: true });
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
  return finalDir;
}

async function writeOptimizerState(path: string, state: OptimizerState): Promise<void> {
  const tensors = state.tensors.flatMap((t) => [
    { name: `${t.name}.exp_avg`, dtype: "F32" as const, shape: t.shape, data: t.m },
    { name: `${t.name}.exp_avg_sq`, dtype: "F32" as const, shape: t.shape, data: t.v },
  ]);
  const steps = Object.fromEntries(state.tensors.map((t) => [t.name, t.step]));
  await writeSafetensors(path, tensors, {
    format: "medglm-adamw",
    hyper: JSON.stringify(state.hyper),
    steps: JSON.stringify(steps),
  });
}

/** Reads `optimizer.safetensors`; errors name the file and the tensor. */
export async function readOptimizerState(path: string): Promise<OptimizerState> {
  const { metadata, tensors } = decodeSafetensors(await Deno.readFile(path), path);
  if (!metadata || metadata.format !== "medglm-adamw") {
    throw new Error(
      `${path}: not an optimizer state file (__metadata__.format is not medglm-adamw)`,
    );
  }
  let steps: Record<string, unknown>, hyper: OptimizerState["hyper"];
  try {
    steps = JSON.parse(metadata.steps ?? "null");
    hyper = JSON.parse(metadata.hyper ?? "null");
  } catch (err) {
    throw new Error(`${path}: bad __metadata__ JSON (${(err as Error).message})`);
  }
  if (!steps || typeof steps !== "object") throw new Error(`${path}: __metadata__.steps missing`);
  if (!hyper || typeof hyper !== "object") throw new Error(`${path}: __metadata__.hyper missing`);
  const out: OptimizerState["tensors"] = [];
  for (const [name, step] of Object.entries(steps)) {
    const m = tensors.get(`${name}.exp_avg`), v = tensors.get(`${name}.exp_avg_sq`);
    if (!m || !v) throw new Error(`${path}: missing ${name}.${m ? "exp_avg_sq" : "exp_avg"}`);
    if (typeof step !== "number" || !Number.isInteger(step) || step < 0) {
      throw new Error(`${path}: step of ${name} must be a non-negative integer`);
    }
    out.push({
      name,
      shape: m.shape,
      step,
      m: bytesToF32(m.data, m.dtype),
      v: bytesToF32(v.data, v.dtype),
    });
  }
  if (tensors.size !== 2 * out.length) {
    throw new Error(`${path}: has tensors that no step entry names`);
  }
  return { hyper, tensors: out };
}

export interface LoadedCheckpoint extends Omit<CheckpointData, "trainingArgs"> {
  dir: string;
  trainingArgs: unknown;
}

/**
 * Loads a checkpoint directory. LoRA weights are checked against `base` when given (the trainer
 * passes its model); without it, the adapter's own tensor shapes define the modules.
 */
export async function loadCheckpoint(dir: string, base?: LoraBase): Promise<LoadedCheckpoint> {
  const root = dir.replace(/\/+$/, "");
  // Our own files (plain JSON.parse semantics), size-capped like every JSON file we read; the
  // trainer state grows with the log history, hence the larger cap.
  const readJson = async (name: string, required = true): Promise<unknown> => {
    const path = join(root, name);
    if (!required && !(await pathExists(path))) return undefined;
    return await readJsonFile(path, { strict: false, maxBytes: MAX_INDEX_JSON_BYTES });
  };
  const trainerState = parseTrainerState(
    await readJson("trainer_state.json"),
    join(root, "trainer_state.json"),
  );
  const scheduler = parseSchedulerState(
    await readJson("scheduler.json"),
    join(root, "scheduler.json"),
  );
  const rng = await readJson("rng_state.json");
  const trainingArgs = await readJson("training_args.json", false);
  const optimizer = await readOptimizerState(join(root, OPTIMIZER_FILE));
  let weights: CheckpointWeights;
  if (await pathExists(join(root, "adapter_config.json"), "file")) {
    weights = {
      kind: "lora",
      adapter: base ? await loadLoraAdapter(root, base) : await loadAdapterStandalone(root),
    };
  } else if (await pathExists(join(root, "model.safetensors"), "file")) {
    const path = join(root, "model.safetensors");
    const { tensors } = decodeSafetensors(await Deno.readFile(path), path);
    weights = {
      kind: "full",
      tensors: [...tensors].map(([name, t]) => ({
        name,
        shape: t.shape,
        data: bytesToF32(t.data, t.dtype),
      })),
      modelConfig: await readJson("config.json", false),
    };
  } else {
    throw new Error(`${root}: no weights (neither adapter_config.json nor model.safetensors)`);
  }
  const match = CHECKPOINT_RE.exec(root.split("/").pop() ?? "");
  return {
    dir: root,
    step: match ? Number(match[1]) : trainerState.global_step,
    weights,
    optimizer,
    scheduler,
    rng,
    trainerState,
    trainingArgs,
  };
}

/** Loads a PEFT adapter directory without a base model: its own tensor shapes define the modules. */
export async function loadAdapterStandalone(dir: string): Promise<LoraAdapter> {
  const config = await readLoraConfig(dir);
  const path = join(dir, "adapter_model.safetensors");
  const { tensors } = decodeSafetensors(await Deno.readFile(path), path);
  const data = new Map<string, { shape: number[]; data: Float32Array }>();
  const linear = new Map<string, [number, number]>();
  for (const [name, t] of tensors) {
    data.set(name, { shape: t.shape, data: bytesToF32(t.data, t.dtype) });
    const key = parseLoraTensorKey(name);
    if (!key) continue;
    const shape = linear.get(key.module) ?? [0, 0];
    if (key.which === "A") shape[1] = t.shape[1];
    else shape[0] = t.shape[0];
    linear.set(key.module, shape);
  }
  return buildLoraAdapter(config, data, { linearModules: linear, name: dir }, path);
}

/** Complete checkpoints of a run, oldest first (temp and half-deleted directories are skipped). */
export async function listCheckpoints(outputDir: string): Promise<{ dir: string; step: number }[]> {
  const out: { dir: string; step: number }[] = [];
  try {
    for await (const e of Deno.readDir(outputDir)) {
      const m = CHECKPOINT_RE.exec(e.name);
      if (!m || !e.isDirectory) continue;
      const dir = join(outputDir, e.name);
      if (await pathExists(join(dir, "trainer_state.json"), "file")) {
        out.push({ dir, step: Number(m[1]) });
      }
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint directory of a run, or null. */
export async function findLatestCheckpoint(outputDir: string): Promise<string | null> {
  const all = await listCheckpoints(outputDir);
  return all.length ? all[all.length - 1].dir : null;
}

function pidAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes leftovers of interrupted saves and rotations (`checkpoint-N.tmp-PID`, `.del-PID`,
 * `.old-PID`) whose process is gone; returns what was removed. A `.old-PID` whose
 * `checkpoint-N` is missing (killed between the two renames) is put back instead.
 */
export async function cleanStaleTemps(outputDir: string): Promise<string[]> {
  const removed: string[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(outputDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  for (const e of entries) {
    const m = TEMP_RE.exec(e.name);
    if (!m || !e.isDirectory || pidAlive(Number(m[2]))) continue;
    const path = join(outputDir, e.name);
    if (m[1] === "old") {
      const final = join(outputDir, e.name.replace(/\.old-\d+$/, ""));
      try {
        await Deno.stat(final);
      } catch {
        await Deno.rename(path, final);
        continue;
      }
    }
    await Deno.remove(path, { recursive: true });
    removed.push(path);
  }
  return removed;
}

/**
 * Keeps the newest `keep` checkpoints plus `best` (the best by eval loss, a directory path or
 * name); deletes the others. `keep` 0 keeps everything. Returns the deleted directories.
 */
export async function rotateCheckpoints(
  outputDir: string,
  keep: number,
  best: string | null,
): Promise<string[]> {
  if (keep <= 0) return [];
  const all = await listCheckpoints(outputDir);
  const bestName = best ? best.replace(/\/+$/, "").split("/").pop() : null;
  const newest = new Set(all.slice(-keep).map((c) => c.dir));
  const removed: string[] = [];
  for (const c of all) {
    if (newest.has(c.dir) || c.dir.split("/").pop() === bestName) continue;
    const doomed = `${c.dir}.del-${Deno.pid}`;
    await Deno.rename(c.dir, doomed);
    await Deno.remove(doomed, { recursive: true });
    removed.push(c.dir);
  }
  return removed;
}
