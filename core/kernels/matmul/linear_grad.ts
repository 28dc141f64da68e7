/**
 * Backward of a linear layer `y = x·Wᵀ + b` (W [N, K], x [..., K]) built on the forward matmul:
 * dx = dy · W (W may be f16: frozen base weights), dW += dyᵀ · x, db += Σ_rows dy. The weight and
 * bias gradients are added into the given f32 tensors (gradient accumulation); frozen parameters
 * pass none and get no buffers.
 *
 * dy may be chunked by rows (the logits gradient of a large vocabulary): each chunk is handled
 * on its own rows. For a frozen weight big enough for the texture matmul on a software adapter,
 * dx uses a cached transposed copy (see transpose.ts). A float weight bound in row chunks (a
 * 130k-row tied head on an adapter with 128 MiB bindings) gets dx = Σ_i dy[:, rows_i] · W_i, one
 * term per chunk of W, with dy's columns read through a temporary dyᵀ.
 */

import { GpuError } from "../../gpu/device.ts";
import type { Recording } from "../../gpu/recording.ts";
import {
  emptyTensor,
  maxChunkBytes,
  numel,
  releaseTensor,
  reshape,
  sliceRows,
  type Tensor,
} from "../../tensor/tensor.ts";
import { matmul, TEXTURE_MIN_WEIGHT } from "./matmul.ts";
import { accumulateInto, columnSumInto } from "../accumulate.ts";
import { transposedWeight, transposeF32 } from "./transpose.ts";
import { quantInputGrad } from "./quant.ts";

export interface LinearGrads {
  /** Return dx (default true). */
  input?: boolean;
  /** Added into: dW [N, K]. */
  weight?: Tensor;
  /** Added into: db [N]. */
  bias?: Tensor;
  /** Multiplies dW (not dx, not db); default 1. */
  scale?: number;
  /** W does not change between steps (frozen): allows the cached transposed copy. */
  frozen?: boolean;
}

/** The rows of chunk `i` of a row-chunked tensor as an unchunked [rows, cols] view. */
function chunkView(t: Tensor, i: number): Tensor {
  const c = t.chunks[i];
  const cols = t.rowLength;
  return {
    ...t,
    shape: [c.rows, cols],
    buffer: c.buffer,
    byteOffset: c.byteOffset,
    byteLength: c.byteLength,
    rowLength: cols,
    chunks: [{ ...c, rowStart: 0 }],
    base: t.base ?? t,
    released: false,
  };
}

/** Returns dx [..., K] (or null when not asked for). */
export function linearBackward(
  rec: Recording,
  x: Tensor,
  w: Tensor,
  dy: Tensor,
  grads: LinearGrads = {},
): Tensor | null {
  if (w.shape.length !== 2) throw new GpuError("linearBackward: weight must be [N, K]");
  const [N, K] = w.shape;
  const rows = numel(x.shape) / K;
  if (x.rowLength !== K || numel(dy.shape) !== rows * N || dy.rowLength !== N) {
    throw new GpuError(
      `linearBackward: x [${x.shape.join(", ")}], dy [${
        dy.shape.join(", ")
      }] do not fit W [${N}, ${K}]`,
    );
  }
  if (w.quant && grads.weight) {
    throw new GpuError(
      `linearBackward: ${w.label ?? "the weight"} is quantized (${w.dtype}): frozen, no gradient`,
    );
  }
  if (grads.bias && dy.chunks.length > 1) {
    throw new GpuError("linearBackward: a bias gradient needs an unchunked dy");
  }
  const x2 = reshape(x, [rows, K]);
  const parts = dy.chunks.length > 1
    ? dy.chunks.map((c, i) => ({ dy: chunkView(dy, i), start: c.rowStart, rows: c.rows }))
    : [{ dy: reshape(dy, [rows, N]), start: 0, rows }];
  const sub = (t: Tensor, start: number, n: number) =>
    parts.length === 1 ? t : sliceRows(t, start, n);
  if (grads.weight) {
    for (const p of parts) {
      // dW = dyᵀ · x: A = dy stored as [rows, N] = [K', M'] with transposeA.
      const dw = matmul(rec, p.dy, sub(x2, p.start, p.rows), { transposeA: true });
      accumulateInto(rec, grads.weight, dw, grads.scale ?? 1);
      releaseTensor(dw, rec);
    }
  }
  if (grads.bias) columnSumInto(rec, grads.bias, parts[0].dy);
  if (grads.input === false) return null;
  const useTransposed = !w.quant && grads.frozen === true && rec.gpu.isSoftware &&
    N * K >= TEXTURE_MIN_WEIGHT && w.chunks.length === 1 && N * K * 4 <= maxChunkBytes(rec.gpu);
  const wT = useTransposed ? transposedWeight(rec, w) : null;
  const dx = parts.length === 1
    ? null
    : emptyTensor(rec.gpu, [rows, K], "f32", { rec, label: "linear dx" });
  let single: Tensor | null = null;
  for (const p of parts) {
    const out = dx ? sliceRows(dx, p.start, p.rows) : undefined;
    const r = !w.quant && w.chunks.length > 1
      ? chunkedWeightInputGrad(rec, w, p.dy, out)
      : w.quant
      ? quantInputGrad(rec, w, p.dy, out) // int8/int4 base: dequantized in the kernel
      : wT
      ? matmul(rec, p.dy, wT, { transposeB: true, out })
      : matmul(rec, p.dy, w, { out });
    if (!dx) single = r;
  }
  return reshape(dx ?? single!, [...x.shape.slice(0, -1), K]);
}

/**
 * dx = dy · W for a float W [N, K] bound in row chunks: Σ_i (dyᵀ)[rows_i]ᵀ · W_i, each W_i an
 * unchunked view of one chunk (the generic kernel: the texture design would pack each chunk).
 */
function chunkedWeightInputGrad(rec: Recording, w: Tensor, dy: Tensor, out?: Tensor): Tensor {
  const dyT = transposeF32(rec, dy); // [N, rows]
  let dx: Tensor | null = out ?? null;
  w.chunks.forEach((c, i) => {
    const a = sliceRows(dyT, c.rowStart, c.rows);
    if (i === 0) {
      dx = matmul(rec, a, chunkView(w, i), { transposeA: true, kernel: "generic", out });
    } else {
      const term = matmul(rec, a, chunkView(w, i), { transposeA: true, kernel: "generic" });
      accumulateInto(rec, dx!, term, 1);
      releaseTensor(term, rec);
    }
  });
  releaseTensor(dyT, rec);
  return dx!;
}
