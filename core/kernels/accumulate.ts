/**
 * Gradient accumulation kernels: `dst += scale · src` in place (one read-write binding, so it is
 * legal where `add(dst, src, out = dst)` would bind one buffer twice), and column sums of a
 * [rows, N] matrix added into a [N] gradient (bias gradients).
 */

import { GpuError } from "../gpu/device.ts";
import { getPipeline } from "../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../gpu/recording.ts";
import { assertUnchunked, bindingOf, markWritten, numel, type Tensor } from "../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  rowRanges,
  WG_BUILTINS,
  WG_INDEX,
} from "./common.ts";
import { uniformLayout } from "./uniforms.ts";

const WG = 256;

const AccumulateParams = uniformLayout({ n: "u32", scale: "f32" });
const ColumnSumParams = uniformLayout({ rows: "u32", N: "u32", first: "u32" });

/** `dst += scale · src` (f32, same element count, same chunking). */
export function accumulateInto(rec: Recording, dst: Tensor, src: Tensor, scale = 1): Tensor {
  const kernel = "accumulateInto";
  expectDtype(dst, kernel, "dst", ["f32"]);
  expectDtype(src, kernel, "src", ["f32"]);
  if (numel(dst.shape) !== numel(src.shape) || dst.chunks.length !== src.chunks.length) {
    throw new GpuError(
      `${kernel}: dst [${dst.shape.join(", ")}] and src [${src.shape.join(", ")}] differ`,
    );
  }
  markWritten(dst);
  const pipeline = getPipeline(rec.gpu, "grad:accumulate", () => `
${AccumulateParams.wgsl}${declareOutput(1, "D")}
${declareInput(2, "S", "f32")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  D[i] = D[i] + P.scale * S[i];
}
`);
  dst.chunks.forEach((c, i) => {
    const n = c.byteLength / 4;
    if (n !== src.chunks[i].byteLength / 4) throw new GpuError(`${kernel}: chunk sizes differ`);
    if (n === 0) return;
    recordDispatch(
      rec,
      pipeline,
      AccumulateParams.pack({ n, scale }),
      [bindingOf(dst, i), bindingOf(src, i)],
      grid(rec.gpu, Math.ceil(n / WG)),
    );
  });
  return dst;
}

/** `dst[n] += Σ_rows x[row, n]` for x seen as [rows, N] (bias gradient of a linear layer). */
export function columnSumInto(rec: Recording, dst: Tensor, x: Tensor): Tensor {
  const kernel = "columnSumInto";
  expectDtype(dst, kernel, "dst", ["f32"]);
  expectDtype(x, kernel, "x", ["f32"]);
  assertUnchunked(x, kernel, "x");
  const N = x.rowLength;
  if (numel(dst.shape) !== N) {
    throw new GpuError(`${kernel}: dst has ${numel(dst.shape)} elements, x rows have ${N}`);
  }
  const rows = N === 0 ? 0 : numel(x.shape) / N;
  markWritten(dst);
  if (N === 0) return dst;
  const pipeline = getPipeline(rec.gpu, "grad:columnSum", () => `
${ColumnSumParams.wgsl}${declareOutput(1, "D")}
${declareInput(2, "X", "f32")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let n = ${WG_INDEX} * ${WG}u + lid.x;
  if (n >= P.N) { return; }
  var s = 0.0;
  for (var r = 0u; r < P.rows; r++) { s += X[(P.first + r) * P.N + n]; }
  D[n] = D[n] + s;
}
`);
  for (const [first, count] of rowRanges(rows)) {
    recordDispatch(
      rec,
      pipeline,
      ColumnSumParams.pack({ rows: count, N, first }),
      [bindingOf(dst), bindingOf(x)],
      grid(rec.gpu, Math.ceil(N / WG)),
    );
  }
  return dst;
}
