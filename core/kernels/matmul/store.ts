/**
 * What the two 4×4-per-invocation matmul kernels (generic in matmul.ts, shared-memory in
 * shared.ts) share: their parameters and their store epilogue.
 */

import { uniformLayout } from "../uniforms.ts";

/**
 * Parameters of both tiled kernels: this dispatch's `M` rows × `N` columns of the output (from
 * output row `rowOffset` and, for a chunked B, column `colOffset`), `K`; row strides `ldb`, `ldc`;
 * per-batch strides `aBatch`, `bBatch`, `cBatch` (batch = workgroup z); `bRowOffset`: first row of
 * B's chunk.
 */
export const TiledParams = uniformLayout({
  M: "u32",
  N: "u32",
  K: "u32",
  ldb: "u32",
  ldc: "u32",
  colOffset: "u32",
  bRowOffset: "u32",
  aBatch: "u32",
  bBatch: "u32",
  cBatch: "u32",
  rowOffset: "u32",
});

/**
 * WGSL: the epilogue both 4×4-per-invocation matmul kernels end with: add the bias (when there is
 * one) and store the tile `acc0..acc3` at rows `row0..row0+3`, columns `col0..col0+3`, skipping
 * what lies past M or N. Expects `P.M`, `P.N`, `P.ldc`, `P.cBatch`, `P.colOffset`, `ld_bias` and
 * the output `C` to be declared by the kernel.
 */
export function storeTile4x4(bias: boolean): string {
  const loadBias = bias
    ? [0, 1, 2, 3].map((j) => `bvec[${j}] = ld_bias(min(col0 + ${j}u, P.N - 1u) + P.colOffset);`)
      .join("\n  ")
    : "";
  return `var bvec = vec4<f32>(0.0);
  ${loadBias}
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  let cBase = wid.z * P.cBatch;
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + i;
    if (m >= P.M) { break; }
    let v = accs[i] + bvec;
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + j;
      if (n < P.N) { C[cBase + m * P.ldc + P.colOffset + n] = v[j]; }
    }
  }`;
}
