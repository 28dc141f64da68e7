/**
 * Cross-entropy over a large vocabulary with ignored labels:
 * `loss[r] = logsumexp(logits[r]) − logits[r][label[r]]` (0 where label = ignoreIndex, −100),
 * `mean = Σ loss / count(label ≠ ignoreIndex)` (0 when every label is ignored), all f32.
 * Logits may be chunked by rows (the real vocab makes [512, 130528] f32 ≈ 267 MB). The row
 * logsumexp is returned too (the backward pass needs it).
 *
 * Labels are used as given: shift them (labels[t+1] for logits[t]) before calling.
 * A label outside [0, V) that is not ignored gives a NaN loss.
 *
 * Designs: the per-row logsumexp follows `rowPlan` (../common.ts): a workgroup of 256 per row on
 * hardware GPUs, an invocation per row on software adapters for rows up to `MAX_SERIAL_ROW` (a
 * real vocabulary keeps the workgroup design). Backward: cross_entropy_grad.ts.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  emptyTensor,
  numel,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  rowPlan,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

/** A logits chunk: rows [rowStart, rowStart + rows) of length V; `ignore`: the label to skip. */
const RowParams = uniformLayout({ rows: "u32", V: "u32", rowStart: "u32", ignore: "i32" });
const MeanParams = uniformLayout({ rows: "u32", ignore: "i32" });

export interface CrossEntropyResult {
  /** Per-row loss [R] (0 for ignored rows). */
  loss: Tensor;
  /** Per-row logsumexp [R]. */
  lse: Tensor;
  /** [2]: mean loss over counted rows, number of counted rows (as f32). */
  mean: Tensor;
}

/** Cross-entropy of `logits` [..., V] (f32) against `labels` (i32, shape [...]). */
export function crossEntropy(
  rec: Recording,
  logits: Tensor,
  labels: Tensor,
  ignoreIndex = -100,
): CrossEntropyResult {
  const kernel = "crossEntropy";
  expectDtype(logits, kernel, "logits", ["f32"]);
  expectDtype(labels, kernel, "labels", ["i32"]);
  assertUnchunked(labels, kernel, "labels");
  const V = logits.rowLength;
  const R = V === 0 ? 0 : numel(logits.shape) / V;
  if (numel(labels.shape) !== R) {
    throw new GpuError(`${kernel}: ${numel(labels.shape)} labels for ${R} rows of logits`);
  }
  if (R > 0 && V === 0) throw new GpuError(`${kernel}: empty vocabulary`);
  const gpu = rec.gpu;
  const loss = emptyTensor(gpu, [R], "f32", { rec, label: "ce loss" });
  const lse = emptyTensor(gpu, [R], "f32", { rec, label: "ce lse" });
  const mean = emptyTensor(gpu, [2], "f32", { rec, label: "ce mean" });
  // Vocabulary rows are long: 256 lanes share one on hardware GPUs.
  const plan = rowPlan(gpu, WG, V);
  const L = plan.lanes;
  const rowPipeline = getPipeline(gpu, `crossEntropy:rows:${plan.tag}`, () => `
${RowParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "L", "i32")}
${declareOutput(3, "LOSS")}
${declareOutput(4, "LSE")}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.rows) { return; }
  let base = row * P.V;
  var m = -3.4028234e38;
  for (var j = t; j < P.V; j += ${L}u) { m = max(m, X[base + j]); }
  m = wg_reduce(m, t, true);
  var s = 0.0;
  for (var j = t; j < P.V; j += ${L}u) { s += exp(X[base + j] - m); }
  s = wg_reduce(s, t, false);
  if (t == 0u) {
    let r = P.rowStart + row;
    let lse = m + log(s);
    LSE[r] = lse;
    let label = L[r];
    if (label == P.ignore) { LOSS[r] = 0.0; }
    else if (label < 0 || u32(label) >= P.V) { LOSS[r] = bitcast<f32>(0x7fc00000u); }
    else { LOSS[r] = lse - X[base + u32(label)]; }
  }
}
`);
  logits.chunks.forEach((c, i) => {
    if (c.rows === 0) return;
    recordDispatch(
      rec,
      rowPipeline,
      RowParams.pack({ rows: c.rows, V, rowStart: c.rowStart, ignore: ignoreIndex }),
      [bindingOf(logits, i), bindingOf(labels), bindingOf(loss), bindingOf(lse)],
      plan.workgroups(c.rows),
    );
  });
  const meanPipeline = getPipeline(gpu, "crossEntropy:mean", () => `
${MeanParams.wgsl}${declareInput(1, "LOSS", "f32")}
${declareInput(2, "L", "i32")}
${declareOutput(3, "OUT")}
var<workgroup> rs: array<f32, ${WG}>;
var<workgroup> rc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let t = lid.x;
  var s = 0.0;
  var n = 0.0;
  for (var r = t; r < P.rows; r += ${WG}u) {
    if (L[r] != P.ignore) { s += LOSS[r]; n += 1.0; }
  }
  rs[t] = s;
  rc[t] = n;
  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {
    if (t < st) { rs[t] += rs[t + st]; rc[t] += rc[t + st]; }
    workgroupBarrier();
  }
  if (t == 0u && ${WG_INDEX} == 0u) {
    OUT[0] = select(0.0, rs[0] / rc[0], rc[0] > 0.0);
    OUT[1] = rc[0];
  }
}
`);
  recordDispatch(
    rec,
    meanPipeline,
    MeanParams.pack({ rows: R, ignore: ignoreIndex }),
    [bindingOf(loss), bindingOf(labels), bindingOf(mean)],
    [1],
  );
  return { loss, lse, mean };
}
