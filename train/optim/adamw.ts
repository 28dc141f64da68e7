/**
 * AdamW as a WGSL kernel over f32 parameter / gradient / m / v tensors, PyTorch semantics
 * (`torch.optim.AdamW`, single-tensor path; fixture spec §8):
 *
 *   p = p · (1 − lr·wd);  m = lerp(m, g, 1 − β1);  v = β2·v + (1 − β2)·g²
 *   p = p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 *
 * The bias corrections are computed on the host in float64 per tensor (each tensor keeps its own
 * step count t), as PyTorch does. The gradient is first multiplied by `result[1]` (clip coefficient
 * × accumulation scale, written by the clip pass on the GPU), and the whole update is skipped when
 * `result[2]` is set (NaN/Inf gradients), so the step needs no host round trip before the update.
 */

import { getPipeline, recordDispatch, type Recording } from "../../core/mod.ts";
import { type AdamWHyper, adamwScalars } from "./adamw_reference.ts";
import { type BufferRegion, type Chunk, chunkBinding } from "./chunks.ts";

const WG = 256;
const MAX_WORKGROUPS = 4096;

/**
 * The kernel over `T` = f32 or vec4<f32> elements: on llvmpipe every storage load at a run-time
 * address is a scalar loop, so one 16-byte load per array access is ~4× faster (CONVENTIONS.md);
 * chunks whose length is a multiple of 4 use the vec4 variant.
 */
export function adamwWgsl(vec4: boolean): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
struct Params {
  n: u32, decay: f32, beta1: f32, beta2: f32,
  oneMinusBeta1: f32, oneMinusBeta2: f32, stepSize: f32, bias2Sqrt: f32,
  eps: f32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<${T}>;
@group(0) @binding(2) var<storage, read> grad: array<${T}>;
@group(0) @binding(3) var<storage, read_write> m: array<${T}>;
@group(0) @binding(4) var<storage, read_write> v: array<${T}>;
@group(0) @binding(5) var<storage, read> result: array<f32, 4>;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  if (result[2] != 0.0) { return; }
  let scale = result[1];
  let w = params.oneMinusBeta1;
  let stride = nwg.x * ${WG}u;
  // params.n counts elements of T
  for (var i = gid.x; i < params.n; i += stride) {
    let g = grad[i] * scale;
    let p = param[i] * params.decay;
    // torch.lerp(m, g, w) evaluates from the nearer end, for accuracy.
    let mo = m[i];
    var mn: ${T};
    if (w < 0.5) { mn = mo + w * (g - mo); } else { mn = g - (g - mo) * (1.0 - w); }
    let vn = v[i] * params.beta2 + params.oneMinusBeta2 * (g * g);
    m[i] = mn;
    v[i] = vn;
    let denom = sqrt(vn) / params.bias2Sqrt + params.eps;
    param[i] = p - params.stepSize * (mn / denom);
  }
}
`;
}

/** The scalar kernel (for reading and for chunks whose length is not a multiple of 4). */
export const ADAMW_WGSL: string = adamwWgsl(false);

/** The GPU tensors of one trainable parameter for the AdamW kernel. */
export interface AdamWTensor {
  param: BufferRegion;
  grad: BufferRegion;
  m: BufferRegion;
  v: BufferRegion;
  chunks: Chunk[];
}

/**
 * Records the AdamW update of one tensor at its step `t` (1-based), reading the gradient
 * multiplier and the skip flag from `result` (see clip.ts).
 */
export function recordAdamW(
  rec: Recording,
  tensor: AdamWTensor,
  result: GPUBuffer,
  hyper: AdamWHyper,
  t: number,
): void {
  const s = adamwScalars(hyper, t);
  for (const c of tensor.chunks) {
    const vec4 = c.length % 4 === 0;
    const pipeline = getPipeline(
      rec.gpu,
      vec4 ? "train.adamw.vec4" : "train.adamw",
      () => adamwWgsl(vec4),
    );
    const n = vec4 ? c.length / 4 : c.length;
    recordDispatch(rec, pipeline, [
      n,
      { f: s.decay },
      { f: hyper.beta1 },
      { f: hyper.beta2 },
      { f: 1 - hyper.beta1 },
      { f: 1 - hyper.beta2 },
      { f: s.stepSize },
      { f: s.bias2Sqrt },
      { f: hyper.eps },
    ], [
      chunkBinding(tensor.param, c),
      chunkBinding(tensor.grad, c),
      chunkBinding(tensor.m, c),
      chunkBinding(tensor.v, c),
      { buffer: result, offset: 0, size: 16 },
    ], [Math.min(MAX_WORKGROUPS, Math.ceil(n / WG))]);
  }
}
