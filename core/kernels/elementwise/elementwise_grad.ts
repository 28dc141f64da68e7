/**
 * Backward of the elementwise forward ops: GeLU (tanh form, from the saved input) and the
 * training-only LoRA dropout, whose keep mask is a hash of (seed, element index) so that the
 * backward pass and a recomputed forward regenerate it instead of storing it.
 */

import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  outputTensor,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

const CountParams = uniformLayout({ n: "u32" });
/** Drop probability `p`, `scale` = 1 / (1 − p), the 64-bit seed as two halves. */
const DropoutParams = uniformLayout({
  n: "u32",
  p: "f32",
  scale: "f32",
  seedLo: "u32",
  seedHi: "u32",
});

/** dx = dy · gelu'(x) for the tanh-approximated GeLU. */
export function geluBackward(rec: Recording, x: Tensor, dy: Tensor, out?: Tensor): Tensor {
  const kernel = "geluBackward";
  expectDtype(x, kernel, "x", ["f32"]);
  expectDtype(dy, kernel, "dy", ["f32"]);
  expectShape(dy, kernel, "dy", x.shape);
  assertUnchunked(x, kernel, "x");
  const dx = outputTensor(rec, kernel, x.shape, out);
  const n = numel(x.shape);
  if (n === 0) return dx;
  const pipeline = getPipeline(rec.gpu, "grad:gelu", () => `
${CountParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "DY", "f32")}
${declareOutput(3, "DX")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  let x = X[i];
  let k = 0.7978845608028654;
  let u = k * x * (1.0 + 0.044715 * x * x);
  let t = tanh(clamp(u, -15.0, 15.0));
  let du = k * (1.0 + 3.0 * 0.044715 * x * x);
  DX[i] = DY[i] * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
}
`);
  recordDispatch(
    rec,
    pipeline,
    CountParams.pack({ n }),
    [bindingOf(x), bindingOf(dy), bindingOf(dx)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return dx;
}

/** WGSL of the keep test shared by the forward and backward dropout (PCG-style hash). */
const KEEP = `
fn hash(v: u32) -> u32 {
  var s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
fn keep(i: u32) -> bool {
  let h = hash(hash(i ^ P.seedLo) + P.seedHi);
  return f32(h >> 8u) * (1.0 / 16777216.0) >= P.p;
}`;

function dropoutKernel(
  rec: Recording,
  x: Tensor,
  p: number,
  seed: readonly [number, number],
  kernel: string,
  out?: Tensor,
): Tensor {
  expectDtype(x, kernel, "x", ["f32"]);
  assertUnchunked(x, kernel, "x");
  if (!(p >= 0 && p < 1)) throw new RangeError(`${kernel}: probability ${p} must be in [0, 1)`);
  const y = outputTensor(rec, kernel, x.shape, out);
  const n = numel(x.shape);
  if (n === 0) return y;
  const pipeline = getPipeline(rec.gpu, "grad:dropout", () => `
${DropoutParams.wgsl}${declareInput(1, "X", "f32")}
${declareOutput(2, "Y")}
${KEEP}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  Y[i] = select(0.0, X[i] * P.scale, keep(i));
}
`);
  recordDispatch(
    rec,
    pipeline,
    DropoutParams.pack({ n, p, scale: 1 / (1 - p), seedLo: seed[0] >>> 0, seedHi: seed[1] >>> 0 }),
    [bindingOf(x), bindingOf(y)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return y;
}

/**
 * Inverted dropout: each element is kept with probability 1 − p and scaled by 1 / (1 − p). The
 * mask depends only on (seed, element index): the same seed gives the same mask in the forward,
 * the backward and a recomputed forward.
 */
export function dropoutForward(
  rec: Recording,
  x: Tensor,
  p: number,
  seed: readonly [number, number],
  out?: Tensor,
): Tensor {
  return dropoutKernel(rec, x, p, seed, "dropout", out);
}

/** dx = dy · mask / (1 − p) with the mask of {@link dropoutForward} for the same seed. */
export function dropoutBackward(
  rec: Recording,
  dy: Tensor,
  p: number,
  seed: readonly [number, number],
  out?: Tensor,
): Tensor {
  return dropoutKernel(rec, dy, p, seed, "dropoutBackward", out);
}
