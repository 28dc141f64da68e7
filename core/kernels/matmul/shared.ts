/**
 * The classic shared-memory tiled matmul for hardware GPUs: 16×16 workgroups compute a 64×64
 * output tile, each invocation 4×4, staging 64×16 tiles of A and 16×64 of B in workgroup memory.
 * Same parameters and variants as the generic kernel (see matmul.ts), so the dispatch code is
 * shared. (On llvmpipe workgroup memory is slow, so software adapters use the texture design.)
 */

import { declareInput, declareOutput } from "../common.ts";
import { storeTile4x4, TiledParams } from "./store.ts";
import type { DType } from "../../tensor/tensor.ts";

/** Output tile edge of one workgroup. */
export const SHARED_TILE = 64;
const KT = 16;

export function sharedCode(
  transposeA: boolean,
  transposeB: boolean,
  bDtype: DType,
  bias: DType | "",
): string {
  const aIdx = transposeA ? "k * P.M + m" : "m * P.K + k";
  const bIdx = transposeB ? "n * P.K + k" : "k * P.ldb + n";
  // Map the flat load index so that neighbouring invocations read neighbouring addresses.
  const aMap = transposeA
    ? `let r = e % 64u; let kk = e / 64u;`
    : `let r = e / ${KT}u; let kk = e % ${KT}u;`;
  const bMap = transposeB
    ? `let c = e / ${KT}u; let kk = e % ${KT}u;`
    : `let c = e % 64u; let kk = e / 64u;`;
  return `
${TiledParams.wgsl}${declareInput(1, "A", "f32")}
${declareInput(2, "B", bDtype)}
${declareOutput(3, "C")}
${bias ? declareInput(4, "bias", bias) : ""}
var<workgroup> As: array<f32, ${64 * KT}>;
var<workgroup> Bs: array<f32, ${64 * KT}>;
@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let tileRow = wid.y * 64u;
  let tileCol = wid.x * 64u;
  let tr = lid.y * 4u;
  let tc = lid.x * 4u;
  let aBase = wid.z * P.aBatch + P.rowOffset * P.K;
  let bBase = wid.z * P.bBatch;
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < P.K; k0 += ${KT}u) {
    for (var i = 0u; i < 4u; i++) {
      let e = li + i * 256u;
      ${aMap}
      let m = tileRow + r;
      let k = k0 + kk;
      var v = 0.0;
      if (m < P.M && k < P.K) { v = ld_A(aBase + ${aIdx}); }
      As[r * ${KT}u + kk] = v;
    }
    for (var i = 0u; i < 4u; i++) {
      let e = li + i * 256u;
      ${bMap}
      let n = tileCol + c + P.bRowOffset;
      let k = k0 + kk;
      var v = 0.0;
      if (tileCol + c < P.N && k < P.K) { v = ld_B(bBase + ${bIdx}); }
      Bs[kk * 64u + c] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${KT}u; kk++) {
      let bo = kk * 64u + tc;
      let bv = vec4<f32>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
      acc0 += As[(tr + 0u) * ${KT}u + kk] * bv;
      acc1 += As[(tr + 1u) * ${KT}u + kk] * bv;
      acc2 += As[(tr + 2u) * ${KT}u + kk] * bv;
      acc3 += As[(tr + 3u) * ${KT}u + kk] * bv;
    }
    workgroupBarrier();
  }
  let row0 = tileRow + tr;
  let col0 = tileCol + tc;
  ${storeTile4x4(bias !== "")}
}
`;
}
