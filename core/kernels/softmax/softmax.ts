/**
 * Softmax over the last dimension (f32, max-subtracted). Its backward is folded into the ops
 * that train through it: attention (attention_grad.ts) and cross-entropy (cross_entropy_grad.ts).
 *
 * Designs as the norms' (`rowPlan` in ../common.ts): a workgroup per row with a tree reduction
 * on hardware GPUs, an invocation per row on software adapters.
 */

import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  rowPlan,
  rowsOf,
  WG_BUILTINS,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/** Invocations per row in the workgroup design. */
const LANES = 64;

/** Rows of `cols` elements. */
const RowParams = uniformLayout({ rows: "u32", cols: "u32" });

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
  recordDispatch(
    rec,
    pipeline,
    RowParams.pack({ rows, cols }),
    [bindingOf(x), bindingOf(y)],
    plan.workgroups(rows),
  );
  return y;
}
