/**
 * The SwiGLU gate of Llama-family MLPs: `y = silu(g) ⊙ u` with `silu(z) = z / (1 + e^(−z))`, and
 * its backward `dg = dy ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g)))`, `du = dy ⊙ silu(g)`. One invocation per
 * element on every adapter.
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

const WG = 256;
const GateParams = uniformLayout({ n: "u32" });

function check(kernel: string, named: [Tensor, string][]): number {
  const n = numel(named[0][0].shape);
  for (const [t, name] of named) {
    expectDtype(t, kernel, name, ["f32"]);
    assertUnchunked(t, kernel, name);
    if (numel(t.shape) !== n) {
      throw new GpuError(`${kernel}: ${name} [${t.shape}] differs from [${named[0][0].shape}]`);
    }
  }
  return n;
}

/** `silu(gate) ⊙ up` (same shapes). */
export function siluGate(rec: Recording, gate: Tensor, up: Tensor, out?: Tensor): Tensor {
  const kernel = "siluGate";
  const n = check(kernel, [[gate, "gate"], [up, "up"]]);
  const y = outputTensor(rec, kernel, gate.shape, out);
  if (n === 0) return y;
  const pipeline = getPipeline(rec.gpu, "siluGate", () => `
${GateParams.wgsl}${declareInput(1, "G", "f32")}
${declareInput(2, "U", "f32")}
${declareOutput(3, "Y")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  let g = G[i];
  Y[i] = g / (1.0 + exp(-g)) * U[i];
}
`);
  recordDispatch(
    rec,
    pipeline,
    GateParams.pack({ n }),
    [bindingOf(gate), bindingOf(up), bindingOf(y)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return y;
}

/** Gradients of {@link siluGate}: `{ dGate, dUp }`. */
export function siluGateBackward(
  rec: Recording,
  gate: Tensor,
  up: Tensor,
  dy: Tensor,
): { dGate: Tensor; dUp: Tensor } {
  const kernel = "siluGateBackward";
  const n = check(kernel, [[gate, "gate"], [up, "up"], [dy, "dy"]]);
  const dGate = outputTensor(rec, kernel, gate.shape);
  const dUp = outputTensor(rec, kernel, gate.shape);
  if (n === 0) return { dGate, dUp };
  const pipeline = getPipeline(rec.gpu, "siluGateBackward", () => `
${GateParams.wgsl}${declareInput(1, "G", "f32")}
${declareInput(2, "U", "f32")}
${declareInput(3, "DY", "f32")}
${declareOutput(4, "DG")}
${declareOutput(5, "DU")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  let g = G[i];
  let sg = 1.0 / (1.0 + exp(-g));
  let dy = DY[i];
  DG[i] = dy * U[i] * sg * (1.0 + g * (1.0 - sg));
  DU[i] = dy * g * sg;
}
`);
  recordDispatch(
    rec,
    pipeline,
    GateParams.pack({ n }),
    [bindingOf(gate), bindingOf(up), bindingOf(dy), bindingOf(dGate), bindingOf(dUp)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return { dGate, dUp };
}
