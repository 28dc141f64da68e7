/**
 * Attention over a KV cache, with ChatGLM's query-key layer scaling:
 *
 * ```
 * scores[i, j] = (q_i / (sqrt(d)·c)) · k_j
 * scores[i, j] = maskValue (−10000)  where masked   — before the next line
 * scores       = scores · c                         — f32 from here on
 * p = softmax_j(scores); ctx_i = Σ_j p[i, j] · v_j
 * ```
 *
 * c = `layerScale` (ChatGLM: layer index + 1; 1 gives plain scaled dot-product attention). A
 * fully masked row gets uniform weights over all keys (finite mask value), never NaN.
 *
 * Masks:
 * - explicit: `mask` [b, s, S] i32/u32, non-zero = may NOT attend;
 * - compact: `maskInfo` i32 [b, 2] = (left pads, context length) per batch row. Query at cache
 *   position i (= past + row) may attend key j iff i ≥ pads, j ≥ pads and (j − pads < context or
 *   j ≤ i): bidirectional over the context, causal after it, pads never seen; pad rows are fully
 *   masked. This is ChatGLM's left-padded rule (fixture README §4) and what decode uses;
 *   context 0 = plain causal;
 * - neither: every key is visible.
 *
 * Two designs (`AttentionOptions.kernel`): on hardware GPUs one workgroup per (batch, head,
 * query), the row's scores in workgroup memory (so S is at most 4096 keys); on software adapters
 * (llvmpipe) one invocation per block of query rows, without barriers (rows.ts), any S.
 *
 * Beside it: the backward of both designs (attention_grad.ts, rows_grad.ts), and the decode
 * kernels over a slot KV cache (slots.ts: one design on every adapter, inference only).
 */

import { GpuError } from "../../gpu/device.ts";
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
  workgroupReduce,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";
import { type AttentionKernel, chooseDesign, recordAttentionRows } from "./rows.ts";

const WG = 64;
const MAX_D = 256;

/**
 * `b` sequences of `s` queries, `heads` of `d`; `S` valid keys in caches of `cap` positions;
 * `c`: ChatGLM's layer scale; `maskValue`: the score of a masked key.
 */
const AttentionParams = uniformLayout({
  b: "u32",
  heads: "u32",
  s: "u32",
  d: "u32",
  S: "u32",
  cap: "u32",
  c: "f32",
  maskValue: "f32",
  kvHeads: "u32",
});

export interface AttentionOptions {
  /** Number of valid keys in the cache (S); the queries are cache positions [S − s, S). */
  keys: number;
  /** ChatGLM's c = layer + 1 (default 1). */
  layerScale?: number;
  /** Value given to masked scores before the ×c (default −10000). */
  maskValue?: number;
  /** Explicit mask [b, s, S], i32/u32, non-zero = masked. */
  mask?: Tensor;
  /** Compact mask i32 [b, 2] = (left pads, context length). */
  maskInfo?: Tensor;
  /** Output [b, s, heads·d] f32. */
  out?: Tensor;
  /**
   * Kernel design (default "auto": "rows" on software adapters, "workgroup" on GPUs; see
   * rows.ts and its environment override).
   */
  kernel?: AttentionKernel;
}

/**
 * `q` [b, heads, s, d]; `kCache`, `vCache` [b, kvHeads, capacity, d] (f32) holding `keys` rows;
 * kvHeads divides heads and query head n reads kv head n / (heads / kvHeads) (grouped-query
 * attention, contiguous groups; kvHeads = heads is ordinary multi-head attention).
 * Returns ctx [b, s, heads·d] (head-major, what ChatGLM's dense layer expects).
 */
export function attention(
  rec: Recording,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  options: AttentionOptions,
): Tensor {
  const kernel = "attention";
  expectDtype(q, kernel, "q", ["f32"]);
  expectDtype(kCache, kernel, "kCache", ["f32"]);
  expectDtype(vCache, kernel, "vCache", ["f32"]);
  for (const [t, n] of [[q, "q"], [kCache, "kCache"], [vCache, "vCache"]] as const) {
    assertUnchunked(t, kernel, n);
  }
  if (q.shape.length !== 4) throw new GpuError(`${kernel}: q must be [b, heads, s, d]`);
  const [b, heads, s, d] = q.shape;
  if (
    kCache.shape.length !== 4 || kCache.shape[0] !== b || heads % kCache.shape[1] !== 0 ||
    kCache.shape[3] !== d
  ) {
    throw new GpuError(
      `${kernel}: kCache [${kCache.shape.join(", ")}] is not [${b}, kvHeads, capacity, ${d}] ` +
        `with kvHeads dividing ${heads}`,
    );
  }
  expectShape(vCache, kernel, "vCache", kCache.shape);
  const S = options.keys;
  const cap = kCache.shape[2];
  if (!Number.isInteger(S) || S < s || S > cap) {
    throw new GpuError(`${kernel}: keys ${S} must be in [${s}, ${cap}] (queries ${s})`);
  }
  if (d > MAX_D) throw new GpuError(`${kernel}: head dim ${d} exceeds ${MAX_D}`);
  if (options.mask && options.maskInfo) {
    throw new GpuError(`${kernel}: give either mask or maskInfo, not both`);
  }
  let variant: "none" | "explicit" | "compact" = "none";
  if (options.mask) {
    variant = "explicit";
    expectDtype(options.mask, kernel, "mask", ["i32", "u32"]);
    expectShape(options.mask, kernel, "mask", [b, s, S]);
    assertUnchunked(options.mask, kernel, "mask");
  } else if (options.maskInfo) {
    variant = "compact";
    expectDtype(options.maskInfo, kernel, "maskInfo", ["i32"]);
    expectShape(options.maskInfo, kernel, "maskInfo", [b, 2]);
  }
  const out = outputTensor(rec, kernel, [b, s, heads * d], options.out);
  if (numel(out.shape) === 0) return out;
  if (S === 0) throw new GpuError(`${kernel}: no keys`);
  const resources: GPUBindingResource[] = [
    bindingOf(q),
    bindingOf(kCache),
    bindingOf(vCache),
    bindingOf(out),
  ];
  if (options.mask) resources.push(bindingOf(options.mask));
  if (options.maskInfo) resources.push(bindingOf(options.maskInfo));
  if (chooseDesign(rec.gpu, kernel, options.kernel, d) === "rows") {
    recordAttentionRows(rec, q, kCache, S, variant, options, resources);
    return out;
  }
  const maxS = [256, 1024, 4096].find((m) => S <= m);
  if (!maxS) throw new GpuError(`${kernel}: ${S} keys exceed the 4096 supported`);
  const maskCode = variant === "explicit"
    ? `M[(bi * P.s + qi) * P.S + j] != 0${options.mask!.dtype === "i32" ? "" : "u"}`
    : variant === "compact"
    ? `(i < pad || j < pad || (j - pad >= ctx && j > i))`
    : "false";
  const pipeline = getPipeline(rec.gpu, `attention:${variant}:${maxS}`, () => `
${AttentionParams.wgsl}${declareInput(1, "Q", "f32")}
${declareInput(2, "K", "f32")}
${declareInput(3, "V", "f32")}
${declareOutput(4, "O")}
${
    variant === "explicit"
      ? declareInput(5, "M", options.mask!.dtype)
      : variant === "compact"
      ? declareInput(5, "MI", "i32")
      : ""
  }
var<workgroup> sc: array<f32, ${maxS}>;
var<workgroup> qv: array<f32, ${MAX_D}>;
${workgroupReduce(WG)}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let row = ${WG_INDEX};                 // (bi, n, qi) flattened
  if (row >= P.b * P.heads * P.s) { return; }
  let t = lid.x;
  let qi = row % P.s;
  let bn = row / P.s;                    // bi * heads + n
  let bi = bn / P.heads;
  let n = bn % P.heads;
  let past = P.S - P.s;
  let i = past + qi;                     // cache position of this query
  ${
    variant === "compact"
      ? "let pad = u32(max(MI[bi * 2u], 0)); let ctx = u32(max(MI[bi * 2u + 1u], 0));"
      : ""
  }
  let inv = 1.0 / (sqrt(f32(P.d)) * P.c);
  for (var k = t; k < P.d; k += ${WG}u) { qv[k] = Q[row * P.d + k] * inv; }
  workgroupBarrier();
  // Grouped-query attention: query head n reads kv head n / (heads / kvHeads).
  let kvBase = (bi * P.kvHeads + n / (P.heads / P.kvHeads)) * P.cap * P.d;
  var m = -3.4028234e38;
  for (var j = t; j < P.S; j += ${WG}u) {
    var dot = 0.0;
    let kb = kvBase + j * P.d;
    for (var k = 0u; k < P.d; k++) { dot += qv[k] * K[kb + k]; }
    if (${maskCode}) { dot = P.maskValue; }
    let sv = dot * P.c;
    sc[j] = sv;
    m = max(m, sv);
  }
  m = wg_reduce(m, t, true);
  var sum = 0.0;
  for (var j = t; j < P.S; j += ${WG}u) { let e = exp(sc[j] - m); sc[j] = e; sum += e; }
  let total = wg_reduce(sum, t, false);
  let norm = 1.0 / total;
  let outBase = ((bi * P.s + qi) * P.heads + n) * P.d;
  for (var k = t; k < P.d; k += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < P.S; j++) { acc += sc[j] * V[kvBase + j * P.d + k]; }
    O[outBase + k] = acc * norm;
  }
}
`);
  recordDispatch(
    rec,
    pipeline,
    AttentionParams.pack({
      b,
      heads,
      s,
      d,
      S,
      cap,
      c: options.layerScale ?? 1,
      maskValue: options.maskValue ?? -10000,
      kvHeads: kCache.shape[1],
    }),
    resources,
    grid(rec.gpu, b * heads * s),
  );
  return out;
}
