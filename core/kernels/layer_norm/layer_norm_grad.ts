/**
 * LayerNorm backward from the saved input x (mean and variance are recomputed per row, which is
 * cheaper than storing them): dx per row, and the weight / bias gradients summed over rows and
 * added into the given gradient tensors (omitted for frozen parameters).
 *
 * With x̂ = (x − μ)/σ and g = dy·w: dx = (g − mean(g) − x̂·mean(g·x̂)) / σ; dw = Σ dy·x̂; db = Σ dy.
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
  type RowPlan,
  rowPlan,
  rowRanges,
  rowsOf,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/** Invocations per workgroup (per row in the workgroup design of the row kernels). */
const WG = 64;

/** Rows of h elements; `eps` of the forward's variance. */
const RowParams = uniformLayout({ rows: "u32", h: "u32", eps: "f32" });
/** Rows [first, first + rows) of the column sums. */
const ColumnParams = uniformLayout({ rows: "u32", h: "u32", first: "u32" });

export interface LayerNormGrads {
  /** Added into: dL/dweight [h] (f32). */
  weight?: Tensor;
  /** Added into: dL/dbias [h] (f32). */
  bias?: Tensor;
}

/** Returns dx [..., h]; adds dw, db into `grads` when given. */
export function layerNormBackward(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  eps: number,
  dy: Tensor,
  grads: LayerNormGrads = {},
): Tensor {
  const kernel = "layerNormBackward";
  expectDtype(x, kernel, "x", ["f32"]);
  expectDtype(dy, kernel, "dy", ["f32"]);
  expectDtype(weight, kernel, "weight", ["f32", "f16"]);
  expectShape(dy, kernel, "dy", x.shape);
  assertUnchunked(x, kernel, "x");
  const { rows, cols } = rowsOf(x);
  if (numel(weight.shape) !== cols) {
    throw new GpuError(`${kernel}: weight has ${numel(weight.shape)} elements, rows have ${cols}`);
  }
  const dx = outputTensor(rec, kernel, x.shape);
  if (rows === 0 || cols === 0) return dx;
  const plan = rowPlan(rec.gpu, WG, cols);
  const L = plan.lanes;
  const rowPipeline = getPipeline(
    rec.gpu,
    `grad:layerNorm:rows:${plan.tag}:${weight.dtype}`,
    () => `
${RowParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareInput(3, "DY", "f32")}
${declareOutput(4, "DX")}
${plan.reduce}
${rowStatsMain(plan)}
  var sg = 0.0;
  var sgx = 0.0;
  for (var j = t; j < P.h; j += ${L}u) {
    let g = DY[base + j] * ld_W(j);
    sg += g;
    sgx += g * (X[base + j] - mean) * rstd;
  }
  let mg = wg_sum(sg, t) / f32(P.h);
  let mgx = wg_sum(sgx, t) / f32(P.h);
  for (var j = t; j < P.h; j += ${L}u) {
    let xh = (X[base + j] - mean) * rstd;
    DX[base + j] = (DY[base + j] * ld_W(j) - mg - xh * mgx) * rstd;
  }
}
`,
  );
  recordDispatch(
    rec,
    rowPipeline,
    RowParams.pack({ rows, h: cols, eps }),
    [bindingOf(x), bindingOf(weight), bindingOf(dy), bindingOf(dx)],
    plan.workgroups(rows),
  );
  if (grads.weight || grads.bias) {
    const dw = grads.weight, db = grads.bias;
    for (const [t, n] of [[dw, "weight grad"], [db, "bias grad"]] as const) {
      if (!t) continue;
      expectDtype(t, kernel, n, ["f32"]);
      if (numel(t.shape) !== cols) throw new GpuError(`${kernel}: ${n} must have ${cols} elements`);
      markWritten(t);
    }
    // Rows are re-normalised per column here; rows × h loads either way, no extra buffers.
    const which = `${dw ? "w" : ""}${db ? "b" : ""}`;
    const colPipeline = getPipeline(rec.gpu, `grad:layerNorm:cols:${which}`, () => `
${ColumnParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "DY", "f32")}
${declareInput(3, "STATS", "f32")}
${dw ? declareOutput(4, "DW") : ""}
${db ? declareOutput(dw ? 5 : 4, "DB") : ""}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let j = ${WG_INDEX} * ${WG}u + lid.x;
  if (j >= P.h) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var i = 0u; i < P.rows; i++) {
    let r = P.first + i;
    let dy = DY[r * P.h + j];
    sw += dy * (X[r * P.h + j] - STATS[r * 2u]) * STATS[r * 2u + 1u];
    sb += dy;
  }
  ${dw ? "DW[j] = DW[j] + sw;" : ""}
  ${db ? "DB[j] = DB[j] + sb;" : ""}
}
`);
    const stats = rowStats(rec, x, eps, rows, cols);
    const res: GPUBindingResource[] = [bindingOf(x), bindingOf(dy), bindingOf(stats)];
    if (dw) res.push(bindingOf(dw));
    if (db) res.push(bindingOf(db));
    for (const [first, count] of rowRanges(rows)) {
      recordDispatch(
        rec,
        colPipeline,
        ColumnParams.pack({ rows: count, h: cols, first }),
        res,
        grid(rec.gpu, Math.ceil(cols / WG)),
      );
    }
    // Released into the recording: later dispatches of this step may reuse the buffer.
    releaseTensor(stats, rec);
  }
  return dx;
}

/**
 * WGSL: the entry point's start for one row of X: `base`, and the row's `mean` and `rstd`
 * (1/σ), shared by the dx kernel and the statistics kernel.
 */
function rowStatsMain(plan: RowPlan): string {
  const L = plan.lanes;
  return `@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.h;
  var s = 0.0;
  for (var j = t; j < P.h; j += ${L}u) { s += X[base + j]; }
  let mean = wg_sum(s, t) / f32(P.h);
  var v = 0.0;
  for (var j = t; j < P.h; j += ${L}u) { let c = X[base + j] - mean; v += c * c; }
  let rstd = 1.0 / sqrt(wg_sum(v, t) / f32(P.h) + P.eps);`;
}

/** [rows, 2] = (mean, 1/σ) per row. */
function rowStats(rec: Recording, x: Tensor, eps: number, rows: number, cols: number): Tensor {
  const stats = outputTensor(rec, "layerNormStats", [rows, 2]);
  const plan = rowPlan(rec.gpu, WG, cols);
  const pipeline = getPipeline(rec.gpu, `grad:layerNorm:stats:${plan.tag}`, () => `
${RowParams.wgsl}${declareInput(1, "X", "f32")}
${declareOutput(2, "STATS")}
${plan.reduce}
${rowStatsMain(plan)}
  if (t == 0u) { STATS[row * 2u] = mean; STATS[row * 2u + 1u] = rstd; }
}
`);
  recordDispatch(
    rec,
    pipeline,
    RowParams.pack({ rows, h: cols, eps }),
    [bindingOf(x), bindingOf(stats)],
    plan.workgroups(rows),
  );
  return stats;
}
