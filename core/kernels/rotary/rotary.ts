/**
 * Rotary position embedding and the fused "split qkv → rotate q, k → append k, v to the KV cache"
 * step of an attention layer.
 *
 * Angles come from a cos/sin table computed on the CPU in f64 from f32 angles
 * `θ = f32(p · inv_freq[i])`, so results match PyTorch's f32 `cos(θ)` even for large θ, where
 * GPU `cos` is only specified on [-π, π]. Positions beyond the table give NaN (never silently
 * wrong numbers); the table covers `maxPosition` positions (default 8192).
 *
 * Modes:
 * - "2d" (ChatGLM-6B): a head of d dims is two halves of r = d/2; the first half rotates by
 *   pos[0], the second by pos[1]; "rotate half" pairs i ↔ i + r/2 within each half;
 *   `inv_freq[i] = f16round(1 / base^(2i/r))` (ChatGLM computes it in f32 then calls .half()).
 * - "1d" (Llama/Qwen style, rotate half over the whole head): r = d, one position per token,
 *   `inv_freq` not rounded unless `invFreqF16` is set.
 * - "none": no rotation.
 *
 * One design on every adapter (an invocation per element). Backward of `qkvRotary`:
 * rotary_grad.ts; the slot-cache decode form is `qkvRotarySlots` in ../attention/slots.ts.
 */

import { type Gpu, GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { f16Round } from "../../tensor/f16.ts";
import {
  assertUnchunked,
  bindingOf,
  numel,
  type Tensor,
  uploadTensor,
} from "../../tensor/tensor.ts";
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

/** `b` sequences of `s` tokens, `heads` of `d`; `maxPos`: rows of the rotary table. */
const RotaryParams = uniformLayout({ b: "u32", s: "u32", heads: "u32", d: "u32", maxPos: "u32" });
/** As {@link RotaryParams}, and k, v written at `past` in caches of `cap` positions. */
const QkvRotaryParams = uniformLayout({
  b: "u32",
  s: "u32",
  heads: "u32",
  d: "u32",
  past: "u32",
  cap: "u32",
  maxPos: "u32",
});

export type RotaryMode = "2d" | "1d" | "none";

export interface RotaryOptions {
  mode: RotaryMode;
  /** Frequency base (default 10000). */
  base?: number;
  /** Round inv_freq to f16 (default: true for "2d", false for "1d"). */
  invFreqF16?: boolean;
  /** Positions covered by the angle table (default 8192). */
  maxPosition?: number;
}

/** inv_freq for a rotated span of r dims: `1/base^(2i/r)`, i < r/2, optionally f16-rounded. */
export function rotaryInvFreq(r: number, base = 10000, f16 = false): Float32Array {
  const out = new Float32Array(r / 2);
  for (let i = 0; i < r / 2; i++) {
    const v = 1 / base ** ((2 * i) / r);
    out[i] = f16 ? f16Round(v) : v;
  }
  return out;
}

/** The [maxPosition, r/2, 2] table of (cos θ, sin θ) with θ = f32(p · inv_freq[i]); cached per device. */
export function rotaryTable(
  rec: Recording,
  r: number,
  base: number,
  f16: boolean,
  maxPosition: number,
): Tensor {
  return cachedTable(
    rec.gpu,
    `rotary-table:${r}:${base}:${f16}:${maxPosition}`,
    maxPosition,
    () => rotaryInvFreq(r, base, f16),
  );
}

/**
 * The [maxPosition, d/2, 2] table of (cos θ, sin θ) for a given `invFreq` (its scaling rule, such
 * as Llama 3's, already applied: core/models/llama/rotary.ts), cached per device by `key`.
 */
export function rotaryTableOf(
  gpu: Gpu,
  key: string,
  invFreq: Float32Array,
  maxPosition: number,
): Tensor {
  return cachedTable(gpu, `rotary-table-of:${key}:${maxPosition}`, maxPosition, () => invFreq);
}

/**
 * θ = f32(p · invFreq[i]) (the float32 product the reference computes); cos and sin in f64 of
 * that f32 angle. `invFreq` is asked for only when the table is not cached yet.
 */
function cachedTable(
  gpu: Gpu,
  id: string,
  maxPosition: number,
  invFreq: () => Float32Array,
): Tensor {
  const cached = gpu.cache.get(id) as Tensor | undefined;
  if (cached) return cached;
  const inv = invFreq();
  const half = inv.length;
  const data = new Float32Array(maxPosition * half * 2);
  for (let p = 0; p < maxPosition; p++) {
    for (let i = 0; i < half; i++) {
      const theta = Math.fround(p * inv[i]);
      data[(p * half + i) * 2] = Math.cos(theta);
      data[(p * half + i) * 2 + 1] = Math.sin(theta);
    }
  }
  const t = uploadTensor(gpu, data, [maxPosition, half, 2], "f32", { label: id });
  gpu.cache.set(id, t);
  return t;
}

function rotaryWgsl(mode: RotaryMode): string {
  // rot(v, p, jj, r): value of dim jj (within a rotated span of r dims starting at `src`).
  if (mode === "none") return "";
  return `
fn cs(p: i32, i: u32, half: u32) -> vec2<f32> {
  if (p < 0 || u32(p) >= P.maxPos) { return vec2<f32>(bitcast<f32>(0x7fc00000u)); }
  let t = (u32(p) * half + i) * 2u;
  return vec2<f32>(TAB[t], TAB[t + 1u]);
}`;
}

export interface QkvRotaryOptions extends RotaryOptions {
  heads: number;
  /** Positions already in the cache; the new k, v go to cache rows [past, past + s). */
  past: number;
  /**
   * Where q, k, v sit in the last dim of qkv: "interleaved" (ChatGLM: per head [q | k | v], each
   * d wide) or "blocked" (all q heads, then all k, then all v).
   */
  layout?: "interleaved" | "blocked";
  /** Write q here ([b, heads, s, d], f32) instead of allocating. */
  out?: Tensor;
}

/**
 * Splits `qkv` [b, s, heads·3d] into q, k, v per head, rotates q and k by `pos` (i32, [b, 2, s]
 * for "2d", [b, s] for "1d", ignored for "none"), writes q to a new [b, heads, s, d] tensor (the
 * layout {@link attention} takes) and k, v into `kCache`, `vCache` [b, heads, capacity, d] at rows
 * [past, past + s). Returns q.
 */
export function qkvRotary(
  rec: Recording,
  qkv: Tensor,
  pos: Tensor | null,
  kCache: Tensor,
  vCache: Tensor,
  options: QkvRotaryOptions,
): Tensor {
  const kernel = "qkvRotary";
  expectDtype(qkv, kernel, "qkv", ["f32"]);
  expectDtype(kCache, kernel, "kCache", ["f32"]);
  expectDtype(vCache, kernel, "vCache", ["f32"]);
  for (const [t, n] of [[qkv, "qkv"], [kCache, "kCache"], [vCache, "vCache"]] as const) {
    assertUnchunked(t, kernel, n);
  }
  if (qkv.shape.length !== 3) throw new GpuError(`${kernel}: qkv must be [b, s, 3h]`);
  const [b, s, h3] = qkv.shape;
  const heads = options.heads;
  if (h3 % (3 * heads) !== 0) {
    throw new GpuError(`${kernel}: last dim ${h3} is not 3 × heads (${heads}) × d`);
  }
  const d = h3 / (3 * heads);
  if (
    kCache.shape.length !== 4 || kCache.shape[0] !== b || kCache.shape[1] !== heads ||
    kCache.shape[3] !== d
  ) {
    throw new GpuError(
      `${kernel}: kCache [${kCache.shape.join(", ")}] is not [${b}, ${heads}, capacity, ${d}]`,
    );
  }
  expectShape(vCache, kernel, "vCache", kCache.shape);
  const capacity = kCache.shape[2];
  if (options.past < 0 || options.past + s > capacity) {
    throw new GpuError(
      `${kernel}: cache rows [${options.past}, ${
        options.past + s
      }) exceed its capacity ${capacity}`,
    );
  }
  const mode = options.mode;
  const r = mode === "2d" ? d / 2 : d;
  if (mode !== "none" && r % 2 !== 0) {
    throw new GpuError(`${kernel}: head dim ${d} cannot be rotated in mode ${mode}`);
  }
  if (mode !== "none") {
    if (!pos) throw new GpuError(`${kernel}: mode ${mode} needs positions`);
    expectDtype(pos, kernel, "pos", ["i32"]);
    expectShape(pos, kernel, "pos", mode === "2d" ? [b, 2, s] : [b, s]);
  }
  const q = outputTensor(rec, kernel, [b, heads, s, d], options.out);
  if (numel(q.shape) === 0) return q;
  const maxPos = options.maxPosition ?? 8192;
  const table = mode === "none" ? null : rotaryTable(
    rec,
    r,
    options.base ?? 10000,
    options.invFreqF16 ?? mode === "2d",
    maxPos,
  );
  const layout = options.layout ?? "interleaved";
  // Column of (which ∈ {0:q, 1:k, 2:v}, head n, dim j) in the fused last dim.
  const col = layout === "interleaved"
    ? "n * 3u * P.d + which * P.d + j"
    : "which * P.heads * P.d + n * P.d + j";
  const rotate = mode === "none" ? "" : `
    let half = ${mode === "2d" ? "P.d / 2u" : "P.d"};
    let span = j / half;              // which rotated span (2d: 0 or 1)
    let jj = j - span * half;
    let quarter = half / 2u;
    let i = select(jj - quarter, jj, jj < quarter);
    let partner = select(j - quarter, j + quarter, jj < quarter);
    let pv = QKV[rowBase + ${col.replace(/\bj\b/, "partner")}];
    ${mode === "2d" ? "let p = POS[(bi * 2u + span) * P.s + si];" : "let p = POS[bi * P.s + si];"}
    let c = cs(p, i, quarter);
    // rotate half: out[i] = x[i]·cos − x[i + r/2]·sin; out[i + r/2] = x[i + r/2]·cos + x[i]·sin
    v = select(v * c.x + pv * c.y, v * c.x - pv * c.y, jj < quarter);`;
  const pipeline = getPipeline(rec.gpu, `qkvRotary:${mode}:${layout}`, () => `
${QkvRotaryParams.wgsl}${declareInput(1, "QKV", "f32")}
${declareOutput(2, "Q")}
${declareOutput(3, "KC")}
${declareOutput(4, "VC")}
${mode === "none" ? "" : declareInput(5, "POS", "i32") + declareInput(6, "TAB", "f32")}
${rotaryWgsl(mode)}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  // One invocation per (batch, head, token, dim) and per q/k/v.
  let e = ${WG_INDEX} * ${WG}u + lid.x;
  let total = P.b * P.heads * P.s * P.d;
  if (e >= 3u * total) { return; }
  let which = e / total;
  let r0 = e - which * total;
  let j = r0 % P.d;
  let t1 = r0 / P.d;
  let si = t1 % P.s;
  let t2 = t1 / P.s;
  let n = t2 % P.heads;
  let bi = t2 / P.heads;
  let rowBase = (bi * P.s + si) * 3u * P.heads * P.d;
  var v = QKV[rowBase + ${col}];
  if (which < 2u) {${rotate}
  }
  if (which == 0u) {
    Q[((bi * P.heads + n) * P.s + si) * P.d + j] = v;
  } else {
    let ci = ((bi * P.heads + n) * P.cap + P.past + si) * P.d + j;
    if (which == 1u) { KC[ci] = v; } else { VC[ci] = v; }
  }
}
`);
  const resources: GPUBindingResource[] = [
    bindingOf(qkv),
    bindingOf(q),
    bindingOf(kCache),
    bindingOf(vCache),
  ];
  if (table && pos) resources.push(bindingOf(pos), bindingOf(table));
  recordDispatch(
    rec,
    pipeline,
    QkvRotaryParams.pack({ b, s, heads, d, past: options.past, cap: capacity, maxPos }),
    resources,
    grid(rec.gpu, Math.ceil((3 * b * heads * s * d) / WG)),
  );
  return q;
}

/**
 * Rotary embedding of `x` [b, s, heads, d] (f32) by `pos` ([b, 2, s] for "2d", [b, s] for "1d").
 * Returns a new tensor of the same shape.
 */
export function rotary(
  rec: Recording,
  x: Tensor,
  pos: Tensor,
  options: RotaryOptions,
  out?: Tensor,
): Tensor {
  const kernel = "rotary";
  expectDtype(x, kernel, "x", ["f32"]);
  assertUnchunked(x, kernel, "x");
  if (x.shape.length !== 4) throw new GpuError(`${kernel}: x must be [b, s, heads, d]`);
  const [b, s, heads, d] = x.shape;
  const mode = options.mode;
  if (mode === "none") throw new GpuError(`${kernel}: mode "none" rotates nothing`);
  const r = mode === "2d" ? d / 2 : d;
  if (r % 2 !== 0) throw new GpuError(`${kernel}: head dim ${d} cannot be rotated in mode ${mode}`);
  expectDtype(pos, kernel, "pos", ["i32"]);
  expectShape(pos, kernel, "pos", mode === "2d" ? [b, 2, s] : [b, s]);
  const y = outputTensor(rec, kernel, x.shape, out);
  if (numel(x.shape) === 0) return y;
  const maxPos = options.maxPosition ?? 8192;
  const table = rotaryTable(
    rec,
    r,
    options.base ?? 10000,
    options.invFreqF16 ?? mode === "2d",
    maxPos,
  );
  const pipeline = getPipeline(rec.gpu, `rotary:${mode}`, () => `
${RotaryParams.wgsl}${declareInput(1, "X", "f32")}
${declareInput(2, "POS", "i32")}
${declareInput(3, "TAB", "f32")}
${declareOutput(4, "Y")}
${rotaryWgsl(mode)}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;
  if (e >= P.b * P.s * P.heads * P.d) { return; }
  let j = e % P.d;
  let tok = e / (P.d * P.heads);
  let si = tok % P.s;
  let bi = tok / P.s;
  let half = ${mode === "2d" ? "P.d / 2u" : "P.d"};
  let span = j / half;
  let jj = j - span * half;
  let quarter = half / 2u;
  let i = select(jj - quarter, jj, jj < quarter);
  let partner = select(e - quarter, e + quarter, jj < quarter);
  ${mode === "2d" ? "let p = POS[(bi * 2u + span) * P.s + si];" : "let p = POS[bi * P.s + si];"}
  let c = cs(p, i, quarter);
  let v = X[e];
  let pv = X[partner];
  Y[e] = select(v * c.x + pv * c.y, v * c.x - pv * c.y, jj < quarter);
}
`);
  recordDispatch(
    rec,
    pipeline,
    RotaryParams.pack({ b, s, heads, d, maxPos }),
    [bindingOf(x), bindingOf(pos), bindingOf(table), bindingOf(y)],
    grid(rec.gpu, Math.ceil(numel(x.shape) / WG)),
  );
  return y;
}
