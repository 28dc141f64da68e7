/**
 * Embedding gather: `out[i, :] = table[ids[i], :]` for a [V, h] table in f32 or f16, possibly
 * chunked by rows (the real ChatGLM-6B table is ~1 GiB in f16). One dispatch per chunk; each
 * writes only the ids that fall in its rows. Ids outside [0, V) give rows of NaN, so a bad id
 * cannot pass silently as plausible numbers.
 *
 * One design on every adapter. Backward: embedding_grad.ts.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";
import { quantEmbedding } from "../matmul/quant.ts";
import { textureEmbedding } from "../matmul/texture.ts";

const WG = 256;

/**
 * `n` ids, rows of `h`; the table chunk holds rows [rowStart, rowStart + rows) of `V`; `first` is
 * 1 on the first chunk's dispatch (it marks out-of-range ids).
 */
const EmbeddingParams = uniformLayout({
  n: "u32",
  h: "u32",
  rowStart: "u32",
  rows: "u32",
  V: "u32",
  first: "u32",
});

/** Rows of `table` [V, h] at `ids` (i32/u32, any shape) → f32 [...ids.shape, h]. */
export function embedding(rec: Recording, table: Tensor, ids: Tensor, out?: Tensor): Tensor {
  if (table.quant) return quantEmbedding(rec, table, ids, out);
  // A tied table kept only as the output layer's texture (software adapters) is read there.
  if (table.meta.storageDropped) {
    const fromTexture = textureEmbedding(rec, table, ids, out);
    if (fromTexture) return fromTexture;
  }
  expectDtype(table, "embedding", "table", ["f32", "f16"]);
  expectDtype(ids, "embedding", "ids", ["i32", "u32"]);
  assertUnchunked(ids, "embedding", "ids");
  if (table.shape.length !== 2) {
    throw new GpuError(`embedding: table must be [V, h], got [${table.shape.join(", ")}]`);
  }
  const [V, h] = table.shape;
  const n = numel(ids.shape);
  const y = outputTensor(rec, "embedding", [...ids.shape, h], out);
  assertUnchunked(y, "embedding", "out");
  if (n === 0 || h === 0) return y;
  const pipeline = getPipeline(rec.gpu, `embedding:${table.dtype}:${ids.dtype}`, () => `
${EmbeddingParams.wgsl}${declareInput(1, "T", table.dtype)}
${declareInput(2, "I", ids.dtype)}
${declareOutput(3, "Y")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;
  if (e >= P.n * P.h) { return; }
  let i = e / P.h;
  let j = e - i * P.h;
  let id = i32(ld_I(i));
  if (id < 0 || u32(id) >= P.V) {
    // The first chunk's dispatch marks out-of-range ids.
    if (P.first == 1u) { Y[e] = bitcast<f32>(0x7fc00000u); }
    return;
  }
  let r = u32(id);
  if (r < P.rowStart || r >= P.rowStart + P.rows) { return; }
  Y[e] = ld_T((r - P.rowStart) * P.h + j);
}
`);
  table.chunks.forEach((c, i) => {
    if (c.rows === 0) return;
    recordDispatch(
      rec,
      pipeline,
      EmbeddingParams.pack({ n, h, rowStart: c.rowStart, rows: c.rows, V, first: i === 0 ? 1 : 0 }),
      [bindingOf(table, i), bindingOf(ids), bindingOf(y)],
      grid(rec.gpu, Math.ceil((n * h) / WG)),
    );
  });
  return y;
}
