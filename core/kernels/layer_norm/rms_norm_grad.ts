/**
 * Backward of RMSNorm `y = w ⊙ x · r`, `r = 1 / sqrt(mean(x²) + eps)` (over the last dim):
 *
 * ```
 * dx = r · (w ⊙ dy) − x · r³ / n · Σ_j (w_j · dy_j · x_j)
 * dw += Σ_rows dy ⊙ x · r
 * ```
 *
 * Two passes: one invocation per row writes dx and the row's r (software and hardware alike:
 * a row is read three times, no barriers), then one invocation per column adds that column's
 * sum over rows into dw. Rows are at most a few thousand wide (hidden size, or head dim for
 * Qwen3's per-head q/k norms), so a serial loop per row is cheap beside the matmuls around it.
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
  rowsOf,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 64;

const RmsGradParams = uniformLayout({ rows: "u32", cols: "u32", eps: "f32" });

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
  const params = RmsGradParams.pack({ rows, cols, eps });
  const rowPipe = getPipeline(rec.gpu, `rmsNormBackward:rows:${weight.dtype}`, () => `
${RmsGradParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareInput(3, "DY", "f32")}
${declareOutput(4, "DX")}
${declareOutput(5, "R")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let row = ${WG_INDEX} * ${WG}u + lid.x;
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var ss = 0.0;
  var dot = 0.0;
  for (var j = 0u; j < P.cols; j++) {
    let xv = X[base + j];
    ss += xv * xv;
    dot += ld_W(j) * DY[base + j] * xv;
  }
  let r = inverseSqrt(ss / f32(P.cols) + P.eps);
  let k = r * r * r * dot / f32(P.cols);
  for (var j = 0u; j < P.cols; j++) {
    DX[base + j] = r * ld_W(j) * DY[base + j] - X[base + j] * k;
  }
  R[row] = r;
}
`);
  recordDispatch(
    rec,
    rowPipe,
    params,
    [bindingOf(x), bindingOf(weight), bindingOf(dy), bindingOf(dx), bindingOf(inv)],
    grid(rec.gpu, Math.ceil(rows / WG)),
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
${RmsGradParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "DY", "f32")}
${declareInput(3, "R", "f32")}
${declareOutput(4, "DW")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let j = ${WG_INDEX} * ${WG}u + lid.x;
  if (j >= P.cols) { return; }
  var acc = 0.0;
  for (var row = 0u; row < P.rows; row++) {
    acc += DY[row * P.cols + j] * X[row * P.cols + j] * R[row];
  }
  DW[j] += acc;
}
`);
    recordDispatch(
      rec,
      colPipe,
      params,
      [bindingOf(x), bindingOf(dy), bindingOf(inv), bindingOf(weightGrad)],
      grid(rec.gpu, Math.ceil(cols / WG)),
    );
  }
  // r is scratch of this backward: back to the pool inside the recording.
  releaseTensor(inv, rec);
  return dx;
}
