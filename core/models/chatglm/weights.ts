/**
 * Streams a ChatGLM checkpoint to the GPU: checks names, shapes and dtypes against config.json
 * first (nothing is uploaded for a wrong checkpoint), then reads one tensor at a time with
 * positioned reads, shard by shard, converts it to the run's dtype and uploads it, so host memory
 * stays near one tensor (never a whole shard).
 *
 * One copy of every weight: on a software adapter the matmul kernels read a linear weight only
 * as its packed texture, so unless the model will be trained each one is packed as it is read
 * (counted in load time, on the progress bar) and never gets a storage buffer: the texture is
 * the weight's only form, and the first forward has nothing left to pack.
 *
 * Each tensor kind has its own upload function (float parameters, linear weights), so that other
 * kinds (quantized weights) add a function rather than a branch in one loop.
 */

import type { Gpu } from "../../gpu/device.ts";
import { beginRecording, discardRecording, submit } from "../../gpu/recording.ts";
import { type Checkpoint, readTensor as readCkptTensor } from "../../io/checkpoint.ts";
import { bytesToF32, convertBytes, type Dtype, dtypeSize } from "../../io/dtype.ts";
import { readAt } from "../../io/file_range.ts";
import { readStoredTensor, type StoredTensor } from "../../io/stored_tensor.ts";
import { createProgress } from "../../../base/mod.ts";
import {
  forwardPacksWeight,
  hostPackedWeight,
  prepackWeight,
  WRITE_PIECE_BYTES,
} from "../../kernels/mod.ts";
import {
  dropStorage,
  emptyTensor,
  markWritten,
  maxChunkBytes,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import type { ChatGLMConfig } from "./config.ts";
import { checkParameters, isIgnoredTensor, LM_HEAD, WORD_EMBEDDINGS } from "./params.ts";

export type WeightDtype = "f32" | "f16";

/**
 * The float weights' storage dtype when a load asks for none — one rule for every architecture
 * (ChatGLM-6B and the Llama family); compute is f32 either way:
 * - no `shader-f16`: f32;
 * - a hardware adapter: f16 (half the memory and half the bytes per decoded token: a Qwen3-8B is
 *   16 GB instead of 30);
 * - a software adapter (llvmpipe): f32 when the model's f32 weights take at most
 *   {@link SOFTWARE_F32_MEMORY_SHARE} of host memory (the adapter's memory), f16 otherwise (a
 *   full-size ChatGLM-6B on a 24 GB machine). Measured there (issue #20, three runs each, same-run
 *   ratios): `deno run -A bench/small_model.ts` (hidden 1024, 8 layers) f16 ÷ f32 weights 0.59–0.97
 *   at prefill and 0.78–0.91 at decode; `deno task bench matmul` f16 ÷ f32 1.06–1.50 at M = 1 on
 *   the full-size shapes (K = 4096, 16384) but 0.86–1.47 at M = 16 and 0.69–1.10 at M = 512.
 * `parameters` (the model's float parameter count) is needed for the software-adapter rule;
 * without it f16 is chosen there (the memory-safe choice).
 */
export function defaultWeightDtype(
  gpu: { hasF16: boolean; isSoftware?: boolean },
  parameters?: number,
): WeightDtype {
  return weightDtypeChoice(gpu, parameters).dtype;
}

/** Share of host memory f32 weights may take for f32 to be the default on a software adapter. */
export const SOFTWARE_F32_MEMORY_SHARE = 0.5;

/** {@link defaultWeightDtype}'s choice and why, in words (gpu-info, load logs). */
export function weightDtypeChoice(
  gpu: { hasF16: boolean; isSoftware?: boolean },
  parameters?: number,
  hostBytes?: number,
): { dtype: WeightDtype; reason: string } {
  if (!gpu.hasF16) return { dtype: "f32", reason: "no shader-f16" };
  if (!gpu.isSoftware) {
    return { dtype: "f16", reason: "hardware adapter: half the memory and bytes per token" };
  }
  const host = hostBytes ?? hostMemoryBytes();
  if (parameters === undefined || host === null) {
    return {
      dtype: "f16",
      reason: `software adapter, ${
        parameters === undefined ? "model size" : "host memory"
      } unknown: the memory-safe f16`,
    };
  }
  const budget = SOFTWARE_F32_MEMORY_SHARE * host;
  const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;
  if (parameters * 4 <= budget) {
    return {
      dtype: "f32",
      reason: `software adapter: f32 weights (${gb(parameters * 4)}) fit in ${
        SOFTWARE_F32_MEMORY_SHARE * 100
      }% of host memory (${gb(budget)}), and f16 weights are slower than f32 here at prefill`,
    };
  }
  return {
    dtype: "f16",
    reason: `software adapter: f32 weights (${gb(parameters * 4)}) exceed ${
      SOFTWARE_F32_MEMORY_SHARE * 100
    }% of host memory (${gb(budget)})`,
  };
}

/** Total host memory, or null where it cannot be read (no `sys` permission). */
function hostMemoryBytes(): number | null {
  try {
    return Deno.systemMemoryInfo().total;
  } catch {
    return null;
  }
}

/** Float parameters of a model from its parameter table (name, shape). */
export function parameterCount(table: Iterable<{ shape: readonly number[] }>): number {
  let n = 0;
  for (const { shape } of table) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

export interface LoadProgress {
  /** Bytes read from the checkpoint so far (stored dtype). */
  loadedBytes: number;
  totalBytes: number;
  /** The tensor just uploaded. */
  tensor: string;
}

export interface LoadWeightsOptions {
  dtype: WeightDtype;
  onProgress?: (p: LoadProgress) => void;
  /** Draw a progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean;
  /**
   * The model will be trained (LoRA or full): keep every weight's storage buffer, which the
   * backward kernels and weight updates read. Default false: one copy per weight.
   */
  trainable?: boolean;
  /** Largest storage chunk in bytes (default: the device's binding limit; tests force it small). */
  chunkBytes?: number;
}

export interface UploadedWeights {
  /** Every parameter by checkpoint name; `lm_head.weight` is the embedding's tensor when tied. */
  tensors: Map<string, Tensor>;
  /** The output layer reuses `transformer.word_embeddings.weight` (lm_head absent). */
  tiedHead: boolean;
  /** Weights kept only as packed textures (storage freed). */
  packedOnly: Set<string>;
  /** Where the load's time went. */
  timing: LoadTiming;
}

/** Stored dtypes a float parameter may have. */
const FLOAT_DTYPES: ReadonlySet<Dtype> = new Set(["F32", "F16", "BF16"]);

/** A linear layer's weight [out, in] (read by matmul as y = x·Wᵀ): the packable kind. */
export function isLinearWeight(name: string): boolean {
  return name === LM_HEAD ||
    /^transformer\.layers\.\d+\.(attention\.(query_key_value|dense)|mlp\.dense_(h_to_4h|4h_to_h))\.weight$/
      .test(name);
}

/**
 * Uploads every parameter of the checkpoint as a GPU tensor keyed by checkpoint name. In f16 runs
 * every float parameter is stored as f16 (compute stays f32); in f32 runs as f32.
 */
export async function uploadChatGLMWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  config: ChatGLMConfig,
  options: LoadWeightsOptions,
): Promise<UploadedWeights> {
  const stored = ckpt.tensorNames.map((name) => ({
    name,
    shape: ckpt.locate.get(name)!.tensor.shape,
  }));
  const { tiedHead } = checkParameters(config, stored, ckpt.dir);
  return await streamWeights(gpu, ckpt, {
    wanted: (name) => !isIgnoredTensor(name, config),
    packable: (name) => isLinearWeight(name),
    tiedHead: tiedHead ? { head: LM_HEAD, embedding: WORD_EMBEDDINGS } : null,
  }, options);
}

/**
 * Uploads the checkpoint's tensors that `wanted` selects (any architecture; names and shapes
 * already checked), streamed as for ChatGLM; no weight is packed ahead (the first forward packs
 * what its kernels read).
 */
export async function uploadWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  wanted: (name: string) => boolean,
  options: LoadWeightsOptions,
): Promise<Map<string, Tensor>> {
  const selection = { wanted, packable: () => false, tiedHead: null };
  return (await streamWeights(gpu, ckpt, selection, options)).tensors;
}

/** Which tensors a load reads, which it packs for the matmul kernels, and a tied output layer. */
export interface WeightSelection {
  wanted: (name: string) => boolean;
  /** Linear weights [out, in] read by matmul: packed during the load unless trainable. */
  packable: (name: string) => boolean;
  /** The output layer reuses the embedding table (its checkpoint name is absent). */
  tiedHead: { head: string; embedding: string } | null;
}

/** Streams the selected tensors shard by shard, one tensor at a time (see the module doc). */
async function streamWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  sel: WeightSelection,
  options: LoadWeightsOptions,
): Promise<UploadedWeights> {
  for (const name of ckpt.tensorNames) {
    const t = ckpt.locate.get(name)!;
    if (sel.wanted(name) && !FLOAT_DTYPES.has(t.tensor.dtype)) {
      throw new Error(
        `${t.shard.path}: tensor ${name} is stored as ${t.tensor.dtype}; expected F32, F16 or BF16`,
      );
    }
  }
  const wanted = ckpt.tensorNames.filter(sel.wanted);
  const totalBytes = wanted.reduce((n, name) => n + ckpt.locate.get(name)!.tensor.byteLength, 0);
  const bar = (options.progressBar ?? Deno.stderr.isTerminal())
    ? createProgress({ label: `loading ${options.dtype} weights`, total: totalBytes, unit: "B" })
    : undefined;
  const tensors = new Map<string, Tensor>();
  const packedOnly = new Set<string>();
  let loadedBytes = 0;
  const reader = new ChunkReader();
  try {
    for (const shard of ckpt.shards) {
      const names = [...shard.tensors.keys()].filter(sel.wanted);
      if (!names.length) continue;
      const file = await Deno.open(shard.path, { read: true });
      try {
        for (const [j, name] of names.entries()) {
          const stored = shard.tensors.get(name)!;
          const source: TensorSource = { name, path: shard.path, file, stored, reader };
          const after = shard.tensors.get(names[j + 1]);
          if (after && !after.strides) {
            // Its first chunk: at most one binding-sized chunk of the run's dtype.
            const limit = options.chunkBytes ?? maxChunkBytes(gpu);
            const length = Math.floor(limit / elBytes(options.dtype)) * dtypeSize(after.dtype);
            source.next = { offset: after.byteOffset, length: Math.min(after.byteLength, length) };
          }
          // A tied embedding is also the output layer: packed like any linear weight (the
          // lookup then reads its texture: one copy).
          const tied = sel.tiedHead?.embedding === name;
          const tensor = sel.packable(name) || tied
            ? await uploadLinearWeight(gpu, source, options)
            : await uploadFloatParameter(gpu, source, options);
          tensors.set(name, tensor);
          if (tensor.meta.storageDropped) packedOnly.add(name);
          loadedBytes += stored.byteLength;
          bar?.tick(stored.byteLength);
          options.onProgress?.({ loadedBytes, totalBytes, tensor: name });
        }
      } finally {
        await reader.settle();
        file.close();
      }
    }
  } catch (err) {
    for (const t of tensors.values()) if (!t.released) releaseTensor(t);
    throw err;
  } finally {
    bar?.done();
  }
  await reader.drain();
  if (sel.tiedHead) tensors.set(sel.tiedHead.head, tensors.get(sel.tiedHead.embedding)!);
  gpu.checkErrors();
  return { tensors, tiedHead: sel.tiedHead !== null, packedOnly, timing: reader.timing };
}

/**
 * Uploaded bytes after which the load waits for the GPU to drain its staging copies: it waits for
 * the previous such mark, not this one, so the GPU copies one batch while the next is read.
 */
const STAGING_BYTES = 128 * 2 ** 20;

/** Where a load's time went (milliseconds): reading, handing bytes to the GPU, waiting for it. */
export interface LoadTiming {
  readMs: number;
  uploadMs: number;
  waitMs: number;
}

/** One stored tensor of an open shard, read by positioned reads. */
export interface TensorSource {
  name: string;
  path: string;
  file: Deno.FsFile;
  stored: StoredTensor;
  reader: ChunkReader;
  /** Bytes of the file read after this tensor (its successor's first chunk), read ahead. */
  next?: { offset: number; length: number };
}

/**
 * Positioned reads into two reusable scratch buffers (grown to the largest chunk read), so the load
 * allocates no buffer per tensor and reads the next chunk while the GPU takes this one; it also
 * times the load's phases ({@link LoadTiming}).
 */
export class ChunkReader {
  /** Two scratch buffers: the bytes being uploaded, and the read-ahead. */
  #scratch = [new Uint8Array(0), new Uint8Array(0)];
  #current = 0;
  #ahead: {
    file: Deno.FsFile;
    offset: number;
    length: number;
    buffer: number;
    done: Promise<Uint8Array>;
  } | null = null;
  #unflushed = 0;
  #inflight: Promise<unknown> = Promise.resolve();
  readonly timing: LoadTiming = { readMs: 0, uploadMs: 0, waitMs: 0 };
  /**
   * After a chunk's upload: submits (so the driver copies it out of its staging memory) and,
   * every {@link STAGING_BYTES}, waits for the GPU to finish the batch before, so that staging
   * copies are freed as the load goes instead of piling up (a whole 1 GiB embedding measured)
   * until the load ends, while the GPU copies this batch as the next one is read.
   */
  async flush(gpu: Gpu, bytes: number): Promise<void> {
    gpu.device.queue.submit([]);
    this.#unflushed += bytes;
    if (this.#unflushed >= STAGING_BYTES) {
      this.#unflushed = 0;
      const t0 = performance.now();
      await this.#inflight;
      this.timing.waitMs += performance.now() - t0;
      this.#inflight = gpu.device.queue.onSubmittedWorkDone();
    }
  }
  /** Waits for the last batch (the end of a load). */
  async drain(): Promise<void> {
    const t0 = performance.now();
    await this.#inflight;
    this.timing.waitMs += performance.now() - t0;
  }
  /**
   * Bytes [offset, offset + length) of the file; valid until the next read. Served from the
   * read-ahead when {@link prefetch} named a range holding it.
   */
  async read(file: Deno.FsFile, path: string, offset: number, length: number) {
    const t0 = performance.now();
    const ahead = this.#ahead;
    this.#ahead = null;
    let out: Uint8Array | null = null;
    if (ahead) {
      // One read at a time on a file (reads seek): the read-ahead finishes first in any case.
      const got = await ahead.done.catch(() => null);
      if (
        got && ahead.file === file && offset >= ahead.offset &&
        offset + length <= ahead.offset + ahead.length
      ) {
        this.#current = ahead.buffer;
        out = got.subarray(offset - ahead.offset, offset - ahead.offset + length);
      }
    }
    if (!out) out = await readAt(file, offset, length, path, this.#buffer(this.#current, length));
    this.timing.readMs += performance.now() - t0;
    return out;
  }
  /**
   * Starts reading [offset, offset + length) of the file into the other scratch buffer, so the
   * next {@link read} overlaps the upload of the bytes just returned (which stay valid).
   */
  prefetch(file: Deno.FsFile, path: string, offset: number, length: number): void {
    if (length <= 0) return;
    const buffer = 1 - this.#current;
    const done = readAt(file, offset, length, path, this.#buffer(buffer, length));
    done.catch(() => {}); // a read-ahead nobody uses may fail unseen; a real read reports it
    this.#ahead = { file, offset, length, buffer, done };
  }
  /** Waits for a read-ahead (before anything else seeks the file). */
  async settle(): Promise<void> {
    const ahead = this.#ahead;
    this.#ahead = null;
    if (ahead) await ahead.done.catch(() => null);
  }
  #buffer(i: number, length: number): Uint8Array {
    if (this.#scratch[i].length < length) this.#scratch[i] = new Uint8Array(length);
    return this.#scratch[i];
  }
  /** Runs `upload` (handing bytes to the GPU: conversion, writeBuffer, writeTexture), timed. */
  upload<T>(upload: () => T): T {
    const t0 = performance.now();
    try {
      return upload();
    } finally {
      this.timing.uploadMs += performance.now() - t0;
    }
  }
}

/** Raw bytes of the stored dtype → bytes of the run's dtype (the input itself when equal). */
function toRunBytes(raw: Uint8Array, from: Dtype, dtype: WeightDtype): Uint8Array {
  if (dtype === "f16") return convertBytes(raw, from, "F16");
  if (from === "F32") return raw;
  const f = bytesToF32(raw, from);
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

/**
 * Reads a float tensor into a new storage tensor of the run's dtype, one storage chunk (≤ the
 * binding limit) at a time: the host holds one chunk, never the whole tensor. After each chunk an
 * empty submit lets the driver free its staging copy (queued writes are otherwise kept until
 * the next submit: a whole 1 GiB embedding).
 */
async function uploadStorage(
  gpu: Gpu,
  src: TensorSource,
  options: LoadWeightsOptions,
): Promise<Tensor> {
  return await fillStorage(gpu, newWeightTensor(gpu, src, options), src, options);
}

function newWeightTensor(gpu: Gpu, src: TensorSource, options: LoadWeightsOptions): Tensor {
  return emptyTensor(gpu, src.stored.shape, options.dtype, {
    label: src.name,
    chunkBytes: options.chunkBytes,
  });
}

/** Reads chunk `i` of `t`'s rows from the source, in the run's dtype (valid until the next read). */
async function readChunk(
  t: Tensor,
  i: number,
  src: TensorSource,
  options: LoadWeightsOptions,
): Promise<Uint8Array> {
  const c = t.chunks[i];
  const srcRow = t.rowLength * dtypeSize(src.stored.dtype);
  const raw = await src.reader.read(
    src.file,
    src.path,
    src.stored.byteOffset + c.rowStart * srcRow,
    c.rows * srcRow,
  );
  const following = t.chunks[i + 1];
  if (following) {
    const at = src.stored.byteOffset + following.rowStart * srcRow;
    src.reader.prefetch(src.file, src.path, at, following.rows * srcRow);
  } else if (src.next) src.reader.prefetch(src.file, src.path, src.next.offset, src.next.length);
  return src.reader.upload(() => toRunBytes(raw, src.stored.dtype, options.dtype));
}

async function fillStorage(
  gpu: Gpu,
  t: Tensor,
  src: TensorSource,
  options: LoadWeightsOptions,
): Promise<Tensor> {
  const { stored } = src;
  try {
    const queue = gpu.device.queue;
    const write = (c: { buffer: GPUBuffer; byteOffset: number }, bytes: Uint8Array) => {
      if (bytes.byteLength % 4 === 0) {
        // In pieces, each submitted: small staging copies are recycled (WRITE_PIECE_BYTES).
        for (let at = 0; at < bytes.byteLength; at += WRITE_PIECE_BYTES) {
          const n = Math.min(WRITE_PIECE_BYTES, bytes.byteLength - at);
          queue.writeBuffer(c.buffer, c.byteOffset + at, bytes as Uint8Array<ArrayBuffer>, at, n);
          queue.submit([]);
        }
      } else {
        const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
        padded.set(bytes);
        queue.writeBuffer(c.buffer, c.byteOffset, padded);
      }
    };
    if (stored.strides) {
      // A non-contiguous torch view (rare): gathered whole, then written chunk by chunk.
      const all = toRunBytes(
        await src.reader.settle().then(() => readStoredTensor(src.file, src.path, stored)),
        stored.dtype,
        options.dtype,
      );
      for (const c of t.chunks) {
        if (c.byteLength > 0) {
          write(
            c,
            all.subarray(c.rowStart * t.rowLength * elBytes(options.dtype)).subarray(
              0,
              c.byteLength,
            ),
          );
        }
      }
    } else {
      for (let i = 0; i < t.chunks.length; i++) {
        if (t.chunks[i].byteLength === 0) continue;
        const bytes = await readChunk(t, i, src, options);
        src.reader.upload(() => write(t.chunks[i], bytes));
        await src.reader.flush(gpu, t.chunks[i].byteLength);
      }
    }
    markWritten(t);
  } catch (err) {
    releaseTensor(t);
    throw err;
  }
  return t;
}

function elBytes(dtype: WeightDtype): number {
  return dtype === "f16" ? 2 : 4;
}

/** A float parameter (embedding, LayerNorm, bias): one storage tensor. */
export function uploadFloatParameter(
  gpu: Gpu,
  src: TensorSource,
  options: LoadWeightsOptions,
): Promise<Tensor> {
  return uploadStorage(gpu, src, options);
}

/**
 * A linear weight. For inference on a software adapter it is written, chunk by chunk as it is
 * read, straight into the textures the matmul kernels sample (the file's own row-major bytes):
 * it never has a storage buffer (one copy; a tied embedding's lookup reads the same texture).
 * Otherwise (training, a hardware adapter, a shape the texture kernels do not take) it is
 * uploaded to storage; when the model is trained on a software adapter the forward packs its
 * texture from there at first use.
 */
export async function uploadLinearWeight(
  gpu: Gpu,
  src: TensorSource,
  options: LoadWeightsOptions,
): Promise<Tensor> {
  const t = newWeightTensor(gpu, src, options);
  const host = options.trainable || src.stored.strides || !forwardPacksWeight(gpu, t)
    ? null
    : hostPackedWeight(gpu, t);
  if (!host) return await fillStorage(gpu, t, src, options);
  dropStorage(t, PACKED_ONLY);
  try {
    for (let i = 0; i < t.chunks.length; i++) {
      const bytes = await readChunk(t, i, src, options);
      src.reader.upload(() => host.writeChunk(i, bytes));
      await src.reader.flush(gpu, t.chunks[i].byteLength);
    }
  } catch (err) {
    releaseTensor(t);
    throw err;
  }
  return t;
}

const PACKED_ONLY = "kept only as its packed texture for inference; load the model with " +
  "trainable: true to train it or read it back";

/**
 * Packs a linear weight into the matmul's textures now (software adapters; nothing elsewhere)
 * and, with `dropStorageAfter`, frees its storage buffer once packed.
 */
export async function packWeight(gpu: Gpu, tensor: Tensor, dropStorageAfter: boolean) {
  if (!forwardPacksWeight(gpu, tensor)) return;
  const rec = beginRecording(gpu);
  let packed = false;
  try {
    packed = prepackWeight(rec, tensor);
  } catch (err) {
    discardRecording(rec);
    releaseTensor(tensor);
    throw err;
  }
  if (packed) await submit(rec);
  else discardRecording(rec);
  if (packed && dropStorageAfter) dropStorage(tensor, PACKED_ONLY);
}

/** Re-reads one parameter from the checkpoint as f32 (for a weight whose storage was freed). */
export async function readParameterF32(ckpt: Checkpoint, name: string): Promise<Float32Array> {
  const t = await readCkptTensor(ckpt, name);
  return bytesToF32(t.data, t.dtype);
}
