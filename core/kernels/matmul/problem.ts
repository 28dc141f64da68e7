/**
 * The matmul problem every design shares: its options, and the shape checks that turn two
 * operands into rows, columns, K and strides. Its own module so that each design (generic,
 * shared-memory, texture) imports it without importing the dispatcher in matmul.ts.
 */

import { GpuError } from "../../gpu/device.ts";
import { numel, type Tensor } from "../../tensor/tensor.ts";
import { expectDtype } from "../common.ts";

export interface MatmulOptions {
  /** Added to every row of the output; shape [N], f32 or f16. */
  bias?: Tensor;
  /** A is stored as [..., K, M] (for gradients `Aᵀ·B`). */
  transposeA?: boolean;
  /** B is stored as [..., N, K] (a linear layer's weight). */
  transposeB?: boolean;
  /** Write here instead of allocating; shape [..., M, N], f32. */
  out?: Tensor;
  /**
   * Kernel choice: "auto" (default) takes the texture design on software adapters when the shape
   * fits it and the weight has ≥ `TEXTURE_MIN_WEIGHT` elements (matmul.ts; see texture.ts), the
   * small-M kernel (gemv.ts) for at most 4 rows with a smaller weight on any adapter, the
   * generic tiled kernel on software adapters otherwise, and the shared-memory tiled kernel on
   * hardware adapters; "generic", "shared", "texture" and "gemv" force one (tests, benchmarks;
   * "texture" and "gemv" throw when the shape does not fit). Without this option the environment variable
   * `MATMUL_KERNEL_ENV` (matmul.ts) may force the choice for a whole process (see there).
   */
  kernel?: "auto" | "generic" | "shared" | "texture" | "gemv";
}

/** Parsed problem: rows/cols per batch and strides in elements. */
export interface MatmulProblem {
  batch: number;
  M: number;
  N: number;
  K: number;
  transposeA: boolean;
  transposeB: boolean;
  /** B is shared by every batch (2-D). */
  sharedB: boolean;
  outShape: number[];
}

/** Checks shapes and computes the problem. */
export function matmulProblem(a: Tensor, b: Tensor, options: MatmulOptions): MatmulProblem {
  const transposeA = options.transposeA ?? false;
  const transposeB = options.transposeB ?? false;
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new GpuError(
      `matmul: operands need at least 2 dims, got [${a.shape.join(", ")}] and [${
        b.shape.join(", ")
      }]`,
    );
  }
  const ar = a.shape.length;
  const br = b.shape.length;
  const M = transposeA ? a.shape[ar - 1] : a.shape[ar - 2];
  const K = transposeA ? a.shape[ar - 2] : a.shape[ar - 1];
  const Kb = transposeB ? b.shape[br - 1] : b.shape[br - 2];
  const N = transposeB ? b.shape[br - 2] : b.shape[br - 1];
  if (K !== Kb) {
    throw new GpuError(
      `matmul: inner dims differ: A [${a.shape.join(", ")}]${transposeA ? "ᵀ" : ""} · B [${
        b.shape.join(", ")
      }]${transposeB ? "ᵀ" : ""}`,
    );
  }
  const batchDims = a.shape.slice(0, ar - 2);
  const batch = numel(batchDims);
  const sharedB = br === 2;
  if (!sharedB) {
    const bb = b.shape.slice(0, br - 2);
    if (bb.length !== batchDims.length || bb.some((d, i) => d !== batchDims[i])) {
      throw new GpuError(
        `matmul: batch dims of B [${b.shape.join(", ")}] do not match A [${a.shape.join(", ")}]`,
      );
    }
  }
  if (options.bias) {
    expectDtype(options.bias, "matmul", "bias", ["f32", "f16"]);
    if (numel(options.bias.shape) !== N) {
      throw new GpuError(`matmul: bias has ${numel(options.bias.shape)} elements, expected ${N}`);
    }
  }
  return {
    batch,
    M,
    N,
    K,
    transposeA,
    transposeB,
    sharedB,
    outShape: [...batchDims, M, N],
  };
}
