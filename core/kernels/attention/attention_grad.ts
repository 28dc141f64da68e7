/**
 * Backward of `attention` (attention.ts) with ChatGLM's layer scaling and prefix
 * mask, for training (no KV cache: keys = queries, S = s).
 *
 * The probabilities are recomputed from q and k (nothing of the forward is kept but its inputs):
 * with p = softmax(scores), dp_ij = dO_i · v_j, D_i = Σ_j p_ij dp_ij and dS_ij = p_ij (dp_ij − D_i):
 * visible scores equal q_i · k_j / sqrt(d) whatever c is (the ÷c and ×c cancel), so
 * dq_i = Σ_j dS_ij k_j / sqrt(d), dk_j = Σ_i dS_ij q_i / sqrt(d), dv_j = Σ_i p_ij dO_i. Masked
 * scores are constants (−10000·c): they pass no gradient to q or k.
 *
 * Hardware design ("workgroup"): one workgroup per query row computes p and dS (kept in a
 * [b, heads, s, S] scratch pair) and dq; then one invocation per (key, dim) sums dk and dv over the
 * queries. Software adapters take the barrier-free design of rows_grad.ts ("rows").
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  emptyTensor,
  maxChunkBytes,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  WG_BUILTINS,
  WG_INDEX,
  workgroupReduce,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";
import { type AttentionKernel, chooseDesign } from "./rows.ts";
import { recordAttentionRowsBackward } from "./rows_grad.ts";

const WG = 64;
const MAX_D = 256;

/**
 * `b` batch rows from `b0` on (a group whose scores fit a binding), `s` queries and `S` keys,
 * `heads` of `d`; `c`: the layer scale; `maskValue`: the score of a masked key.
 */
const GradParams = uniformLayout({
  b: "u32",
  heads: "u32",
  s: "u32",
  d: "u32",
  S: "u32",
  c: "f32",
  maskValue: "f32",
  b0: "u32",
});

export interface AttentionBackwardOptions {
  /** ChatGLM's c = layer + 1 (default 1). */
  layerScale?: number;
  /** Value of masked scores before the ×c (default −10000). */
  maskValue?: number;
  /** Explicit mask [b, s, s], non-zero = masked. */
  mask?: Tensor;
  /** Compact mask i32 [b, 2] = (left pads, context length), as in the forward. */
  maskInfo?: Tensor;
  /**
   * Largest scratch buffer (default: one binding); batch rows go in groups that fit ("workgroup"
   * design; "rows" needs no [s, S] scratch).
   */
  scratchBytes?: number;
  /** Kernel design, as `AttentionOptions.kernel` of the forward (default "auto"). */
  kernel?: AttentionKernel;
}

export interface AttentionGrads {
  /** [b, heads, s, d] each. */
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

/**
 * `q`, `k`, `v` [b, heads, s, d] (k, v as the forward's cache with capacity s), `dOut`
 * [b, s, heads·d] (the gradient of the forward's ctx). Returns dq, dk, dv.
 */
export function attentionBackward(
  rec: Recording,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dOut: Tensor,
  options: AttentionBackwardOptions = {},
): AttentionGrads {
  const kernel = "attentionBackward";
  for (const [t, n] of [[q, "q"], [k, "k"], [v, "v"], [dOut, "dOut"]] as const) {
    expectDtype(t, kernel, n, ["f32"]);
    assertUnchunked(t, kernel, n);
  }
  if (q.shape.length !== 4) throw new GpuError(`${kernel}: q must be [b, heads, s, d]`);
  const [b, heads, s, d] = q.shape;
  expectShape(k, kernel, "k", q.shape);
  expectShape(v, kernel, "v", q.shape);
  expectShape(dOut, kernel, "dOut", [b, s, heads * d]);
  if (d > MAX_D) throw new GpuError(`${kernel}: head dim ${d} exceeds ${MAX_D}`);
  const S = s;
  let variant: "none" | "explicit" | "compact" = "none";
  if (options.mask && options.maskInfo) {
    throw new GpuError(`${kernel}: give either mask or maskInfo, not both`);
  }
  if (options.mask) {
    variant = "explicit";
    expectDtype(options.mask, kernel, "mask", ["i32", "u32"]);
    expectShape(options.mask, kernel, "mask", [b, s, S]);
  } else if (options.maskInfo) {
    variant = "compact";
    expectDtype(options.maskInfo, kernel, "maskInfo", ["i32"]);
    expectShape(options.maskInfo, kernel, "maskInfo", [b, 2]);
  }
  const gpu = rec.gpu;
  const dq = emptyTensor(gpu, q.shape, "f32", { rec, label: "dq" });
  const dk = emptyTensor(gpu, q.shape, "f32", { rec, label: "dk" });
  const dv = emptyTensor(gpu, q.shape, "f32", { rec, label: "dv" });
  if (b * heads * s * d === 0) return { dq, dk, dv };
  if (chooseDesign(gpu, kernel, options.kernel, d) === "rows") {
    recordAttentionRowsBackward(rec, q, k, v, dOut, { dq, dk, dv }, variant, options);
    return { dq, dk, dv };
  }
  const maxS = [256, 1024, 2048].find((m) => S <= m);
  if (!maxS) throw new GpuError(`${kernel}: ${S} keys exceed the 2048 supported in training`);
  // The [rows, heads, s, S] scratch pair must fit one binding: batch rows go in groups.
  const perRow = heads * s * S * 4;
  const limit = Math.min(options.scratchBytes ?? Infinity, maxChunkBytes(gpu));
  const group = Math.max(1, Math.min(b, Math.floor(limit / Math.max(perRow, 1))));
  if (perRow > maxChunkBytes(gpu)) {
    throw new GpuError(`${kernel}: one batch row's scores (${perRow} bytes) exceed a binding`);
  }
  const probs = emptyTensor(gpu, [group, heads, s, S], "f32", { rec, label: "attn p" });
  const dScores = emptyTensor(gpu, [group, heads, s, S], "f32", { rec, label: "attn dS" });
  const maskCode = variant === "explicit"
    ? `M[(bi * P.s + qi) * P.S + j] != 0${options.mask!.dtype === "i32" ? "" : "u"}`
    : variant === "compact"
    ? `(i < pad || j < pad || (j - pad >= ctx && j > i))`
    : "false";
  const maskDecl = variant === "explicit"
    ? declareInput(8, "M", options.mask!.dtype)
    : variant === "compact"
    ? declareInput(8, "MI", "i32")
    : "";
  const rowPipeline = getPipeline(gpu, `grad:attention:rows:${variant}:${maxS}`, () => `
${GradParams.wgsl}${declareInput(1, "Q", "f32")}
${declareInput(2, "K", "f32")}
${declareInput(3, "V", "f32")}
${declareInput(4, "DO", "f32")}
${declareOutput(5, "PB")}
${declareOutput(6, "DSB")}
${declareOutput(7, "DQ")}
${maskDecl}
var<workgroup> sc: array<f32, ${maxS}>;
var<workgroup> dp: array<f32, ${maxS}>;
var<workgroup> qv: array<f32, ${MAX_D}>;
var<workgroup> dov: array<f32, ${MAX_D}>;
${workgroupReduce(WG)}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  // P.b batch rows from P.b0 on; the p / dS scratch holds only this group.
  let local = ${WG_INDEX};
  if (local >= P.b * P.heads * P.s) { return; }
  let row = P.b0 * P.heads * P.s + local;
  let t = lid.x;
  let qi = row % P.s;
  let bn = row / P.s;
  let bi = bn / P.heads;
  let n = bn % P.heads;
  let i = qi;
  ${
    variant === "compact"
      ? "let pad = u32(max(MI[bi * 2u], 0)); let ctx = u32(max(MI[bi * 2u + 1u], 0));"
      : ""
  }
  let inv = 1.0 / (sqrt(f32(P.d)) * P.c);
  let doBase = ((bi * P.s + qi) * P.heads + n) * P.d;
  for (var k = t; k < P.d; k += ${WG}u) {
    qv[k] = Q[row * P.d + k] * inv;
    dov[k] = DO[doBase + k];
  }
  workgroupBarrier();
  let kvBase = bn * P.S * P.d;
  var m = -3.4028234e38;
  for (var j = t; j < P.S; j += ${WG}u) {
    var dot = 0.0;
    let kb = kvBase + j * P.d;
    for (var k = 0u; k < P.d; k++) { dot += qv[k] * K[kb + k]; }
    if (${maskCode}) { dot = P.maskValue; }
    let sv = dot * P.c;
    sc[j] = sv;
    m = max(m, sv);
    var g = 0.0;
    for (var k = 0u; k < P.d; k++) { g += dov[k] * V[kb + k]; }
    dp[j] = g;
  }
  m = wg_reduce(m, t, true);
  var sum = 0.0;
  for (var j = t; j < P.S; j += ${WG}u) { let e = exp(sc[j] - m); sc[j] = e; sum += e; }
  let norm = 1.0 / wg_reduce(sum, t, false);
  var dsum = 0.0;
  for (var j = t; j < P.S; j += ${WG}u) { let p = sc[j] * norm; sc[j] = p; dsum += p * dp[j]; }
  let D = wg_reduce(dsum, t, false);
  let rs = 1.0 / sqrt(f32(P.d));
  for (var j = t; j < P.S; j += ${WG}u) {
    var ds = sc[j] * (dp[j] - D) * rs;
    if (${maskCode}) { ds = 0.0; }
    dp[j] = ds;
    PB[local * P.S + j] = sc[j];
    DSB[local * P.S + j] = ds;
  }
  workgroupBarrier();
  for (var k = t; k < P.d; k += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < P.S; j++) { acc += dp[j] * K[kvBase + j * P.d + k]; }
    DQ[row * P.d + k] = acc;
  }
}
`);
  const c = options.layerScale ?? 1;
  const keyPipeline = getPipeline(gpu, "grad:attention:keys", () => KEY_KERNEL);
  for (let b0 = 0; b0 < b; b0 += group) {
    const bg = Math.min(group, b - b0);
    const params = GradParams.pack({
      b: bg,
      heads,
      s,
      d,
      S,
      c,
      maskValue: options.maskValue ?? -10000,
      b0,
    });
    const rowRes: GPUBindingResource[] = [
      bindingOf(q),
      bindingOf(k),
      bindingOf(v),
      bindingOf(dOut),
      bindingOf(probs),
      bindingOf(dScores),
      bindingOf(dq),
    ];
    if (options.mask) rowRes.push(bindingOf(options.mask));
    if (options.maskInfo) rowRes.push(bindingOf(options.maskInfo));
    recordDispatch(rec, rowPipeline, params, rowRes, grid(gpu, bg * heads * s));
    recordDispatch(
      rec,
      keyPipeline,
      params,
      [
        bindingOf(q),
        bindingOf(dOut),
        bindingOf(probs),
        bindingOf(dScores),
        bindingOf(dk),
        bindingOf(dv),
      ],
      grid(gpu, Math.ceil((bg * heads * S * d) / WG)),
    );
  }
  releaseTensor(probs, rec);
  releaseTensor(dScores, rec);
  return { dq, dk, dv };
}

/** dk, dv: one invocation per (key, dim) of a group of batch rows, summing over the queries. */
const KEY_KERNEL = `
${GradParams.wgsl}${declareInput(1, "Q", "f32")}
${declareInput(2, "DO", "f32")}
${declareInput(3, "PB", "f32")}
${declareInput(4, "DSB", "f32")}
${declareOutput(5, "DK")}
${declareOutput(6, "DV")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let el = ${WG_INDEX} * ${WG}u + lid.x;
  if (el >= P.b * P.heads * P.S * P.d) { return; }
  let e = P.b0 * P.heads * P.S * P.d + el;
  let k = e % P.d;
  let j = (e / P.d) % P.S;
  let bnl = el / (P.d * P.S);
  let bn = P.b0 * P.heads + bnl;
  let bi = bn / P.heads;
  let n = bn % P.heads;
  var gk = 0.0;
  var gv = 0.0;
  for (var qi = 0u; qi < P.s; qi++) {
    let r = bn * P.s + qi;
    let rl = bnl * P.s + qi;
    gk += DSB[rl * P.S + j] * Q[r * P.d + k];
    gv += PB[rl * P.S + j] * DO[((bi * P.s + qi) * P.heads + n) * P.d + k];
  }
  DK[e] = gk;
  DV[e] = gv;
}
`;
