/**
 * Reductions of the last dimension: sum, max, sum of squares (no backward: not trained through).
 *
 * Designs as the norms' (`rowPlan` in ../common.ts): a workgroup per row with a tree reduction
 * on hardware GPUs, an invocation per row on software adapters.
 */

import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  rowPlan,
  WG_BUILTINS,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/** Invocations per row in the workgroup design. */
const LANES = 64;

/** Rows of `cols` elements. */
const RowParams = uniformLayout({ rows: "u32", cols: "u32" });

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
  recordDispatch(
    rec,
    pipeline,
    RowParams.pack({ rows, cols }),
    [bindingOf(x), bindingOf(y)],
    plan.workgroups(rows),
  );
  return y;
}
