/**
 * Global-norm gradient clipping and the NaN/Inf guard, on the GPU.
 *
 * Two kernels: `grad_sumsq` writes one partial sum of squares per workgroup and chunk into a
 * partials buffer; `grad_norm_finalize` (one workgroup) sums the partials and writes the step's
 * verdict into a 4-float `result` buffer:
 *
 *   result[0] = norm   = sqrt(Σ g²) · gradScale   (the norm of the gradients AdamW will see)
 *   result[1] = mult   = gradScale · coef          (what AdamW multiplies every gradient by)
 *   result[2] = skip   = 1 if norm is NaN or ±Inf, else 0
 *   result[3] = coef   = min(1, maxNorm / (norm + 1e-6))   (PyTorch's clip_grad_norm_; 1 if maxNorm ≤ 0)
 *
 * The AdamW kernel reads `result` directly, so a step is recorded and submitted without waiting
 * for the norm; the host learns the verdict from the step's single readback. A NaN or Inf in any
 * gradient makes Σ g² non-finite (Inf² = Inf, NaN propagates), so one check covers every tensor.
 */

import { getPipeline, type Gpu, recordDispatch, type Recording } from "../../core/mod.ts";
import { type BufferRegion, type Chunk, chunkBinding } from "./chunks.ts";

const WG = 256;
/** Workgroups per chunk of the sum-of-squares pass (each thread loops over the rest). */
export const MAX_NORM_WORKGROUPS = 256;

/** Sum of squares over `T` = f32 or vec4<f32> elements (vec4: one 16-byte load per access). */
export function gradSumsqWgsl(vec4: boolean): string {
  const T = vec4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
struct Params { n: u32, partialOffset: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<${T}>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
var<workgroup> sums: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  var acc = ${T}(0.0);
  let stride = nwg.x * ${WG}u;
  for (var i = wid.x * ${WG}u + lid.x; i < params.n; i += stride) {
    let g = grad[i];
    acc += g * g;
  }
  sums[lid.x] = ${vec4 ? "(acc.x + acc.y) + (acc.z + acc.w)" : "acc"};
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { sums[lid.x] += sums[lid.x + s]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partials[params.partialOffset + wid.x] = sums[0]; }
}
`;
}

export const GRAD_SUMSQ_WGSL: string = gradSumsqWgsl(false);

export const GRAD_NORM_FINALIZE_WGSL = /* wgsl */ `
struct Params { count: u32, maxNorm: f32, gradScale: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<f32, 4>;
var<workgroup> sums: array<f32, ${WG}>;

fn nonFinite(x: f32) -> bool {
  // WGSL has no isnan/isinf; an all-ones exponent is Inf or NaN.
  return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  var acc = 0.0;
  for (var i = lid.x; i < params.count; i += ${WG}u) { acc += partials[i]; }
  sums[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) { sums[lid.x] += sums[lid.x + s]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let norm = sqrt(sums[0]) * params.gradScale;
    let bad = nonFinite(norm);
    var coef = 1.0;
    if (params.maxNorm > 0.0 && !bad) { coef = min(1.0, params.maxNorm / (norm + 1e-6)); }
    result[0] = norm;
    result[1] = params.gradScale * coef;
    result[2] = select(0.0, 1.0, bad);
    result[3] = coef;
  }
}
`;

/** A gradient tensor cut into its bindable chunks, with where its partial sums go. */
export interface NormPlanEntry {
  name: string;
  grad: BufferRegion;
  chunks: Chunk[];
  /** Index of the first partial of each chunk, and how many partials each chunk writes. */
  partialOffsets: number[];
  partialCounts: number[];
}

/** Lays out the partials buffer: one slot per workgroup per chunk. Returns the total slot count. */
export function planNorm(
  entries: { name: string; grad: BufferRegion; chunks: Chunk[] }[],
): { plan: NormPlanEntry[]; partials: number } {
  let offset = 0;
  const plan = entries.map((e) => {
    const partialOffsets: number[] = [];
    const partialCounts: number[] = [];
    for (const c of e.chunks) {
      const elems = c.length % 4 === 0 ? c.length / 4 : c.length; // vec4 kernel when it fits
      const n = Math.min(MAX_NORM_WORKGROUPS, Math.ceil(elems / WG));
      partialOffsets.push(offset);
      partialCounts.push(n);
      offset += n;
    }
    return { ...e, partialOffsets, partialCounts };
  });
  return { plan, partials: offset };
}

/** Records the sum-of-squares pass over every chunk and the finalize pass into `result`. */
export function recordGradNorm(
  rec: Recording,
  plan: readonly NormPlanEntry[],
  partials: GPUBuffer,
  partialCount: number,
  result: GPUBuffer,
  maxNorm: number,
  gradScale: number,
): void {
  const gpu: Gpu = rec.gpu;
  for (const e of plan) {
    e.chunks.forEach((c, k) => {
      const vec4 = c.length % 4 === 0;
      const sumsq = getPipeline(
        gpu,
        vec4 ? "train.grad_sumsq.vec4" : "train.grad_sumsq",
        () => gradSumsqWgsl(vec4),
      );
      recordDispatch(rec, sumsq, [vec4 ? c.length / 4 : c.length, e.partialOffsets[k]], [
        chunkBinding(e.grad, c),
        { buffer: partials, offset: 0, size: partialCount * 4 },
      ], [e.partialCounts[k]]);
    });
  }
  const finalize = getPipeline(gpu, "train.grad_norm_finalize", () => GRAD_NORM_FINALIZE_WGSL);
  recordDispatch(rec, finalize, [partialCount, { f: maxNorm }, { f: gradScale }], [
    { buffer: partials, offset: 0, size: partialCount * 4 },
    { buffer: result, offset: 0, size: 16 },
  ], [1]);
}

/** The host-side view of a step's `result` buffer. */
export interface ClipResult {
  /** Global gradient norm (after gradScale, before clipping). */
  norm: number;
  /** Clip coefficient (1 = not clipped). */
  coef: number;
  /** True when the gradients held NaN or Inf and the optimizer step was skipped. */
  skipped: boolean;
}

export function parseClipResult(values: Float32Array): ClipResult {
  return { norm: values[0], coef: values[3], skipped: values[2] !== 0 };
}

/** Names of the tensors whose partial sums are non-finite (read only when a step was skipped). */
export function nonFiniteTensors(plan: readonly NormPlanEntry[], partials: Float32Array): string[] {
  const bad: string[] = [];
  for (const e of plan) {
    let finite = true;
    e.partialOffsets.forEach((off, k) => {
      for (let i = off; i < off + e.partialCounts[k]; i++) {
        if (!Number.isFinite(partials[i])) finite = false;
      }
    });
    if (!finite) bad.push(e.name);
  }
  return bad;
}
