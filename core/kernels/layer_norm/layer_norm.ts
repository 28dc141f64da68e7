/**
 * LayerNorm and RMSNorm over the last dimension; the backward is layer_norm_grad.ts.
 *
 * Designs (`rowPlan` in ../common.ts): on hardware GPUs one workgroup per row with a tree
 * reduction in workgroup memory; on software adapters one invocation per row, no barriers (rows
 * longer than `MAX_SERIAL_ROW` keep the workgroup design). Tests force either with `setRowDesign`.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, type DType, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  type RowPlan,
  rowPlan,
  rowsOf,
  WG_BUILTINS,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/** Invocations per row in the workgroup design. */
const LANES = 64;

/** Rows of `cols` elements; `alpha`: the fused residual's scale (see {@link addScaledLayerNorm}). */
const NormParams = uniformLayout({ rows: "u32", cols: "u32", eps: "f32", alpha: "f32" });

function checkVector(t: Tensor, kernel: string, name: string, n: number): void {
  expectDtype(t, kernel, name, ["f32", "f16"]);
  if (numel(t.shape) !== n) {
    throw new GpuError(`${kernel}: ${name} has ${numel(t.shape)} elements, expected ${n}`);
  }
}

/** LayerNorm over the last dim: `(x − mean) / sqrt(var + eps) · weight + bias` (biased variance). */
export function layerNorm(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  eps: number,
  out?: Tensor,
): Tensor {
  return norm(rec, "layerNorm", x, weight, bias, eps, out);
}

/**
 * `layerNorm(a·alpha + b)` in one dispatch, the sum never stored: ChatGLM's residual
 * (`LN(x)·α + f(LN(x))`) followed by the next LayerNorm, which is all that reads the sum during
 * inference. On llvmpipe every dispatch has a fixed cost (thread-pool fan-out and join), so a
 * decode step of a small model pays for the number of its kernels as much as for their work.
 * The sum is computed as the `addScaled` kernel computes it (`a * alpha + b` in f32).
 */
export function addScaledLayerNorm(
  rec: Recording,
  a: Tensor,
  alpha: number,
  b: Tensor,
  weight: Tensor,
  bias: Tensor,
  eps: number,
  out?: Tensor,
): Tensor {
  expectDtype(b, "addScaledLayerNorm", "b", ["f32"]);
  assertUnchunked(b, "addScaledLayerNorm", "b");
  if (numel(a.shape) !== numel(b.shape) || a.shape.at(-1) !== b.shape.at(-1)) {
    throw new GpuError(
      `addScaledLayerNorm: a [${a.shape.join(", ")}] and b [${b.shape.join(", ")}] differ`,
    );
  }
  return norm(rec, "layerNorm", a, weight, bias, eps, out, { b, alpha });
}

/** RMSNorm over the last dim: `x / sqrt(mean(x²) + eps) · weight`. */
export function rmsNorm(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  eps: number,
  out?: Tensor,
): Tensor {
  return norm(rec, "rmsNorm", x, weight, undefined, eps, out);
}

function norm(
  rec: Recording,
  kernel: "layerNorm" | "rmsNorm",
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  eps: number,
  out?: Tensor,
  /** Normalize `x·alpha + b` instead of x. */
  sum?: { b: Tensor; alpha: number },
): Tensor {
  expectDtype(x, kernel, "x", ["f32"]);
  assertUnchunked(x, kernel, "x");
  const { rows, cols } = rowsOf(x);
  checkVector(weight, kernel, "weight", cols);
  if (bias) checkVector(bias, kernel, "bias", cols);
  const y = outputTensor(rec, kernel, x.shape, out);
  if (rows === 0) return y;
  const layer = kernel === "layerNorm";
  const plan = rowPlan(rec.gpu, LANES, cols);
  if (plan.tag === "inv" && cols % 4 === 0) {
    // One invocation per row (software adapters): the vector form (see vectorNormCode).
    const key = `${kernel}:inv4:${weight.dtype}:${bias?.dtype ?? "-"}${sum ? ":axpby" : ""}`;
    const pipeline = getPipeline(
      rec.gpu,
      key,
      () => vectorNormCode(layer, weight.dtype, bias?.dtype, !!sum, plan),
    );
    dispatchNorm(rec, pipeline, x, weight, bias, y, sum, rows, cols, eps, plan.workgroups(rows));
    return y;
  }
  const WG = plan.lanes;
  const key = `${kernel}:${plan.tag}:${weight.dtype}:${bias?.dtype ?? "-"}${sum ? ":axpby" : ""}`;
  // The input element i of the row: x, or the fused residual sum.
  const X = (i: string) => sum ? `(X[base + ${i}] * P.alpha + XB[base + ${i}])` : `X[base + ${i}]`;
  const pipeline = getPipeline(rec.gpu, key, () => `
${NormParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareOutput(3, "Y")}
${bias ? declareInput(4, "B", bias.dtype) : ""}
${sum ? declareInput(bias ? 5 : 4, "XB", "f32") : ""}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  let n = f32(P.cols);
  ${
    layer
      ? `var s = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { s += ${X("i")}; }
  let mean = wg_sum(s, t) / n;
  var v = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { let d = ${X("i")} - mean; v += d * d; }
  let inv = 1.0 / sqrt(wg_sum(v, t) / n + P.eps);
  for (var i = t; i < P.cols; i += ${WG}u) {
    Y[base + i] = (${X("i")} - mean) * inv * ld_W(i) + ld_B(i);
  }`
      : `var v = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { let d = ${X("i")}; v += d * d; }
  let inv = 1.0 / sqrt(wg_sum(v, t) / n + P.eps);
  for (var i = t; i < P.cols; i += ${WG}u) { Y[base + i] = ${X("i")} * inv * ld_W(i); }`
  }
}
`);
  dispatchNorm(rec, pipeline, x, weight, bias, y, sum, rows, cols, eps, plan.workgroups(rows));
  return y;
}

function dispatchNorm(
  rec: Recording,
  pipeline: GPUComputePipeline,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  y: Tensor,
  sum: { b: Tensor; alpha: number } | undefined,
  rows: number,
  cols: number,
  eps: number,
  workgroups: ReturnType<RowPlan["workgroups"]>,
): void {
  const resources = [bindingOf(x), bindingOf(weight), bindingOf(y)];
  if (bias) resources.push(bindingOf(bias));
  if (sum) resources.push(bindingOf(sum.b));
  recordDispatch(
    rec,
    pipeline,
    NormParams.pack({ rows, cols, eps, alpha: sum?.alpha ?? 1 }),
    resources,
    workgroups,
  );
}

/**
 * The norm with one invocation per row and rows of a multiple of 4 elements, read and written 4
 * at a time: on llvmpipe each storage load or store at a per-lane address is a loop over the
 * lanes whatever its width, so this does a quarter of them (decode step of the small model: a
 * 1024-wide row ~150 µs per norm before). The arithmetic is the scalar form's in the same order
 * (each sum element by element), so both give the same bits.
 */
function vectorNormCode(
  layer: boolean,
  wDtype: DType,
  bDtype: DType | undefined,
  sum: boolean,
  plan: RowPlan,
): string {
  // 4 elements of a weight-like vector: f32 as vec4, f16 as 4 halves in a vec2<u32>.
  const vector = (binding: number, name: string, dtype: DType) =>
    dtype === "f16"
      ? `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec2<u32>>;
fn ld4_${name}(i: u32) -> vec4<f32> {
  let h = ${name}[i];
  return vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y));
}`
      : `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<f32>>;
fn ld4_${name}(i: u32) -> vec4<f32> { return ${name}[i]; }`;
  const X = (i: string) => sum ? `(X[base + ${i}] * P.alpha + XB[base + ${i}])` : `X[base + ${i}]`;
  const add = (acc: string, v: string) =>
    ["x", "y", "z", "w"].map((c) => `${acc} += ${v}.${c};`).join(" ");
  const addSquares = (acc: string, v: string) =>
    ["x", "y", "z", "w"].map((c) => `${acc} += ${v}.${c} * ${v}.${c};`).join(" ");
  return `
${NormParams.wgsl}@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
${vector(2, "W", wDtype)}
@group(0) @binding(3) var<storage, read_write> Y: array<vec4<f32>>;
${bDtype ? vector(4, "B", bDtype) : ""}
${sum ? `@group(0) @binding(${bDtype ? 5 : 4}) var<storage, read> XB: array<vec4<f32>>;` : ""}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let c4 = P.cols / 4u;
  let base = row * c4;
  let n = f32(P.cols);
  ${
    layer
      ? `var s = 0.0;
  for (var i = 0u; i < c4; i++) { let x = ${X("i")}; ${add("s", "x")} }
  let mean = s / n;
  var v = 0.0;
  for (var i = 0u; i < c4; i++) { let d = ${X("i")} - mean; ${addSquares("v", "d")} }
  let inv = 1.0 / sqrt(v / n + P.eps);
  for (var i = 0u; i < c4; i++) { Y[base + i] = (${X("i")} - mean) * inv * ld4_W(i) + ld4_B(i); }`
      : `var v = 0.0;
  for (var i = 0u; i < c4; i++) { let d = ${X("i")}; ${addSquares("v", "d")} }
  let inv = 1.0 / sqrt(v / n + P.eps);
  for (var i = 0u; i < c4; i++) { Y[base + i] = ${X("i")} * inv * ld4_W(i); }`
  }
}
`;
}
