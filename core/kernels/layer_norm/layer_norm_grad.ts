/**
 * LayerNorm backward from the saved input x (mean and variance are recomputed per row, which is
 * cheaper than storing them): dx per row, and the weight / bias gradients summed over rows and
 * added into the given gradient tensors (omitted for frozen parameters). The frame, the checks
 * and the column sums are shared with RMSNorm (norm_grad.ts).
 *
 * With x̂ = (x − μ)/σ and g = dy·w: dx = (g − mean(g) − x̂·mean(g·x̂)) / σ; dw = Σ dy·x̂; db = Σ dy.
 */

import type { Recording } from "../../gpu/recording.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { normBackward, type NormGrads, type NormRowKernel } from "./norm_grad.ts";

export type LayerNormGrads = NormGrads;

const LAYER_NORM: NormRowKernel = {
  kernel: "layerNormBackward",
  row: (L) => `
  var s = 0.0;
  for (var j = t; j < P.h; j += ${L}u) { s += X[base + j]; }
  let mean = wg_sum(s, t) / f32(P.h);
  var v = 0.0;
  for (var j = t; j < P.h; j += ${L}u) { let c = X[base + j] - mean; v += c * c; }
  let rstd = 1.0 / sqrt(wg_sum(v, t) / f32(P.h) + P.eps);
  var sg = 0.0;
  var sgx = 0.0;
  for (var j = t; j < P.h; j += ${L}u) {
    let g = DY[base + j] * ld_W(j);
    sg += g;
    sgx += g * (X[base + j] - mean) * rstd;
  }
  let mg = wg_sum(sg, t) / f32(P.h);
  let mgx = wg_sum(sgx, t) / f32(P.h);
  for (var j = t; j < P.h; j += ${L}u) {
    let xh = (X[base + j] - mean) * rstd;
    DX[base + j] = (DY[base + j] * ld_W(j) - mg - xh * mgx) * rstd;
  }
  let shift = mean;
  let scale = rstd;`,
};

/** Returns dx [..., h]; adds dw, db into `grads` when given. */
export function layerNormBackward(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  eps: number,
  dy: Tensor,
  grads: LayerNormGrads = {},
): Tensor {
  return normBackward(rec, LAYER_NORM, x, weight, eps, dy, grads);
}
