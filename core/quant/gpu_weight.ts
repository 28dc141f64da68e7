/**
 * Quantized weights on the GPU: a `Tensor` of dtype q8/q4 whose `quant` field holds the packed
 * values and scales in the one form the adapter's kernels read (never a float copy, never both
 * forms):
 *
 * - "texture" (software adapters, see CONVENTIONS.md: one texture fetch returns 16 bytes per lane
 *   while storage loads are scalar loops): an rgba32uint texture per block of up to
 *   maxTextureDimension2D rows, row-major: texel (j, n) = bytes [16j, 16j + 16) of row n as the
 *   checkpoint stores them (32 int4 or 16 int8 values along K), so the file's bytes are written
 *   as they are, with no repacking in JavaScript (rows whose byte length is not a multiple of 16
 *   are zero-padded). Scales go to an rgba32float texture: texel (group, g) = rows 4g..4g+3.
 * - "buffer" (hardware adapters): the rows' words in storage buffers (rows padded to whole words,
 *   chunked by rows under the binding limit) and the f16 scales in one buffer.
 */

import type { Gpu } from "../gpu/device.ts";
import { whenIdle } from "../gpu/recording.ts";
import { acquireBuffer } from "../tensor/pool.ts";
import {
  maxChunkBytes,
  type QuantStorage,
  type Tensor,
  type TensorChunk,
} from "../tensor/tensor.ts";
import { f16BitsToNumber } from "../io/dtype.ts";
import { checkQuantShape, type QuantBits } from "./arith.ts";

export interface QuantTextureBlock {
  rowStart: number;
  rows: number;
  weights: GPUTexture;
  scales: GPUTexture;
}

export interface QuantTextureStorage extends QuantStorage {
  readonly design: "texture";
  /** 32-bit words per row (the texture is ⌈wordsPerRow / 4⌉ texels wide). */
  readonly wordsPerRow: number;
  readonly groups: number;
  readonly blocks: QuantTextureBlock[];
}

export interface QuantBufferStorage extends QuantStorage {
  readonly design: "buffer";
  readonly wordsPerRow: number;
  readonly groups: number;
  /** f16 scales [rows, groups], two per word; the weight words are the tensor's chunks. */
  readonly scales: GPUBuffer;
}

export type QuantDesign = "texture" | "buffer";

/** A quantized weight in the original's stored layout (what a checkpoint holds). */
export interface StoredQuantWeight {
  bits: QuantBits;
  /** [out, in]. */
  rows: number;
  cols: number;
  groupSize: number;
  /** int8 [rows, cols], or int4 packed [rows, cols / 2] (high nibble = even column). */
  stored: Int8Array | Uint8Array;
  /** f16 bits [rows, cols / groupSize]. */
  scales: Uint16Array;
}

/** The design a device's kernels read: textures on software adapters, buffers elsewhere. */
export function defaultQuantDesign(gpu: Gpu): QuantDesign {
  return gpu.isSoftware ? "texture" : "buffer";
}

/** Bytes of one row's packed values. */
function rowBytes(w: StoredQuantWeight): number {
  return (w.cols * w.bits) / 8;
}

/** The rows' bytes copied into whole 32-bit words per row (zero padding past the row's end). */
function wordRows(
  w: StoredQuantWeight,
  r0: number,
  r1: number,
  wordsPerRow: number,
): Uint32Array<ArrayBuffer> {
  const rb = rowBytes(w);
  const out = new Uint8Array((r1 - r0) * wordsPerRow * 4);
  const src = new Uint8Array(w.stored.buffer, w.stored.byteOffset, w.stored.byteLength);
  for (let r = r0; r < r1; r++) {
    out.set(src.subarray(r * rb, (r + 1) * rb), (r - r0) * wordsPerRow * 4);
  }
  return new Uint32Array(out.buffer);
}

/** Uploads a quantized weight as a q8/q4 tensor of shape [rows, cols]. */
export function uploadQuantWeight(
  gpu: Gpu,
  w: StoredQuantWeight,
  options: { design?: QuantDesign; label?: string } = {},
): Tensor {
  const label = options.label ?? "weight";
  checkQuantShape(label, w.bits, w.rows, w.cols, w.groupSize);
  if (w.stored.byteLength !== w.rows * rowBytes(w)) {
    throw new Error(
      `${label}: ${w.stored.byteLength} bytes for a [${w.rows}, ${w.cols}] int${w.bits} weight ` +
        `(expected ${w.rows * rowBytes(w)})`,
    );
  }
  const groups = w.cols / w.groupSize;
  if (w.scales.length !== w.rows * groups) {
    throw new Error(
      `${label}: weight_scale has ${w.scales.length} values, expected ${w.rows * groups} ` +
        `(one per row${groups > 1 ? ` and group of ${w.groupSize}` : ""})`,
    );
  }
  if (groups > 1 && w.groupSize % 8 !== 0) {
    throw new Error(`${label}: group size ${w.groupSize} must be a multiple of 8`);
  }
  const design = options.design ?? defaultQuantDesign(gpu);
  const wordsPerRow = Math.ceil(rowBytes(w) / 4);
  const dtype = w.bits === 8 ? "q8" : "q4";
  const byteLength = w.rows * rowBytes(w);
  let chunks: TensorChunk[];
  let quant: QuantStorage;
  if (design === "texture") {
    const maxDim = gpu.limits.maxTextureDimension2D ?? 8192;
    if (Math.ceil(wordsPerRow / 4) > maxDim || groups > maxDim) {
      throw new Error(
        `${label}: rows of ${
          Math.ceil(wordsPerRow / 4)
        } texels (or ${groups} groups) exceed the texture width ` +
          `limit ${maxDim}`,
      );
    }
    const blockRows = maxDim;
    const blocks: QuantTextureBlock[] = [];
    for (let r0 = 0; r0 < w.rows; r0 += blockRows) {
      const r1 = Math.min(w.rows, r0 + blockRows);
      blocks.push(textureBlock(gpu, w, r0, r1, wordsPerRow, groups, label));
    }
    // The tensor's buffer fields are unused by the texture kernels: one small placeholder.
    chunks = [{
      buffer: acquireBuffer(gpu, 4),
      byteOffset: 0,
      byteLength: 0,
      rowStart: 0,
      rows: w.rows,
    }];
    const storage: QuantTextureStorage = {
      bits: w.bits,
      groupSize: w.groupSize,
      design,
      wordsPerRow,
      groups,
      blocks,
      destroy: () =>
        whenIdle(gpu, () => blocks.forEach((b) => (b.weights.destroy(), b.scales.destroy()))),
    };
    quant = storage;
  } else {
    const limit = maxChunkBytes(gpu);
    const per = Math.max(1, Math.floor(limit / (wordsPerRow * 4)));
    chunks = [];
    for (let r0 = 0; r0 < w.rows; r0 += per) {
      const r1 = Math.min(w.rows, r0 + per);
      const words = wordRows(w, r0, r1, wordsPerRow);
      const buffer = acquireBuffer(gpu, Math.max(4, words.byteLength));
      gpu.device.queue.writeBuffer(buffer, 0, words);
      chunks.push({
        buffer,
        byteOffset: 0,
        byteLength: words.byteLength,
        rowStart: r0,
        rows: r1 - r0,
      });
    }
    const scaleWords = new Uint16Array(Math.ceil(w.scales.length / 2) * 2);
    scaleWords.set(w.scales);
    if (scaleWords.byteLength > limit) {
      throw new Error(`${label}: the scales (${scaleWords.byteLength} bytes) exceed one binding`);
    }
    const scales = gpu.device.createBuffer({
      size: Math.max(4, scaleWords.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      label: `${label}.weight_scale`,
    });
    gpu.device.queue.writeBuffer(scales, 0, scaleWords);
    const storage: QuantBufferStorage = {
      bits: w.bits,
      groupSize: w.groupSize,
      design,
      wordsPerRow,
      groups,
      scales,
      destroy: () => whenIdle(gpu, () => scales.destroy()),
    };
    quant = storage;
  }
  return {
    gpu,
    shape: [w.rows, w.cols],
    dtype,
    buffer: chunks[0].buffer,
    byteOffset: 0,
    byteLength,
    rowLength: w.cols,
    chunks,
    base: null,
    released: false,
    label,
    meta: { version: 0, attachments: new Map() },
    quant,
  };
}

function textureBlock(
  gpu: Gpu,
  w: StoredQuantWeight,
  r0: number,
  r1: number,
  wordsPerRow: number,
  groups: number,
  label: string,
): QuantTextureBlock {
  const rows = r1 - r0;
  const G = Math.ceil(rows / 4);
  const texels = Math.ceil(wordsPerRow / 4);
  const rb = rowBytes(w);
  const src = new Uint8Array(w.stored.buffer, w.stored.byteOffset, w.stored.byteLength);
  // Row-major texels: whole rows of 16-byte multiples are the stored bytes themselves.
  let bytes: Uint8Array<ArrayBuffer>;
  if (rb === texels * 16) {
    bytes = src.subarray(r0 * rb, r1 * rb) as Uint8Array<ArrayBuffer>;
  } else {
    bytes = new Uint8Array(rows * texels * 16);
    for (let r = 0; r < rows; r++) {
      bytes.set(src.subarray((r0 + r) * rb, (r0 + r + 1) * rb), r * texels * 16);
    }
  }
  const device = gpu.device;
  // STORAGE_BINDING: the matmul kernels read them as read-only storage textures (cheaper per
  // fetch than sampled ones on llvmpipe, measured 1.4×).
  const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
    GPUTextureUsage.COPY_DST;
  const weights = device.createTexture({
    size: [texels, rows],
    format: "rgba32uint",
    usage,
    label: `${label} q${w.bits} rows ${r0}..${r1}`,
  });
  device.queue.writeTexture({ texture: weights }, bytes, { bytesPerRow: texels * 16 }, [
    texels,
    rows,
  ]);
  const sc = new Float32Array(G * groups * 4);
  for (let r = 0; r < rows; r++) {
    for (let q = 0; q < groups; q++) {
      sc[((r >> 2) * groups + q) * 4 + (r & 3)] = f16BitsToNumber(w.scales[(r0 + r) * groups + q]);
    }
  }
  const scales = device.createTexture({
    size: [groups, G],
    format: "rgba32float",
    usage,
    label: `${label} scales rows ${r0}..${r1}`,
  });
  device.queue.writeTexture({ texture: scales }, sc, { bytesPerRow: groups * 16 }, [groups, G]);
  return { rowStart: r0, rows, weights, scales };
}
