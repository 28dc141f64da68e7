/**
 * Backward of the mean cross-entropy of `crossEntropy` (cross_entropy.ts):
 * dlogits[r][v] = scale · (softmax(logits[r])[v] − [v = label[r]]) / count for counted rows,
 * 0 for rows whose label is the ignore index. Uses the forward's per-row logsumexp and its
 * `mean` tensor ([mean, count]), so nothing is read back. Logits may be chunked by rows; the
 * gradient gets the same chunking.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  emptyTensor,
  numel,
  type Tensor,
} from "../../tensor/tensor.ts";
import { declareInput, declareOutput, expectDtype, WG_BUILTINS, WG_INDEX } from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

/** A logits chunk as in the forward, and the loss's `scale`. */
const GradParams = uniformLayout({
  rows: "u32",
  V: "u32",
  rowStart: "u32",
  ignore: "i32",
  scale: "f32",
});

/** Returns dlogits (f32, shape and chunking of `logits`). */
export function crossEntropyBackward(
  rec: Recording,
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  mean: Tensor,
  scale = 1,
  ignoreIndex = -100,
): Tensor {
  const kernel = "crossEntropyBackward";
  expectDtype(logits, kernel, "logits", ["f32"]);
  expectDtype(labels, kernel, "labels", ["i32"]);
  expectDtype(lse, kernel, "lse", ["f32"]);
  expectDtype(mean, kernel, "mean", ["f32"]);
  assertUnchunked(labels, kernel, "labels");
  const V = logits.rowLength;
  const R = V === 0 ? 0 : numel(logits.shape) / V;
  if (numel(labels.shape) !== R || numel(lse.shape) !== R) {
    throw new GpuError(`${kernel}: labels / lse must have ${R} rows`);
  }
  const dl = emptyTensor(rec.gpu, logits.shape, "f32", {
    rec,
    rowsPerChunk: logits.chunks[0].rows || 1,
    label: "dlogits",
  });
  const pipeline = getPipeline(rec.gpu, "grad:crossEntropy", () => `
${GradParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "L", "i32")}
${declareInput(3, "LSE", "f32")}
${declareInput(4, "MEAN", "f32")}
${declareOutput(5, "DX")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let local = ${WG_INDEX};
  if (local >= P.rows) { return; }
  let row = P.rowStart + local;
  let base = local * P.V;
  let label = L[row];
  let count = MEAN[1];
  if (label == P.ignore || count == 0.0) {
    for (var j = lid.x; j < P.V; j += ${WG}u) { DX[base + j] = 0.0; }
    return;
  }
  let f = P.scale / count;
  let m = LSE[row];
  for (var j = lid.x; j < P.V; j += ${WG}u) {
    let onehot = select(0.0, 1.0, i32(j) == label);
    DX[base + j] = (exp(X[base + j] - m) - onehot) * f;
  }
}
`);
  logits.chunks.forEach((c, i) => {
    if (c.rows === 0) return;
    recordDispatch(
      rec,
      pipeline,
      GradParams.pack({ rows: c.rows, V, rowStart: c.rowStart, ignore: ignoreIndex, scale }),
      [bindingOf(logits, i), bindingOf(labels), bindingOf(lse), bindingOf(mean), bindingOf(dl, i)],
      grid(rec.gpu, c.rows),
    );
  });
  return dl;
}
