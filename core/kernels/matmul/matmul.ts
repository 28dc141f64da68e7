/**
 * Matrix multiply: `C[..., M, N] = op(A)[..., M, K] · op(B)[..., K, N] (+ bias[N])`, f32
 * accumulation and output; B (and bias) may be stored in f16.
 *
 * - `linear(rec, x, w, bias)` is the layer form `x[..., M, K] · W[N, K]ᵀ + b` (transposeB).
 * - B 2-D is shared by every batch of A; B with batch dims must match A's batch dims.
 * - A chunked is not supported; B chunked (rows) is supported for `transposeB` (lm_head: split
 *   over N); the output may be chunked along rows (large logits).
 *
 * Designs, chosen per call (`MatmulOptions.kernel`, `MATMUL_KERNEL_ENV`): on hardware GPUs the
 * shared-memory tiled kernel (shared.ts); on software adapters the texture design (texture.ts)
 * for weights of at least `TEXTURE_MIN_WEIGHT` elements (or `TEXTURE_MIN_WORK` multiply-adds) and
 * shapes it fits; below that, problems of at most 4 rows (decode steps) take the small-M kernel
 * of gemv.ts on every adapter; the generic tiled kernel here for the rest (it runs everywhere).
 * The two tiled kernels share their parameters and store epilogue (store.ts); all share the problem
 * (problem.ts). Backward: linear_grad.ts, built on this matmul, with the cached Wᵀ of
 * transpose.ts for frozen weights.
 */

import { type Gpu, GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  kernelEnvChoice,
  outputTensor,
  SOFTWARE_LOOP_LIMIT,
} from "../common.ts";
import { type MatmulOptions, type MatmulProblem, matmulProblem } from "./problem.ts";
import { SHARED_TILE, sharedCode } from "./shared.ts";
import { recordTextureMatmul, textureKernelFor } from "./texture.ts";
import { storeTile4x4, TiledParams } from "./store.ts";
import { quantLinear } from "./quant.ts";
import { GEMV_MAX_ROWS, gemvFits, recordGemv } from "./gemv.ts";

export { type MatmulOptions, type MatmulProblem, matmulProblem };

/** `op(A) · op(B) (+ bias)`; see {@link MatmulOptions}. Returns the f32 output. */
export function matmul(rec: Recording, a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  expectDtype(a, "matmul", "A", ["f32"]);
  expectDtype(b, "matmul", "B", ["f32", "f16"]);
  const p = matmulProblem(a, b, options);
  const out = outputTensor(rec, "matmul", p.outShape, options.out);
  if (numel(p.outShape) === 0) return out;
  if (a.chunks.length > 1) throw new GpuError("matmul: A must not be chunked");
  if (b.chunks.length > 1 && !(p.sharedB && p.transposeB)) {
    throw new GpuError("matmul: a chunked B is supported only as a 2-D [N, K] weight (transposeB)");
  }
  const choice = options.kernel ?? envKernel() ?? "auto";
  // Auto takes the texture design only for weights big enough to repay its cold compile
  // (seconds per variant on llvmpipe) and the packed copy of the weight.
  const big = p.K * p.N >= TEXTURE_MIN_WEIGHT || p.batch * p.M * p.N * p.K >= TEXTURE_MIN_WORK;
  if (choice === "texture" || (choice === "auto" && rec.gpu.isSoftware && big)) {
    const kind = textureKernelFor(rec, a, b, p, out);
    if (kind) {
      recordTextureMatmul(rec, a, b, p, options.bias, out, kind);
      return out;
    }
    if (options.kernel === "texture") {
      throw new GpuError(
        "matmul: the texture kernel needs a 2-D B (unchunked unless transposeB), an unbatched A " +
          "when transposeA, N % 4 (f32) or 8 (f16) == 0 unless transposeB, and unchunked A and " +
          "output",
      );
    }
  }
  // A few rows with a weight below the texture threshold: the small-M kernel (gemv.ts), on
  // every adapter (the tiled kernels waste most of their invocations at M = 1).
  if ((choice === "gemv" || (choice === "auto" && !big)) && gemvFits(p, a, b, out)) {
    recordGemv(rec, a, b, p, options.bias, out);
    return out;
  }
  if (choice === "gemv") {
    throw new GpuError(
      `matmul: the gemv kernel takes at most ${GEMV_MAX_ROWS} rows (batch × M for a shared B), ` +
        "an unchunked A and output, and B unchunked or a row-chunked 2-D weight",
    );
  }
  // A shape the texture design cannot take falls back to the adapter's default kernel.
  const shared = choice === "shared" || (choice !== "generic" && !rec.gpu.isSoftware);
  recordGenericMatmul(rec, a, b, p, options.bias, out, shared ? "shared" : "generic");
  return out;
}

/** The layer form `x[..., M, K] · W[N, K]ᵀ (+ bias[N])`. */
export function linear(rec: Recording, x: Tensor, w: Tensor, bias?: Tensor, out?: Tensor): Tensor {
  // A quantized weight (int8/int4, core/quant) takes its own kernels.
  if (w.quant) return quantLinear(rec, x, w, bias, out);
  return matmul(rec, x, w, { bias, transposeB: true, out });
}

/**
 * Environment variable forcing the kernel choice of every `matmul` call that does not pass
 * `kernel`: "generic", "shared" (the hardware-GPU design, so that whole models can be checked on
 * it without a GPU), "texture" (wherever the shape fits, any adapter and size; other shapes get
 * the adapter's default), "gemv" (the small-M kernel of gemv.ts on a storage buffer; throws where
 * it does not fit) or "auto". Read on each call; ignored without env permission.
 */
export const MATMUL_KERNEL_ENV = "MEDGLM_MATMUL_KERNEL";

const KERNEL_CHOICES = ["auto", "generic", "shared", "texture", "gemv"] as const;
function envKernel(): MatmulOptions["kernel"] {
  return kernelEnvChoice(MATMUL_KERNEL_ENV, KERNEL_CHOICES);
}

/**
 * Weights with at least this many elements (K·N) take the texture kernels on software adapters
 * (measured: from 128×128 up the texture kernels beat the generic one at M ≥ 16 and tie at M = 1;
 * the threshold keeps tiny test models off their cold compile).
 */
export const TEXTURE_MIN_WEIGHT = 1 << 16;

/**
 * Whether `linear` on this device reads weight `w` ([N, K], y = x·Wᵀ) through its packed texture
 * (texture.ts): a software adapter, a weight of at least {@link TEXTURE_MIN_WEIGHT} elements and
 * no other design forced. Loaders pack such weights ahead (`prepackWeight`, `hostPackedWeight`).
 */
export function forwardPacksWeight(gpu: Gpu, w: Tensor): boolean {
  if (!gpu.isSoftware || w.shape.length !== 2) return false;
  const forced = envKernel();
  if (forced && forced !== "auto") return false;
  return w.shape[0] * w.shape[1] >= TEXTURE_MIN_WEIGHT;
}

/**
 * Problems of at least this many multiply-adds take the texture kernels on software adapters
 * whatever the weight's size: the training matmuls of small models (measured on the demo model,
 * hidden 128, 480 tokens: the generic kernel ran its backward matmuls at ~8 GFLOP/s).
 */
export const TEXTURE_MIN_WORK = 1 << 22;

const TILE = 4; // outputs per invocation in each direction
const WG = 8; // invocations per workgroup in each direction

function genericCode(
  transposeA: boolean,
  transposeB: boolean,
  bDtype: string,
  bias: string,
): string {
  const aIdx = transposeA ? "k * P.M + m" : "m * P.K + k";
  const bIdx = transposeB ? "n * P.K + k" : "k * P.ldb + n";
  const loadsA = [0, 1, 2, 3].map((i) =>
    `let m${i} = min(row0 + ${i}u, P.M - 1u); av[${i}] = ld_A(aBase + ${
      aIdx.replace(/\bm\b/, `m${i}`)
    });`
  ).join("\n      ");
  const loadsB = [0, 1, 2, 3].map((j) =>
    `bv[${j}] = ld_B(bBase + ${bIdx.replace(/\bn\b/, `n${j}`)});`
  ).join("\n      ");
  return `
${TiledParams.wgsl}${declareInput(1, "A", "f32")}
${declareInput(2, "B", bDtype as "f32")}
${declareOutput(3, "C")}
${bias ? declareInput(4, "bias", bias as "f32") : ""}
@compute @workgroup_size(${WG}, ${WG}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let col0 = (wid.x * ${WG}u + lid.x) * ${TILE}u;
  let row0 = (wid.y * ${WG}u + lid.y) * ${TILE}u;
  if (row0 >= P.M || col0 >= P.N) { return; }
  let aBase = wid.z * P.aBatch + P.rowOffset * P.K;
  let bBase = wid.z * P.bBatch;
  ${
    [0, 1, 2, 3].map((j) => `let n${j} = min(col0 + ${j}u, P.N - 1u) + P.bRowOffset;`).join(
      "\n  ",
    )
  }
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  var av: vec4<f32>; var bv: vec4<f32>;
  for (var k = 0u; k < P.K; k++) {
      ${loadsA}
      ${loadsB}
      acc0 += av[0] * bv; acc1 += av[1] * bv; acc2 += av[2] * bv; acc3 += av[3] * bv;
  }
  ${storeTile4x4(bias !== "")}
}
`;
}

/**
 * Records the generic tiled kernel (4×4 outputs per invocation, 8×8 workgroups, no workgroup
 * memory; correct everywhere) or the shared-memory one (shared.ts); both take the same
 * parameters.
 */
export function recordGenericMatmul(
  rec: Recording,
  a: Tensor,
  b: Tensor,
  p: MatmulProblem,
  bias: Tensor | undefined,
  out: Tensor,
  design: "generic" | "shared" = "generic",
): void {
  // The generic kernel walks all of K in one invocation; llvmpipe would stop it silently.
  if (rec.gpu.isSoftware && design === "generic" && p.K > SOFTWARE_LOOP_LIMIT) {
    throw new GpuError(
      `matmul: K = ${p.K} is longer than the ${SOFTWARE_LOOP_LIMIT} loop iterations a software ` +
        "adapter runs per invocation, and the shape does not fit the texture kernel (which " +
        "splits K): make N a multiple of 4",
    );
  }
  const key = `matmul-${design}:${p.transposeA ? "T" : "N"}${p.transposeB ? "T" : "N"}:${b.dtype}:${
    bias?.dtype ?? "nobias"
  }`;
  const pipeline = getPipeline(
    rec.gpu,
    key,
    () =>
      design === "shared"
        ? sharedCode(p.transposeA, p.transposeB, b.dtype, bias?.dtype ?? "")
        : genericCode(p.transposeA, p.transposeB, b.dtype, bias?.dtype ?? ""),
  );
  // A shared B with an untransposed A: fold the batch into M (better tiles, one dispatch).
  const fold = p.sharedB && !p.transposeA && p.batch > 1;
  const batch = fold ? 1 : p.batch;
  const totalRows = fold ? p.batch * p.M : p.M;
  const tile = design === "shared" ? SHARED_TILE : TILE * WG;
  for (let oc = 0; oc < out.chunks.length; oc++) {
    const ochunk = out.chunks[oc];
    if (out.chunks.length > 1 && (batch > 1 || p.transposeA)) {
      throw new GpuError("matmul: a chunked output needs a 2-D-foldable problem");
    }
    const rowStart = out.chunks.length > 1 ? ochunk.rowStart : 0;
    const rows = out.chunks.length > 1 ? ochunk.rows : totalRows;
    for (let bc = 0; bc < b.chunks.length; bc++) {
      const bchunk = b.chunks[bc];
      const colOffset = b.chunks.length > 1 ? bchunk.rowStart : 0;
      const cols = b.chunks.length > 1 ? bchunk.rows : p.N;
      if (rows === 0 || cols === 0) continue;
      const resources: GPUBindingResource[] = [
        bindingOf(a),
        bindingOf(b, bc),
        bindingOf(out, oc),
      ];
      if (bias) resources.push(bindingOf(bias));
      recordDispatch(
        rec,
        pipeline,
        TiledParams.pack({
          M: rows,
          N: cols,
          K: p.K,
          ldb: p.N,
          ldc: p.N,
          colOffset,
          bRowOffset: 0,
          aBatch: p.M * p.K,
          bBatch: p.sharedB ? 0 : p.K * p.N,
          cBatch: p.M * p.N,
          rowOffset: rowStart,
        }),
        resources,
        [Math.ceil(cols / tile), Math.ceil(rows / tile), batch],
      );
    }
  }
}
