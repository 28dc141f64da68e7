/**
 * The part LayerNorm's and RMSNorm's backward share (layer_norm_grad.ts, rms_norm_grad.ts): the
 * checks, the row pass's frame and the column sums of the parameter gradients.
 *
 * Both normalise a row as x̂ = (x − shift) · scale (LayerNorm: shift = mean, scale = 1/σ; RMSNorm:
 * shift = 0, scale = 1 / rms). The row pass (both row designs of `rowPlan`: a workgroup per row on
 * hardware GPUs, an invocation per row on software adapters) runs the norm's own dx code and keeps
 * each row's (shift, scale); one invocation per column then adds Σ_rows dy · x̂ into dw and Σ dy
 * into db (in row ranges, see `rowRanges`).
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

/** Invocations per workgroup (per row in the workgroup design of the row kernels). */
const WG = 64;

/** Rows of h elements; `eps` of the forward. */
const RowParams = uniformLayout({ rows: "u32", h: "u32", eps: "f32" });
/** Rows [first, first + rows) of the column sums. */
const ColumnParams = uniformLayout({ rows: "u32", h: "u32", first: "u32" });

/** The parameter gradients a norm's backward adds into (omitted: frozen). */
export interface NormGrads {
  /** Added into: dL/dweight [h] (f32). */
  weight?: Tensor;
  /** Added into: dL/dbias [h] (f32). */
  bias?: Tensor;
}

/** One norm's backward: its name and the WGSL of its row. */
export interface NormRowKernel {
  /** The kernel's name in errors and pipeline keys. */
  kernel: string;
  /**
   * WGSL statements for one row, in scope: `base` (the row's first element), `t` and `L` (this
   * lane and the lanes per row: loop `for (var j = t; j < P.h; j += L)`), `wg_sum(v, t)`, X,
   * `ld_W(j)`, DY, DX, `P.h`, `P.eps`. They write the row of DX and define `shift` and `scale`.
   */
  row: (lanes: number) => string;
}

/** dx of a norm (shape of x) from the saved input x; adds Σ dy · x̂ and Σ dy into `grads`. */
export function normBackward(
  rec: Recording,
  norm: NormRowKernel,
  x: Tensor,
  weight: Tensor,
  eps: number,
  dy: Tensor,
  grads: NormGrads,
): Tensor {
  const { kernel } = norm;
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
  for (const [t, n] of [[grads.weight, "weight grad"], [grads.bias, "bias grad"]] as const) {
    if (!t) continue;
    expectDtype(t, kernel, n, ["f32"]);
    if (numel(t.shape) !== cols) {
      throw new GpuError(`${kernel}: ${n} has ${numel(t.shape)} elements, not ${cols}`);
    }
  }
  const dx = outputTensor(rec, kernel, x.shape);
  if (rows === 0 || cols === 0) return dx;
  // (shift, scale) per row: scratch of this backward.
  const stats = outputTensor(rec, `${kernel} row statistics`, [rows, 2]);
  const plan = rowPlan(rec.gpu, WG, cols);
  const rowPipeline = getPipeline(
    rec.gpu,
    `grad:${kernel}:rows:${plan.tag}:${weight.dtype}`,
    () => `
${RowParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "W", weight.dtype)}
${declareInput(3, "DY", "f32")}
${declareOutput(4, "DX")}
${declareOutput(5, "STATS")}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.h;
  ${norm.row(plan.lanes)}
  if (t == 0u) { STATS[row * 2u] = shift; STATS[row * 2u + 1u] = scale; }
}
`,
  );
  recordDispatch(
    rec,
    rowPipeline,
    RowParams.pack({ rows, h: cols, eps }),
    [bindingOf(x), bindingOf(weight), bindingOf(dy), bindingOf(dx), bindingOf(stats)],
    plan.workgroups(rows),
  );
  if (grads.weight || grads.bias) columnSums(rec, x, dy, stats, rows, cols, grads);
  // Released into the recording: later dispatches of this step may reuse the buffer.
  releaseTensor(stats, rec);
  return dx;
}

/** Adds Σ_rows dy · (x − shift) · scale into `grads.weight` and Σ_rows dy into `grads.bias`. */
function columnSums(
  rec: Recording,
  x: Tensor,
  dy: Tensor,
  stats: Tensor,
  rows: number,
  cols: number,
  { weight: dw, bias: db }: NormGrads,
): void {
  for (const t of [dw, db]) if (t) markWritten(t);
  const which = `${dw ? "w" : ""}${db ? "b" : ""}`;
  const pipeline = getPipeline(rec.gpu, `grad:norm:cols:${which}`, () => `
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
  const res: GPUBindingResource[] = [bindingOf(x), bindingOf(dy), bindingOf(stats)];
  if (dw) res.push(bindingOf(dw));
  if (db) res.push(bindingOf(db));
  // Row ranges keep each invocation's loop inside the software adapter's iteration limit.
  for (const [first, count] of rowRanges(rows)) {
    recordDispatch(
      rec,
      pipeline,
      ColumnParams.pack({ rows: count, h: cols, first }),
      res,
      grid(rec.gpu, Math.ceil(cols / WG)),
    );
  }
}
