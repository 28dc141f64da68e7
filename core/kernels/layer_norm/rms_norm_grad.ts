/**
 * Backward of RMSNorm `y = w ⊙ x · r`, `r = 1 / sqrt(mean(x²) + eps)` (over the last dim):
 *
 * ```
 * dx = r · (w ⊙ dy) − x · r³ / n · Σ_j (w_j · dy_j · x_j)
 * dw += Σ_rows dy ⊙ x · r
 * ```
 *
 * Two passes: the rows write dx and each row's r (both row designs of `rowPlan`: a workgroup per
 * row on hardware GPUs, an invocation per row on software adapters), then one invocation per
 * column adds that column's sum over rows into dw (in row ranges, see `rowRanges`).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  markWritten,
  numel,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  outputTensor,
  rowPlan,
  rowRanges,
  rowsOf,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 64;

const RmsGradParams = uniformLayout({ rows: "u32", cols: "u32", eps: "f32" });
/** Rows [first, first + rows) of the weight-gradient column sums. */
const RmsColumnParams = uniformLayout({ rows: "u32", cols: "u32", first: "u32" });

/** Returns dx (shape of x); adds dw into `weightGrad` [cols] f32 when given. */
export function rmsNormBackward(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  eps: number,
  dy: Tensor,
  weightGrad?: Tensor,
): Tensor {
  const kernel = "rmsNormBackward";
  expectDtype(x, kernel, "x", ["f32"]);
  expectDtype(dy, kernel, "dy", ["f32"]);
  expectDtype(weight, kernel, "weight", ["f32", "f16"]);
  expectShape(dy, kernel, "dy", x.shape);
  assertUnchunked(x, kernel, "x");
  assertUnchunked(dy, kernel, "dy");
  const { rows, cols } = rowsOf(x);
  if (numel(weight.shape) !== cols) {
    throw new GpuError(`${kernel}: weight has ${numel(weight.shape)} elements, rows have ${cols}`);
  }
  const dx = outputTensor(rec, kernel, x.shape);
  if (rows === 0 || cols === 0) return dx;
  const inv = outputTensor(rec, "rmsNormBackward r", [rows]);
  // Both row designs (core/kernels/common.ts `rowPlan`): lanes of a workgroup share a row on
  // hardware GPUs; one invocation owns a row on software adapters.
  const plan = rowPlan(rec.gpu, WG, cols);
  const L = plan.lanes;
  const rowPipe = getPipeline(rec.gpu, `rmsNormBackward:rows:${plan.tag}:${weight.dtype}`, () => `
${RmsGradParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareInput(3, "DY", "f32")}
${declareOutput(4, "DX")}
${declareOutput(5, "R")}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var ss = 0.0;
  var dot = 0.0;
  for (var j = t; j < P.cols; j += ${L}u) {
    let xv = X[base + j];
    ss += xv * xv;
    dot += ld_W(j) * DY[base + j] * xv;
  }
  let r = inverseSqrt(wg_sum(ss, t) / f32(P.cols) + P.eps);
  let k = r * r * r * wg_sum(dot, t) / f32(P.cols);
  for (var j = t; j < P.cols; j += ${L}u) {
    DX[base + j] = r * ld_W(j) * DY[base + j] - X[base + j] * k;
  }
  if (t == 0u) { R[row] = r; }
}
`);
  recordDispatch(
    rec,
    rowPipe,
    RmsGradParams.pack({ rows, cols, eps }),
    [bindingOf(x), bindingOf(weight), bindingOf(dy), bindingOf(dx), bindingOf(inv)],
    plan.workgroups(rows),
  );
  if (weightGrad) {
    expectDtype(weightGrad, kernel, "weightGrad", ["f32"]);
    if (numel(weightGrad.shape) !== cols) {
      throw new GpuError(
        `${kernel}: weightGrad has ${numel(weightGrad.shape)} elements, not ${cols}`,
      );
    }
    markWritten(weightGrad);
    const colPipe = getPipeline(rec.gpu, "rmsNormBackward:weight", () => `
${RmsColumnParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "DY", "f32")}
${declareInput(3, "R", "f32")}
${declareOutput(4, "DW")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let j = ${WG_INDEX} * ${WG}u + lid.x;
  if (j >= P.cols) { return; }
  var acc = 0.0;
  for (var i = 0u; i < P.rows; i++) {
    let row = P.first + i;
    acc += DY[row * P.cols + j] * X[row * P.cols + j] * R[row];
  }
  DW[j] += acc;
}
`);
    // Row ranges keep each invocation's loop inside the software adapter's iteration limit.
    for (const [first, count] of rowRanges(rows)) {
      recordDispatch(
        rec,
        colPipe,
        RmsColumnParams.pack({ rows: count, cols, first }),
        [bindingOf(x), bindingOf(dy), bindingOf(inv), bindingOf(weightGrad)],
        grid(rec.gpu, Math.ceil(cols / WG)),
      );
    }
  }
  // r is scratch of this backward: back to the pool inside the recording.
  releaseTensor(inv, rec);
  return dx;
}
