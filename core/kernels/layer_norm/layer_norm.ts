/**
 * Row-wise kernels over the last dimension (one workgroup per row with a tree reduction on
 * hardware GPUs, one invocation per row on software adapters; see `rowPlan`): LayerNorm, RMSNorm,
 * softmax, and the reductions sum / max / sum of squares.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
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

/** Rows of `cols` elements (`eps` only for the norms). */
const NormParams = uniformLayout({ rows: "u32", cols: "u32", eps: "f32" });
const RowParams = uniformLayout({ rows: "u32", cols: "u32" });

function rowDispatch(
  rec: Recording,
  plan: RowPlan,
  pipeline: GPUComputePipeline,
  params: Uint8Array,
  resources: GPUBindingResource[],
  rows: number,
): void {
  recordDispatch(rec, pipeline, params, resources, plan.workgroups(rows));
}

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
  const WG = plan.lanes;
  const key = `${kernel}:${plan.tag}:${weight.dtype}:${bias?.dtype ?? "-"}`;
  const pipeline = getPipeline(rec.gpu, key, () => `
${NormParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareOutput(3, "Y")}
${bias ? declareInput(4, "B", bias.dtype) : ""}
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
  for (var i = t; i < P.cols; i += ${WG}u) { s += X[base + i]; }
  let mean = wg_sum(s, t) / n;
  var v = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { let d = X[base + i] - mean; v += d * d; }
  let inv = 1.0 / sqrt(wg_sum(v, t) / n + P.eps);
  for (var i = t; i < P.cols; i += ${WG}u) {
    Y[base + i] = (X[base + i] - mean) * inv * ld_W(i) + ld_B(i);
  }`
      : `var v = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { let d = X[base + i]; v += d * d; }
  let inv = 1.0 / sqrt(wg_sum(v, t) / n + P.eps);
  for (var i = t; i < P.cols; i += ${WG}u) { Y[base + i] = X[base + i] * inv * ld_W(i); }`
  }
}
`);
  const resources = [bindingOf(x), bindingOf(weight), bindingOf(y)];
  if (bias) resources.push(bindingOf(bias));
  rowDispatch(rec, plan, pipeline, NormParams.pack({ rows, cols, eps }), resources, rows);
  return y;
}

/** Softmax over the last dim (f32, max-subtracted). */
export function softmax(rec: Recording, x: Tensor, out?: Tensor): Tensor {
  expectDtype(x, "softmax", "x", ["f32"]);
  assertUnchunked(x, "softmax", "x");
  const { rows, cols } = rowsOf(x);
  const y = outputTensor(rec, "softmax", x.shape, out);
  if (rows === 0 || cols === 0) return y;
  const plan = rowPlan(rec.gpu, LANES, cols);
  const WG = plan.lanes;
  const pipeline = getPipeline(rec.gpu, `softmax:${plan.tag}`, () => `
${RowParams.wgsl}${declareInput(1, "X", "f32")}
${declareOutput(2, "Y")}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var m = -3.4028234e38;
  for (var i = t; i < P.cols; i += ${WG}u) { m = max(m, X[base + i]); }
  m = wg_max(m, t);
  var s = 0.0;
  for (var i = t; i < P.cols; i += ${WG}u) { let e = exp(X[base + i] - m); Y[base + i] = e; s += e; }
  let inv = 1.0 / wg_sum(s, t);
  for (var i = t; i < P.cols; i += ${WG}u) { Y[base + i] = Y[base + i] * inv; }
}
`);
  rowDispatch(
    rec,
    plan,
    pipeline,
    RowParams.pack({ rows, cols }),
    [bindingOf(x), bindingOf(y)],
    rows,
  );
  return y;
}

export type ReduceOp = "sum" | "max" | "sumsq";

/**
 * Reduces the last dim: output shape is x's shape without the last dim (`[]` → `[1]` for a 1-D x
 * gives shape [] — a scalar with one element). Reduce a whole tensor by reshaping it to [1, n].
 * max of an empty row is -3.4028234e38; sums of empty rows are 0.
 */
export function reduce(rec: Recording, x: Tensor, op: ReduceOp, out?: Tensor): Tensor {
  expectDtype(x, "reduce", "x", ["f32", "f16"]);
  assertUnchunked(x, "reduce", "x");
  const rows = x.shape.length === 0 ? 1 : numel(x.shape.slice(0, -1));
  const cols = x.shape.length === 0 ? 1 : x.shape[x.shape.length - 1];
  const y = outputTensor(rec, "reduce", x.shape.slice(0, -1), out);
  if (rows === 0) return y;
  const combine = op === "max" ? "wg_max(v, t)" : "wg_sum(v, t)";
  const init = op === "max" ? "-3.4028234e38" : "0.0";
  const step = op === "max" ? "v = max(v, e);" : op === "sum" ? "v += e;" : "v += e * e;";
  const plan = rowPlan(rec.gpu, LANES, cols);
  const WG = plan.lanes;
  const pipeline = getPipeline(rec.gpu, `reduce:${op}:${plan.tag}:${x.dtype}`, () => `
${RowParams.wgsl}${declareInput(1, "X", x.dtype)}
${declareOutput(2, "Y")}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var v = ${init};
  for (var i = t; i < P.cols; i += ${WG}u) { let e = ld_X(base + i); ${step} }
  let r = ${combine};
  if (t == 0u) { Y[row] = r; }
}
`);
  rowDispatch(
    rec,
    plan,
    pipeline,
    RowParams.pack({ rows, cols }),
    [bindingOf(x), bindingOf(y)],
    rows,
  );
  return y;
}
