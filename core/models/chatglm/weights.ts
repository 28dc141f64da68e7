/**
 * Streams a ChatGLM checkpoint to the GPU: checks names, shapes and dtypes against config.json
 * first (nothing is uploaded for a wrong checkpoint), then reads each shard in pieces of whole
 * rows (positioned reads, a few pieces ahead: {@link ChunkReader}), converts each piece to the
 * run's dtype and uploads it, so the load holds a few 8 MiB pieces beside the weights (never a
 * whole tensor or shard).
 *
 * Where the time goes (2.9 GB f16, page cache, 2 cores): reads, the runtime's staging copy on
 * the main thread and the software GPU's copy into fresh texture memory (the kernel zeroing its
 * pages) each take about a third of the CPU time, on three threads; the main thread waits in
 * `submit` while the GPU copies the previous piece.
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
import {
  bf16ToF32,
  bytesToF32,
  convertBytes,
  type Dtype,
  dtypeSize,
  f16ToF32,
  numelOf,
} from "../../io/dtype.ts";
import { readInto } from "../../io/file_range.ts";
import { withHugePages } from "../../io/huge_pages.ts";
import { MappedFile, type PieceMapper } from "../../io/mapped_file.ts";
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
  /**
   * Map the shards' pieces instead of reading them (default true: where the system allows it,
   * see {@link ChunkReader}; `MEDGLM_NO_MMAP=1` also turns it off).
   */
  mapped?: boolean;
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
  const reader = new ChunkReader({ mapped: options.mapped });
  const limit = options.chunkBytes ?? maxChunkBytes(gpu);
  try {
    for (const shard of ckpt.shards) {
      const names = [...shard.tensors.keys()].filter(sel.wanted);
      if (!names.length) continue;
      // Every read of the shard is planned before the first (pieces of each contiguous tensor,
      // in the order they are uploaded), so reads run ahead across tensor boundaries.
      const layouts = names.map((name) =>
        tensorLayout(shard.tensors.get(name)!, name, options.dtype, limit)
      );
      const file = await Deno.open(shard.path, { read: true });
      try {
        reader.begin(
          shard.path,
          names.flatMap((name, j) => pieceRanges(shard.tensors.get(name)!, layouts[j])),
        );
        for (const [j, name] of names.entries()) {
          const stored = shard.tensors.get(name)!;
          const source: TensorSource = {
            name,
            path: shard.path,
            file,
            stored,
            reader,
            layout: layouts[j],
          };
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
        await reader.end();
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
 * Rarely on a software adapter: there each submit already waits until the driver has copied the
 * one before, and the runtime's `onSubmittedWorkDone()` blocks the main thread until the queue is
 * idle (28 ms a call: 0.65 s of a 2.9 GB load at every 128 MiB), emptying the pipeline each time.
 * Never waiting at all let the 28-layer load's peak grow by 0.2 GB (staging copies freed late).
 */
function stagingBytes(gpu: Gpu): number {
  return gpu.isSoftware ? 2 ** 30 : 128 * 2 ** 20;
}

/**
 * Bytes of pieces whose writes submit themselves (a packed weight's whole-texel rows) after which
 * the load submits anyway, for the rows the write left queued (texel-padded rows). A submit per
 * such piece was a second submit right after the write's own, and on a software adapter a submit
 * waits for the driver to finish the one before: the main thread then waited for every piece's
 * copy (0.9 s of a 2.9 GB load) instead of preparing the next piece meanwhile.
 */
const BACKSTOP_SUBMIT_BYTES = 32 * 2 ** 20;

/**
 * Bytes of the checkpoint read at a time (whole rows of one storage chunk; one row when a row is
 * larger), and how many such reads run ahead of the upload. Small pieces keep what the reads
 * write in the CPU cache for the copy that hands them to the GPU, make no big scratch buffers
 * (fresh memory costs its page faults: on this VM as much as the copy), and let the reads (on
 * the runtime's blocking threads) overlap the upload across tensor and chunk boundaries.
 * Measured on one 1.4 GB shard into 128 MiB f16 textures (CPU seconds per GB, busy machine):
 * 128 MiB pieces 1.27, 32 MiB 1.10, 8 MiB 1.07–1.08, 2 MiB 1.01; 8 MiB with 3 ahead as fast as
 * 2 MiB in wall time.
 */
export const READ_PIECE_BYTES = WRITE_PIECE_BYTES;
export const READS_AHEAD = 3;

/**
 * Where a load's time went (milliseconds): waiting for reads, handing bytes to the GPU (the
 * runtime's staging copies), submitting them (on a software adapter the submit waits while the
 * driver copies the previous piece into the texture), waiting for the GPU.
 */
export interface LoadTiming {
  readMs: number;
  uploadMs: number;
  submitMs: number;
  waitMs: number;
}

/**
 * How a stored tensor becomes a GPU tensor: its rows, the rows of each storage chunk (≤ the
 * binding limit), and the pieces it is read in (whole rows, never across a chunk).
 */
export interface TensorLayout {
  rowLength: number;
  rows: number;
  rowsPerChunk: number;
  /** Row ranges read one at a time, in order. */
  pieces: { row: number; rows: number }[];
}

/** The layout of a stored tensor uploaded as `dtype` with chunks of at most `limit` bytes. */
export function tensorLayout(
  stored: StoredTensor,
  name: string,
  dtype: WeightDtype,
  limit: number,
): TensorLayout {
  const { shape } = stored;
  const rowLength = shape.length === 0 ? 1 : shape[shape.length - 1];
  const rows = rowLength === 0 ? 0 : numelOf(shape) / rowLength;
  const runRow = rowLength * elBytes(dtype);
  const rowsPerChunk = rows * runRow <= limit ? Math.max(rows, 1) : Math.floor(limit / runRow);
  if (rowsPerChunk < 1) {
    throw new RangeError(
      `${name}: one row of ${runRow} bytes does not fit a binding of ${limit} bytes`,
    );
  }
  let pieceRows = Math.max(
    1,
    Math.floor(READ_PIECE_BYTES / Math.max(1, rowLength * dtypeSize(stored.dtype))),
  );
  // Buffer writes start at multiples of 4 bytes: an even number of rows of 2 (mod 4) bytes.
  if (runRow % 4 !== 0) pieceRows = Math.max(2, pieceRows - (pieceRows % 2));
  const pieces: { row: number; rows: number }[] = [];
  if (!stored.strides) {
    for (let c = 0; c < rows; c += rowsPerChunk) {
      const end = Math.min(rows, c + rowsPerChunk);
      for (let r = c; r < end; r += pieceRows) {
        pieces.push({ row: r, rows: Math.min(pieceRows, end - r) });
      }
    }
  }
  return { rowLength, rows, rowsPerChunk, pieces };
}

/** The file byte ranges of a tensor's pieces. */
function pieceRanges(stored: StoredTensor, layout: TensorLayout): ByteRange[] {
  const row = layout.rowLength * dtypeSize(stored.dtype);
  return layout.pieces.map((p) => ({
    offset: stored.byteOffset + p.row * row,
    length: p.rows * row,
  }));
}

interface ByteRange {
  offset: number;
  length: number;
}

/** One stored tensor of an open shard, read in the pieces of its layout. */
export interface TensorSource {
  name: string;
  path: string;
  file: Deno.FsFile;
  stored: StoredTensor;
  reader: ChunkReader;
  layout: TensorLayout;
}

/** A planned range's bytes as taken: valid until `release()` (the next take or the end). */
interface Piece {
  bytes: Uint8Array<ArrayBuffer>;
  release(): void;
}

/** A shard's planned ranges and how they are read (mapped, or through one handle per slot). */
interface ReadPlan {
  handles: (Deno.FsFile | undefined)[];
  mapped: PieceMapper | null;
  path: string;
  ranges: ByteRange[];
  taken: number;
}

/**
 * Reads a shard's planned byte ranges in order, {@link READS_AHEAD} ahead of the upload; paces the
 * upload's staging copies ({@link flush}) and times the load's phases ({@link LoadTiming}).
 *
 * Where mapping is available (Linux, FFI; not `MEDGLM_NO_MMAP=1`, not `mapped: false`) each range
 * is a piece of the file mapped and populated on the runtime's blocking threads
 * ({@link MappedFile}): the upload copies the page cache's pages straight to the GPU, with no
 * `read` copy before (~0.2 CPU s/GB of a CPU-bound load); at most READS_AHEAD + 1 pieces are
 * mapped at once (mapped file pages count in the resident memory, as the ring did). A range the
 * kernel refuses to map is read instead.
 *
 * Otherwise each range is read into a ring of reused scratch buffers (no buffer per tensor or
 * piece). Each ring slot reads through its own handle of the file, so the reads ahead run at once
 * on the runtime's blocking threads while the main thread is busy handing bytes to the GPU (reads
 * chained on one handle waited for the main thread between each: 1 s of a 4 s load was spent
 * waiting for them).
 */
export class ChunkReader {
  /** READS_AHEAD + 1 scratch buffers: the piece being uploaded and those being read. */
  #ring = Array.from({ length: READS_AHEAD + 1 }, () => new Uint8Array(0));
  #plan: ReadPlan | null = null;
  #reads = new Map<number, Promise<Piece>>();
  /** The piece taken last, released at the next take (the caller is done with it then). */
  #current: Piece | null = null;
  #unflushed = 0;
  #unsubmitted = 0;
  #inflight: Promise<unknown> = Promise.resolve();
  readonly #open: ((path: string) => PieceMapper | null) | null;
  readonly timing: LoadTiming = { readMs: 0, uploadMs: 0, submitMs: 0, waitMs: 0 };
  /**
   * `mapped: false` reads every range (default: map where available, see the class doc);
   * `openMapped` opens a shard for mapping instead of {@link MappedFile.open} (tests).
   */
  constructor(
    options: { mapped?: boolean; openMapped?: (path: string) => PieceMapper | null } = {},
  ) {
    this.#open = options.mapped === false ? null : options.openMapped ?? MappedFile.open;
  }
  /** Whether the current plan's ranges are mapped (not read). */
  get mapped(): boolean {
    return this.#plan?.mapped != null;
  }
  /** Starts reading `ranges` of the file at `path`, in this order (see {@link take}). */
  begin(path: string, ranges: ByteRange[]): void {
    // Read slots open their own handle at their first read (#read), mapped or not: a mapped
    // plan reads only the pieces the kernel refuses to map.
    const mapped = this.#open ? this.#open(path) : null;
    this.#plan = { handles: [], mapped, path, ranges, taken: 0 };
    for (let k = 0; k < READS_AHEAD; k++) this.#issue(k);
  }
  /**
   * The next planned range's bytes (which must be [offset, offset + length)), valid until the
   * next take: taking it releases the previous piece and starts the read of the range
   * READS_AHEAD further.
   */
  async take(offset: number, length: number): Promise<Uint8Array<ArrayBuffer>> {
    const plan = this.#plan;
    const k = plan ? plan.taken++ : -1;
    const range = plan?.ranges[k];
    if (!plan || !range || range.offset !== offset || range.length !== length) {
      throw new Error(
        `${plan?.path ?? "checkpoint"}: internal error: read of ${length} bytes at ${offset} is ` +
          `not the next planned one`,
      );
    }
    this.#release();
    const t0 = performance.now();
    const read = this.#reads.get(k)!;
    this.#reads.delete(k);
    const piece = await read;
    this.timing.readMs += performance.now() - t0;
    this.#current = piece;
    // The slot of piece k − 1 (released above) gets piece k + AHEAD.
    this.#issue(k + READS_AHEAD);
    return piece.bytes;
  }
  #release(): void {
    this.#current?.release();
    this.#current = null;
  }
  #issue(k: number): void {
    const plan = this.#plan!;
    const range = plan.ranges[k];
    if (!range) return;
    const read = plan.mapped ? this.#map(plan, k, range) : this.#read(plan, k, range);
    read.catch(() => {}); // a read-ahead nobody takes may fail unseen; a taken one reports it
    this.#reads.set(k, read);
  }
  async #map(plan: ReadPlan, k: number, range: ByteRange): Promise<Piece> {
    const piece = await plan.mapped!.map(range.offset, range.length);
    if (piece) return { bytes: piece.bytes, release: piece.unmap };
    return await this.#read(plan, k, range);
  }
  /** Reads range `k` into its ring slot through the slot's own handle (opened at first use). */
  async #read(plan: ReadPlan, k: number, range: ByteRange): Promise<Piece> {
    const slot = k % this.#ring.length;
    plan.handles[slot] ??= await Deno.open(plan.path, { read: true });
    if (this.#ring[slot].length < range.length) this.#ring[slot] = new Uint8Array(range.length);
    const out = this.#ring[slot].subarray(0, range.length);
    await readInto(plan.handles[slot], range.offset, out, plan.path);
    return { bytes: out, release() {} };
  }
  /** Waits for the reads in flight, releases every piece, closes the plan's files. */
  async end(): Promise<void> {
    const plan = this.#plan;
    this.#plan = null;
    this.#release();
    const left = await Promise.allSettled(this.#reads.values());
    for (const r of left) if (r.status === "fulfilled") r.value.release();
    this.#reads.clear();
    plan?.handles.forEach((h) => h?.close());
    plan?.mapped?.close();
  }
  /**
   * After a piece's upload: submits (so the driver copies it out of its staging memory; where the
   * write submitted itself, only every {@link BACKSTOP_SUBMIT_BYTES}) and, every
   * {@link stagingBytes}, waits for the GPU to finish the batch before, so that staging
   * copies are freed as the load goes instead of piling up (a whole 1 GiB embedding measured)
   * until the load ends, while the GPU copies this batch as the next one is read.
   */
  async flush(gpu: Gpu, bytes: number, writeSubmits = false): Promise<void> {
    this.#unsubmitted += bytes;
    if (!writeSubmits || this.#unsubmitted >= BACKSTOP_SUBMIT_BYTES) {
      this.#unsubmitted = 0;
      const t0 = performance.now();
      gpu.device.queue.submit([]);
      this.timing.submitMs += performance.now() - t0;
    }
    this.#unflushed += bytes;
    if (this.#unflushed >= stagingBytes(gpu)) {
      this.#unflushed = 0;
      const t1 = performance.now();
      await this.#inflight;
      this.#inflight = gpu.device.queue.onSubmittedWorkDone();
      this.timing.waitMs += performance.now() - t1;
    }
  }
  /** Waits for the last batch (the end of a load). */
  async drain(): Promise<void> {
    const t0 = performance.now();
    await this.#inflight;
    this.timing.waitMs += performance.now() - t0;
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

/**
 * Where a piece converted to f32 is written: one buffer reused across pieces. A new array per
 * piece (16 MiB for an 8 MiB f16 piece) left the garbage collector hundreds of MiB behind an f32
 * load of f16 files (the mid-size load peaked 16% above its plan).
 */
let f32Scratch = new Float32Array(0);

/**
 * Raw bytes of the stored dtype → bytes of the run's dtype (the input itself when equal; for f16
 * and bf16 files read as f32 with `scratch`, a view of a scratch buffer valid until the next call,
 * so it must be written before any await).
 */
function toRunBytes(
  raw: Uint8Array,
  from: Dtype,
  dtype: WeightDtype,
  scratch = true,
): Uint8Array {
  if (dtype === "f16") return convertBytes(raw, from, "F16");
  if (from === "F32") return raw;
  if (scratch && (from === "F16" || from === "BF16") && raw.byteOffset % 2 === 0) {
    const n = raw.byteLength / 2;
    if (f32Scratch.length < n) f32Scratch = new Float32Array(n);
    const halves = new Uint16Array(raw.buffer, raw.byteOffset, n);
    const f = (from === "F16" ? f16ToF32 : bf16ToF32)(halves, f32Scratch.subarray(0, n));
    return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  }
  const f = bytesToF32(raw, from);
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

function newWeightTensor(gpu: Gpu, src: TensorSource, options: LoadWeightsOptions): Tensor {
  return withHugePages(
    runBytes(src, options),
    () =>
      emptyTensor(gpu, src.stored.shape, options.dtype, {
        label: src.name,
        chunkBytes: options.chunkBytes,
        rowsPerChunk: src.layout.rowsPerChunk,
      }),
  );
}

/** Bytes of the tensor in the run's dtype. */
function runBytes(src: TensorSource, options: LoadWeightsOptions): number {
  return src.layout.rows * src.layout.rowLength * elBytes(options.dtype);
}

/**
 * Reads the tensor piece by piece (its layout's), converts each piece to the run's dtype and
 * hands it to `write` (rows from `row`; the bytes are valid until the next piece), then lets the
 * driver free the piece's staging copy ({@link ChunkReader.flush}).
 */
async function streamPieces(
  gpu: Gpu,
  src: TensorSource,
  options: LoadWeightsOptions,
  write: (row: number, bytes: Uint8Array) => void,
  writeSubmits = false,
): Promise<void> {
  const { stored, layout, reader } = src;
  const storedRow = layout.rowLength * dtypeSize(stored.dtype);
  for (const p of layout.pieces) {
    const raw = await reader.take(stored.byteOffset + p.row * storedRow, p.rows * storedRow);
    const bytes = reader.upload(() => {
      const run = toRunBytes(raw, stored.dtype, options.dtype);
      write(p.row, run);
      return run;
    });
    await reader.flush(gpu, bytes.byteLength, writeSubmits);
  }
}

/** Padding for a buffer write whose length is not a multiple of 4 (the last piece of a chunk). */
let padScratch = new Uint8Array(0);

/**
 * Writes rows from `row` of `t` (run-dtype bytes inside one chunk, starting at a multiple of 4
 * bytes: see {@link tensorLayout}) with `writeBuffer`, in pieces of WRITE_PIECE_BYTES.
 */
function writeStorageRows(gpu: Gpu, t: Tensor, row: number, bytes: Uint8Array): void {
  const c = t.chunks.find((c) => row >= c.rowStart && row < c.rowStart + c.rows)!;
  const at = c.byteOffset + (row - c.rowStart) * t.rowLength * dtypeBytesOf(t);
  const queue = gpu.device.queue;
  for (let off = 0; off < bytes.byteLength; off += WRITE_PIECE_BYTES) {
    const n = Math.min(WRITE_PIECE_BYTES, bytes.byteLength - off);
    if (n % 4 === 0) {
      queue.writeBuffer(c.buffer, at + off, bytes as Uint8Array<ArrayBuffer>, off, n);
    } else {
      // The chunk's buffer is padded to 4 bytes: write the tail with zeros after it.
      const padded = Math.ceil(n / 4) * 4;
      if (padScratch.length < padded) padScratch = new Uint8Array(padded);
      const out = padScratch.subarray(0, padded);
      out.fill(0);
      out.set(bytes.subarray(off, off + n));
      queue.writeBuffer(c.buffer, at + off, out);
    }
    if (off + n < bytes.byteLength) queue.submit([]);
  }
}

function dtypeBytesOf(t: Tensor): number {
  return t.dtype === "f16" ? 2 : 4;
}

/**
 * Reads a float tensor into a new storage tensor of the run's dtype, piece by piece: the host
 * holds a few pieces, never the whole tensor. After each piece an empty submit lets the driver
 * free its staging copy (queued writes are otherwise kept until the next submit: a whole 1 GiB
 * embedding).
 */
async function uploadStorage(
  gpu: Gpu,
  src: TensorSource,
  options: LoadWeightsOptions,
  t: Tensor = newWeightTensor(gpu, src, options),
): Promise<Tensor> {
  try {
    if (src.stored.strides) {
      // A non-contiguous torch view (rare): gathered whole (through the shard's own handle,
      // which the reads ahead do not use), then written chunk by chunk.
      const { file, path, stored } = src;
      const raw = await readStoredTensor(file, path, stored);
      // Its own array (used across awaits; not the per-piece scratch).
      const all = toRunBytes(raw, stored.dtype, options.dtype, false);
      const rowBytes = t.rowLength * dtypeBytesOf(t);
      for (const c of t.chunks) {
        if (c.byteLength === 0) continue;
        const at = c.rowStart * rowBytes;
        writeStorageRows(gpu, t, c.rowStart, all.subarray(at, at + c.byteLength));
        await src.reader.flush(gpu, c.byteLength);
      }
    } else {
      await streamPieces(gpu, src, options, (row, bytes) => writeStorageRows(gpu, t, row, bytes));
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
    : withHugePages(runBytes(src, options), () => hostPackedWeight(gpu, t));
  if (!host) return await uploadStorage(gpu, src, options, t);
  dropStorage(t, PACKED_ONLY);
  try {
    // hostPackedWeight's writes submit each whole-texel piece themselves.
    await streamPieces(gpu, src, options, (row, bytes) => host.writeRows(row, bytes), true);
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
