/**
 * Model checkpoints as HF directories hold them: one safetensors file, safetensors shards with
 * `model.safetensors.index.json`, torch `.bin` zip shards with `pytorch_model.bin.index.json`, or
 * single `.bin` / `.safetensors` files (adapters). Opening reads only headers and pickles; tensors
 * are then read one at a time, shard by shard, so host memory stays near one tensor.
 */

import { bytesToF32, convertBytes, type Dtype, type FloatDtype } from "./dtype.ts";
import {
  createProgress,
  isJsonObject,
  MAX_INDEX_JSON_BYTES,
  type ProgressStream,
  readJsonFile,
} from "../../base/mod.ts";
import { openSafetensors } from "./safetensors.ts";
import { readStoredTensor, type StoredTensor } from "./stored_tensor.ts";
import { openTorchZip } from "./torch_zip.ts";

export type CheckpointFormat =
  | "safetensors"
  | "safetensors-sharded"
  | "torch"
  | "torch-sharded";

export interface CheckpointShard {
  path: string;
  kind: "safetensors" | "torch";
  tensors: Map<string, StoredTensor>;
}

export interface Checkpoint {
  /** The directory (or the single file) that was opened. */
  dir: string;
  format: CheckpointFormat;
  /** The index file, when the checkpoint is sharded through one. */
  indexPath?: string;
  shards: CheckpointShard[];
  /** Every tensor name, shard by shard in file order. */
  tensorNames: string[];
  /** Sum of the tensors' bytes in their stored dtypes. */
  totalBytes: number;
  /** Where each tensor is. */
  locate: Map<string, { shard: CheckpointShard; tensor: StoredTensor }>;
}

export interface LoadedTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Raw little-endian bytes of the stored dtype, row-major: a fresh buffer at offset 0. */
  data: Uint8Array;
  /** Path of the shard the tensor came from. */
  shard: string;
}

const SAFETENSORS_INDEX = "model.safetensors.index.json";
const SAFETENSORS_SINGLE = "model.safetensors";
const TORCH_INDEX = "pytorch_model.bin.index.json";
const TORCH_SINGLE = "pytorch_model.bin";
/**
 * Most shards an index may name: real checkpoints have a few (8 for ChatGLM-6B, under 200 for the
 * largest public models); each one is a file to open, so a hostile index is refused up front.
 */
export const MAX_INDEX_SHARDS = 10_000;
// Pickles HF trainers leave next to weights; they are not state dicts.
const NOT_WEIGHTS = /^(training_args|optimizer|scheduler|rng_state.*|trainer_state)\.bin$/;

function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Opens the weights of a model directory (or a single weights file). Looks, in order, for
 * `model.safetensors.index.json`, `model.safetensors`, `pytorch_model.bin.index.json`,
 * `pytorch_model.bin`, then any other `*.safetensors`, then any other `*.bin` files.
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch {
    throw new Error(`${dir}: checkpoint directory not found`);
  }
  if (stat.isFile) {
    const kind = dir.endsWith(".safetensors") ? "safetensors" : "torch";
    return await fromShards(dir, kind === "safetensors" ? "safetensors" : "torch", [dir], kind);
  }
  if (await isFile(join(dir, SAFETENSORS_INDEX))) {
    return await fromIndex(dir, join(dir, SAFETENSORS_INDEX), "safetensors");
  }
  if (await isFile(join(dir, SAFETENSORS_SINGLE))) {
    return await fromShards(dir, "safetensors", [join(dir, SAFETENSORS_SINGLE)], "safetensors");
  }
  if (await isFile(join(dir, TORCH_INDEX))) {
    return await fromIndex(dir, join(dir, TORCH_INDEX), "torch");
  }
  if (await isFile(join(dir, TORCH_SINGLE))) {
    return await fromShards(dir, "torch", [join(dir, TORCH_SINGLE)], "torch");
  }
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  names.sort();
  const st = names.filter((n) => n.endsWith(".safetensors"));
  if (st.length) {
    return await fromShards(
      dir,
      "safetensors",
      st.map((n) => join(dir, n)),
      "safetensors",
    );
  }
  const bins = names.filter((n) => n.endsWith(".bin") && !NOT_WEIGHTS.test(n));
  if (bins.length) return await fromShards(dir, "torch", bins.map((n) => join(dir, n)), "torch");
  throw new Error(
    `${dir}: no weights found (looked for ${SAFETENSORS_INDEX}, ${SAFETENSORS_SINGLE}, ` +
      `${TORCH_INDEX}, ${TORCH_SINGLE}, *.safetensors, *.bin)`,
  );
}

async function openShard(path: string, kind: "safetensors" | "torch"): Promise<CheckpointShard> {
  const file = kind === "safetensors" ? await openSafetensors(path) : await openTorchZip(path);
  return { path, kind, tensors: file.tensors };
}

function assemble(
  dir: string,
  format: CheckpointFormat,
  shards: CheckpointShard[],
  indexPath?: string,
): Checkpoint {
  const locate = new Map<string, { shard: CheckpointShard; tensor: StoredTensor }>();
  const tensorNames: string[] = [];
  let totalBytes = 0;
  for (const shard of shards) {
    for (const [name, tensor] of shard.tensors) {
      const prev = locate.get(name);
      if (prev) {
        throw new Error(
          `${dir}: tensor ${JSON.stringify(name)} is in both ${prev.shard.path} and ${shard.path}`,
        );
      }
      locate.set(name, { shard, tensor });
      tensorNames.push(name);
      totalBytes += tensor.byteLength;
    }
  }
  return { dir, format, indexPath, shards, tensorNames, totalBytes, locate };
}

async function fromShards(
  dir: string,
  kind: "safetensors" | "torch",
  paths: string[],
  format: CheckpointFormat,
): Promise<Checkpoint> {
  const shards: CheckpointShard[] = [];
  for (const p of paths) shards.push(await openShard(p, kind));
  return assemble(dir, paths.length > 1 ? `${kind}-sharded` : format, shards);
}

function checkShardCount(indexPath: string, count: number, atLeast = false): void {
  if (count > MAX_INDEX_SHARDS) {
    throw new Error(
      `${indexPath}: weight_map names ${
        atLeast ? `more than ${MAX_INDEX_SHARDS}` : `${count}`
      } shard files, over the limit of ${MAX_INDEX_SHARDS} (real checkpoints have a few); ` +
        "refusing it",
    );
  }
}

async function fromIndex(
  dir: string,
  indexPath: string,
  kind: "safetensors" | "torch",
): Promise<Checkpoint> {
  let json: unknown;
  try {
    // The engine's own parser first (several times faster than the strict one): an index naming
    // more shards than any checkpoint has is refused before the strict parse (which then still
    // refuses a tensor named twice) spends a second on it.
    const quick = await readJsonFile(indexPath, { maxBytes: MAX_INDEX_JSON_BYTES, strict: false });
    const quickMap = isJsonObject(quick) ? quick.weight_map : undefined;
    if (isJsonObject(quickMap)) {
      // Counting stops past the limit: a Set of 200k names alone costs a second.
      const seen = new Set<unknown>();
      for (const k in quickMap) {
        seen.add(quickMap[k]);
        if (seen.size > MAX_INDEX_SHARDS) break;
      }
      checkShardCount(indexPath, seen.size, true);
    }
    json = await readJsonFile(indexPath, { maxBytes: MAX_INDEX_JSON_BYTES });
  } catch (err) {
    const msg = (err as Error).message;
    if (msg.includes("(real checkpoints have a few); refusing it")) throw err;
    const reason = msg.startsWith(`${indexPath}: `) ? msg.slice(indexPath.length + 2) : msg;
    throw new Error(`${indexPath}: not a valid index file: ${reason}`);
  }
  const map = isJsonObject(json) ? json.weight_map : undefined;
  if (!isJsonObject(map)) {
    throw new Error(
      `${indexPath}: not a valid index file: "weight_map" is missing or not an object`,
    );
  }
  // Sets and maps throughout: an index naming 200k shards must cost linear time to refuse.
  const shardOf = new Map<string, string>();
  const shardNames = new Set<string>();
  for (const [name, file] of Object.entries(map)) {
    if (
      typeof file !== "string" || !file || file.includes("/") || file.includes("\\") ||
      file === ".."
    ) {
      throw new Error(
        `${indexPath}: weight_map entry ${JSON.stringify(name)} names no valid shard file (${
          JSON.stringify(file)
        })`,
      );
    }
    shardOf.set(name, file);
    shardNames.add(file);
  }
  checkShardCount(indexPath, shardNames.size);
  const sorted = [...shardNames].sort();
  // Every shard must exist before any is opened, so a missing one fails at once.
  for (const file of sorted) {
    if (!(await isFile(join(dir, file)))) {
      throw new Error(`${indexPath}: names shard ${file}, which is missing from ${dir}`);
    }
  }
  const shards: CheckpointShard[] = [];
  const shardByFile = new Map<string, CheckpointShard>();
  for (const file of sorted) {
    const path = join(dir, file);
    const shard = await openShard(path, kind);
    for (const name of shard.tensors.keys()) {
      const want = shardOf.get(name);
      if (want === undefined) {
        throw new Error(
          `${path}: holds tensor ${JSON.stringify(name)}, which ${indexPath} does not list`,
        );
      }
      if (want !== file) {
        throw new Error(
          `${path}: holds tensor ${JSON.stringify(name)}, which ${indexPath} places in ${want}`,
        );
      }
    }
    shards.push(shard);
    shardByFile.set(file, shard);
  }
  for (const [name, file] of shardOf) {
    if (!shardByFile.get(file)!.tensors.has(name)) {
      throw new Error(
        `${indexPath}: places tensor ${JSON.stringify(name)} in ${file}, which does not hold it`,
      );
    }
  }
  return assemble(dir, `${kind}-sharded`, shards, indexPath);
}

export interface IterateOptions {
  /** Only these tensors (others are not read). */
  names?: Iterable<string> | ((name: string) => boolean);
  /** Show a progress bar on stderr (bytes read); a string sets its label. */
  progress?: boolean | string;
  /** Where the progress bar goes (default stderr). */
  progressStream?: ProgressStream;
}

/**
 * Yields every tensor's bytes, shard by shard in file order, reading one tensor at a time (each
 * shard opened once), so peak host memory is about the largest tensor.
 */
export async function* iterateTensors(
  ckpt: Checkpoint,
  options: IterateOptions = {},
): AsyncGenerator<LoadedTensor> {
  const wanted = nameFilter(ckpt, options.names);
  let total = 0;
  for (const shard of ckpt.shards) {
    for (const [name, t] of shard.tensors) if (wanted(name)) total += t.byteLength;
  }
  const progress = options.progress
    ? createProgress({
      label: typeof options.progress === "string" ? options.progress : "loading weights",
      total,
      unit: "B",
      stream: options.progressStream,
    })
    : undefined;
  for (const shard of ckpt.shards) {
    const names = [...shard.tensors.keys()].filter(wanted);
    if (!names.length) continue;
    const file = await Deno.open(shard.path, { read: true });
    try {
      for (const name of names) {
        const t = shard.tensors.get(name)!;
        const data = await readStoredTensor(file, shard.path, t);
        progress?.tick(t.byteLength);
        yield { name, dtype: t.dtype, shape: t.shape, data, shard: shard.path };
      }
    } finally {
      file.close();
    }
  }
  progress?.done();
}

function nameFilter(
  ckpt: Checkpoint,
  names: IterateOptions["names"],
): (name: string) => boolean {
  if (!names) return () => true;
  if (typeof names === "function") return names;
  const set = new Set(names);
  for (const n of set) {
    if (!ckpt.locate.has(n)) throw new Error(`${ckpt.dir}: no tensor named ${JSON.stringify(n)}`);
  }
  return (n) => set.has(n);
}

/** Reads one tensor's raw bytes. */
export async function readTensor(ckpt: Checkpoint, name: string): Promise<LoadedTensor> {
  const where = ckpt.locate.get(name);
  if (!where) throw new Error(`${ckpt.dir}: no tensor named ${JSON.stringify(name)}`);
  const file = await Deno.open(where.shard.path, { read: true });
  try {
    const data = await readStoredTensor(file, where.shard.path, where.tensor);
    const { dtype, shape } = where.tensor;
    return { name, dtype, shape, data, shard: where.shard.path };
  } finally {
    file.close();
  }
}

/** Reads one tensor as f32 values (from any stored float or integer dtype). */
export async function readTensorAsF32(ckpt: Checkpoint, name: string): Promise<Float32Array> {
  const t = await readTensor(ckpt, name);
  return bytesToF32(t.data, t.dtype);
}

/** A loaded tensor's bytes converted to a float dtype (e.g. the run's F16). */
export function tensorBytesAs(t: LoadedTensor, dtype: FloatDtype): Uint8Array {
  return convertBytes(t.data, t.dtype, dtype);
}
