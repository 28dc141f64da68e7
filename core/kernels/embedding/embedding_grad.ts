/**
 * Embedding backward: scatter-add of the output gradient rows into the table gradient,
 * `dTable[ids[t]] += dy[t]`. One invocation per (table chunk, column) walks every token in order,
 * so no atomics are needed and the sum is deterministic; rows of ids not in the batch are left
 * untouched (they stay 0 after the optimizer zeroes the gradients).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  markWritten,
  numel,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  rowRanges,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 64;

/**
 * Ids [first, first + n) of dy's rows of `h`; the gradient chunk holds rows
 * [rowStart, rowStart + rows) of `V`.
 */
const EmbeddingGradParams = uniformLayout({
  n: "u32",
  h: "u32",
  rowStart: "u32",
  rows: "u32",
  V: "u32",
  first: "u32",
});

/** Adds dy [..., h] into dTable [V, h] at the rows `ids` (i32, shape [...]). */
export function embeddingBackward(rec: Recording, ids: Tensor, dy: Tensor, dTable: Tensor): Tensor {
  const kernel = "embeddingBackward";
  expectDtype(ids, kernel, "ids", ["i32"]);
  expectDtype(dy, kernel, "dy", ["f32"]);
  expectDtype(dTable, kernel, "dTable", ["f32"]);
  assertUnchunked(ids, kernel, "ids");
  assertUnchunked(dy, kernel, "dy");
  if (dTable.shape.length !== 2) throw new GpuError(`${kernel}: dTable must be [V, h]`);
  const [V, h] = dTable.shape;
  const n = numel(ids.shape);
  if (numel(dy.shape) !== n * h) {
    throw new GpuError(`${kernel}: dy has ${numel(dy.shape)} elements, expected ${n} × ${h}`);
  }
  markWritten(dTable);
  if (n === 0 || h === 0) return dTable;
  const pipeline = getPipeline(rec.gpu, "grad:embedding", () => `
${EmbeddingGradParams.wgsl}${declareInput(1, "I", "i32")}
${declareInput(2, "DY", "f32")}
${declareOutput(3, "DT")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let j = ${WG_INDEX} * ${WG}u + lid.x;
  if (j >= P.h) { return; }
  for (var i = 0u; i < P.n; i++) {
    let t = P.first + i;
    let id = I[t];
    if (id < 0 || u32(id) >= P.V) { continue; }
    let r = u32(id);
    if (r < P.rowStart || r >= P.rowStart + P.rows) { continue; }
    let o = (r - P.rowStart) * P.h + j;
    DT[o] = DT[o] + DY[t * P.h + j];
  }
}
`);
  dTable.chunks.forEach((c, i) => {
    if (c.rows === 0) return;
    for (const [first, count] of rowRanges(n)) {
      recordDispatch(
        rec,
        pipeline,
        EmbeddingGradParams.pack({ n: count, h, rowStart: c.rowStart, rows: c.rows, V, first }),
        [bindingOf(ids), bindingOf(dy), bindingOf(dTable, i)],
        grid(rec.gpu, Math.ceil(h / WG)),
      );
    }
  });
  return dTable;
}
