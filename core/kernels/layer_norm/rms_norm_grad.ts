/**
 * Backward of RMSNorm `y = w ⊙ x · r`, `r = 1 / sqrt(mean(x²) + eps)` (over the last dim):
 *
 * ```
 * dx = r · (w ⊙ dy) − x · r³ / n · Σ_j (w_j · dy_j · x_j)
 * dw += Σ_rows dy ⊙ x · r
 * ```
 *
 * The row pass writes dx and each row's r; the column sums of dw, the checks and the passes' frame
 * are shared with LayerNorm (norm_grad.ts: x̂ = (x − 0) · r).
 */

import type { Recording } from "../../gpu/recording.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { normBackward, type NormRowKernel } from "./norm_grad.ts";

const RMS_NORM: NormRowKernel = {
  kernel: "rmsNormBackward",
  row: (L) => `
  var ss = 0.0;
  var dot = 0.0;
  for (var j = t; j < P.h; j += ${L}u) {
    let xv = X[base + j];
    ss += xv * xv;
    dot += ld_W(j) * DY[base + j] * xv;
  }
  let r = inverseSqrt(wg_sum(ss, t) / f32(P.h) + P.eps);
  let k = r * r * r * wg_sum(dot, t) / f32(P.h);
  for (var j = t; j < P.h; j += ${L}u) {
    DX[base + j] = r * ld_W(j) * DY[base + j] - X[base + j] * k;
  }
  let shift = 0.0;
  let scale = r;`,
};

/** Returns dx (shape of x); adds dw into `weightGrad` [cols] f32 when given. */
export function rmsNormBackward(
  rec: Recording,
  x: Tensor,
  weight: Tensor,
  eps: number,
  dy: Tensor,
  weightGrad?: Tensor,
): Tensor {
  return normBackward(rec, RMS_NORM, x, weight, eps, dy, { weight: weightGrad });
}
