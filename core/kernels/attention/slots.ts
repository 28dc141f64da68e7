/**
 * Decode-step kernels over a slot KV cache, for continuous batching: every batch row is one
 * sequence living in its own cache slot with its own length, so sequences that started at
 * different times decode together in one step.
 *
 * `slotInfo` i32 [b, 2] = (slot, length) per batch row: the row's keys and values are in cache
 * row `slot`, positions [0, length) are filled, and this step's token goes to position `length`.
 *
 * - {@link qkvRotarySlots}: splits the fused qkv of one new token per row, rotates q and k, writes
 *   k, v into the row's slot at `length`, returns q [b, heads, 1, d].
 * - {@link attentionSlots}: attention of that query over keys [0, length] of its slot. A decode
 *   token comes after its prompt's `<sop>`, so it sees every earlier position of an unpadded slot
 *   (README §5): no mask is needed. The arithmetic follows `attention.ts` step for step
 *   (q / (sqrt(d)·c), ×c, f32 softmax), so a sequence decodes to the same numbers in a slot as in
 *   a lockstep cache.
 *
 * One design on every adapter; inference only (training uses `attention` without a cache).
 */

import { type Gpu, GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  outputTensor,
  rowPlan,
  WG_BUILTINS,
  WG_INDEX,
  workgroupReduce,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";
import { rotaryTable } from "../rotary/rotary.ts";

const MAX_D = 256;

/** `b` slots, `heads` of `d`, caches of `cap` positions; `maxPos`: rows of the rotary table. */
const QkvSlotsParams = uniformLayout({
  b: "u32",
  heads: "u32",
  d: "u32",
  cap: "u32",
  maxPos: "u32",
});
/** As above; `c`: the layer scale. */
const AttentionSlotsParams = uniformLayout({
  b: "u32",
  heads: "u32",
  d: "u32",
  cap: "u32",
  c: "f32",
  kvHeads: "u32",
  /** Rows of the rotary table (the fused kernel). */
  maxPos: "u32",
});
/** `n` copies of at most `maxLen` positions between caches of `srcCap` and `dstCap`. */
const CopySlotsParams = uniformLayout({
  n: "u32",
  heads: "u32",
  d: "u32",
  maxLen: "u32",
  srcCap: "u32",
  dstCap: "u32",
});

function checkSlotCache(
  kernel: string,
  kCache: Tensor,
  vCache: Tensor,
  heads: number,
  d: number,
): void {
  expectDtype(kCache, kernel, "kCache", ["f32"]);
  expectDtype(vCache, kernel, "vCache", ["f32"]);
  assertUnchunked(kCache, kernel, "kCache");
  assertUnchunked(vCache, kernel, "vCache");
  if (kCache.shape.length !== 4 || kCache.shape[1] !== heads || kCache.shape[3] !== d) {
    throw new GpuError(
      `${kernel}: kCache [${kCache.shape.join(", ")}] is not [slots, ${heads}, capacity, ${d}]`,
    );
  }
  expectShape(vCache, kernel, "vCache", kCache.shape);
}

/**
 * The operands of a slot decode step's qkv rotation: `qkv` [b, 1, 3·heads·d] f32 (d a multiple of
 * 4), `pos` i32 [b, 2, 1], caches [slots, heads, capacity, d], `slotInfo` i32 [b, 2].
 */
function checkQkvSlots(
  kernel: string,
  qkv: Tensor,
  pos: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotInfo: Tensor,
  heads: number,
): { b: number; heads: number; d: number } {
  expectDtype(qkv, kernel, "qkv", ["f32"]);
  assertUnchunked(qkv, kernel, "qkv");
  if (qkv.shape.length !== 3 || qkv.shape[1] !== 1) {
    throw new GpuError(`${kernel}: qkv must be [b, 1, 3h], got [${qkv.shape.join(", ")}]`);
  }
  const [b, , h3] = qkv.shape;
  if (h3 % (3 * heads) !== 0) {
    throw new GpuError(`${kernel}: last dim ${h3} is not 3 × heads (${heads}) × d`);
  }
  const d = h3 / (3 * heads);
  if (d % 4 !== 0) throw new GpuError(`${kernel}: head dim ${d} cannot be rotated in 2-D mode`);
  checkSlotCache(kernel, kCache, vCache, heads, d);
  expectDtype(pos, kernel, "pos", ["i32"]);
  expectShape(pos, kernel, "pos", [b, 2, 1]);
  expectDtype(slotInfo, kernel, "slotInfo", ["i32"]);
  expectShape(slotInfo, kernel, "slotInfo", [b, 2]);
  return { b, heads, d };
}

export interface QkvRotarySlotsOptions {
  heads: number;
  /** "interleaved" (ChatGLM: per head [q | k | v]) or "blocked" (all q, all k, all v). */
  layout?: "interleaved" | "blocked";
  /** Rotary base (default 10000); ChatGLM's 2-D rotary with f16-rounded inv_freq. */
  base?: number;
  /** Positions covered by the angle table (default 8192). */
  maxPosition?: number;
}

/**
 * `qkv` [b, 1, heads·3d] f32, `pos` i32 [b, 2, 1] (ChatGLM 2-D positions), `slotInfo` i32 [b, 2].
 * Writes k, v to `kCache`/`vCache` [slots, heads, capacity, d] and returns q [b, heads, 1, d].
 * The caller guarantees `length < capacity` and distinct slots per row (checked on the host side
 * by the model, which knows the values).
 */
export function qkvRotarySlots(
  rec: Recording,
  qkv: Tensor,
  pos: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotInfo: Tensor,
  options: QkvRotarySlotsOptions,
): Tensor {
  const kernel = "qkvRotarySlots";
  const { b, heads, d } = checkQkvSlots(kernel, qkv, pos, kCache, vCache, slotInfo, options.heads);
  const q = outputTensor(rec, kernel, [b, heads, 1, d]);
  if (b === 0) return q;
  const maxPos = options.maxPosition ?? 8192;
  const r = d / 2;
  const table = rotaryTable(rec, r, options.base ?? 10000, true, maxPos);
  const layout = options.layout ?? "interleaved";
  const pipeline = getPipeline(rec.gpu, `qkvRotarySlots:${layout}`, () => `
${QkvSlotsParams.wgsl}${rotatedWgsl(layout)}
${declareOutput(5, "Q")}
${declareOutput(6, "KC")}
${declareOutput(7, "VC")}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  // One invocation per (row, head, dim) and per q/k/v.
  let e = ${WG_INDEX} * 64u + lid.x;
  let total = P.b * P.heads * P.d;
  if (e >= 3u * total) { return; }
  let which = e / total;
  let r0 = e - which * total;
  let j = r0 % P.d;
  let t1 = r0 / P.d;
  let n = t1 % P.heads;
  let bi = t1 / P.heads;
  let v = rotated(which, bi, n, j);
  if (which == 0u) {
    Q[(bi * P.heads + n) * P.d + j] = v;
  } else {
    let slot = u32(SI[bi * 2u]);
    let at = u32(SI[bi * 2u + 1u]);
    let ci = ((slot * P.heads + n) * P.cap + at) * P.d + j;
    if (which == 1u) { KC[ci] = v; } else { VC[ci] = v; }
  }
}
`);
  recordDispatch(
    rec,
    pipeline,
    QkvSlotsParams.pack({ b, heads, d, cap: kCache.shape[2], maxPos }),
    [
      bindingOf(qkv),
      bindingOf(pos),
      bindingOf(slotInfo),
      bindingOf(table),
      bindingOf(q),
      bindingOf(kCache),
      bindingOf(vCache),
    ],
    grid(rec.gpu, Math.ceil((3 * b * heads * d) / 64)),
  );
  return q;
}

/**
 * WGSL bindings 1-4 (`QKV`, `POS`, `SI`, `TAB`) and `rotated(which, bi, n, j)`: element j of
 * head n of row bi's q (which 0), k (1) or v (2) from the fused qkv `QKV`, q and k rotated by the
 * 2-D positions `POS` (the first half of the head by pos[0], the second by pos[1]; rotate half)
 * with the angle table `TAB`. Needs P.d,
 * P.heads, P.maxPos.
 */
function rotatedWgsl(layout: "interleaved" | "blocked"): string {
  const col = (j: string) =>
    layout === "interleaved"
      ? `n * 3u * P.d + which * P.d + ${j}`
      : `which * P.heads * P.d + n * P.d + ${j}`;
  return `${declareInput(1, "QKV", "f32")}
${declareInput(2, "POS", "i32")}
${declareInput(3, "SI", "i32")}
${declareInput(4, "TAB", "f32")}
fn cs(p: i32, i: u32, half: u32) -> vec2<f32> {
  if (p < 0 || u32(p) >= P.maxPos) { return vec2<f32>(bitcast<f32>(0x7fc00000u)); }
  let t = (u32(p) * half + i) * 2u;
  return vec2<f32>(TAB[t], TAB[t + 1u]);
}
fn rotated(which: u32, bi: u32, n: u32, j: u32) -> f32 {
  let rowBase = bi * 3u * P.heads * P.d;
  let v = QKV[rowBase + ${col("j")}];
  if (which >= 2u) { return v; }
  let half = P.d / 2u;
  let span = j / half;
  let jj = j - span * half;
  let quarter = half / 2u;
  let i = select(jj - quarter, jj, jj < quarter);
  let partner = select(j - quarter, j + quarter, jj < quarter);
  let pv = QKV[rowBase + ${col("partner")}];
  let c = cs(POS[bi * 2u + span], i, quarter);
  return select(v * c.x + pv * c.y, v * c.x - pv * c.y, jj < quarter);
}`;
}

export interface AttentionSlotsOptions {
  /** Largest `length + 1` of any row (sizes the score buffer; at most 4096). */
  maxKeys: number;
  /** ChatGLM's c = layer + 1 (default 1). */
  layerScale?: number;
}

/**
 * Lanes of a (row, head) workgroup of the slot attention, by the row design (common.ts
 * `rowPlan`; tests force either): 64 on hardware GPUs; 8 on software adapters, one SIMD batch of
 * llvmpipe's 8 lanes, whose barriers then switch no other batch (at 64 lanes, eight coroutines
 * switch at each of a reduction's barriers: measured ~150 µs per demo-model layer, most of it
 * barriers over 17 keys; ~90 µs at 8).
 */
function lanesOf(gpu: Gpu): number {
  return rowPlan(gpu, 64, 1).tag === "wg" ? 64 : 8;
}

/**
 * `q` [b, heads, 1, d] f32 over the slot cache `kCache`, `vCache` [slots, kvHeads, capacity, d] with
 * `slotInfo` i32 [b, 2]: row bi attends to keys [0, length] of its slot. Returns ctx
 * [b, 1, heads·d].
 */
export function attentionSlots(
  rec: Recording,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotInfo: Tensor,
  options: AttentionSlotsOptions,
): Tensor {
  const kernel = "attentionSlots";
  expectDtype(q, kernel, "q", ["f32"]);
  assertUnchunked(q, kernel, "q");
  if (q.shape.length !== 4 || q.shape[2] !== 1) {
    throw new GpuError(`${kernel}: q must be [b, heads, 1, d], got [${q.shape.join(", ")}]`);
  }
  const [b, heads, , d] = q.shape;
  if (d > MAX_D) throw new GpuError(`${kernel}: head dim ${d} exceeds ${MAX_D}`);
  // Grouped-query attention: the cache holds kvHeads (dividing heads); query head n reads kv
  // head n / (heads / kvHeads).
  const kvHeads = kCache.shape[1];
  if (kCache.shape.length !== 4 || heads % kvHeads !== 0) {
    throw new GpuError(`${kernel}: kCache [${kCache.shape}] heads do not divide ${heads}`);
  }
  checkSlotCache(kernel, kCache, vCache, kvHeads, d);
  expectDtype(slotInfo, kernel, "slotInfo", ["i32"]);
  expectShape(slotInfo, kernel, "slotInfo", [b, 2]);
  const cap = kCache.shape[2];
  const maxS = scoreRows(kernel, options.maxKeys, cap);
  const out = outputTensor(rec, kernel, [b, 1, heads * d]);
  if (b === 0) return out;
  const wg = lanesOf(rec.gpu);
  const vec4 = d % 4 === 0;
  const kv = vec4 ? "vec4<f32>" : "f32";
  const pipeline = getPipeline(rec.gpu, `attentionSlots:${maxS}:${wg}${vec4 ? ":v4" : ""}`, () => `
${AttentionSlotsParams.wgsl}${declareInput(1, "Q", "f32")}
@group(0) @binding(2) var<storage, read> K: array<${kv}>;
@group(0) @binding(3) var<storage, read> V: array<${kv}>;
${declareInput(4, "SI", "i32")}
${declareOutput(5, "O")}
${attendWgsl(wg, maxS, (k) => `Q[row * P.d + ${k}]`, "", vec4)}`);
  recordDispatch(
    rec,
    pipeline,
    AttentionSlotsParams.pack({ b, heads, d, cap, c: options.layerScale ?? 1, kvHeads, maxPos: 0 }),
    [bindingOf(q), bindingOf(kCache), bindingOf(vCache), bindingOf(slotInfo), bindingOf(out)],
    grid(rec.gpu, b * heads),
  );
  return out;
}

/** Score buffer rows for `maxKeys` keys (a pipeline variant each), within a cache of `cap`. */
function scoreRows(kernel: string, maxKeys: number, cap: number): number {
  if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > cap) {
    throw new GpuError(`${kernel}: maxKeys ${maxKeys} must be in [1, ${cap}]`);
  }
  const maxS = [256, 1024, 4096].find((m) => maxKeys <= m);
  if (!maxS) throw new GpuError(`${kernel}: ${maxKeys} keys exceed the 4096 supported`);
  return maxS;
}

/**
 * The attention of one (row, head) per workgroup over its slot's keys [0, length] in `K`, `V`
 * (`SI`: slot, length): `query(k)` is element k of the head's query (WGSL); `store` runs first,
 * with `bi`, `n`, `slot` and `at` (the new token's position) defined (the fused kernel writes
 * the new key and value there).
 *
 * With `vec4` (d a multiple of 4) the caller declares `K` and `V` as `array<vec4<f32>>` and the
 * query, keys and values are read four elements per load: on llvmpipe each storage or workgroup
 * load at a per-lane address is a loop over the lanes whatever its width, so this does a quarter
 * of the loads. The arithmetic is the scalar form's, in the same order (each dot product element
 * by element, each output element a sum over the keys in order), so both give the same bits.
 */
function attendWgsl(
  wg: number,
  maxS: number,
  query: (k: string) => string,
  store: string,
  vec4: boolean,
): string {
  const head = `
var<workgroup> sc: array<f32, ${maxS}>;
${
    vec4
      ? `var<workgroup> qv: array<vec4<f32>, ${MAX_D / 4}>;`
      : `var<workgroup> qv: array<f32, ${MAX_D}>;`
  }
${workgroupReduce(wg)}
@compute @workgroup_size(${wg})
fn main(${WG_BUILTINS}) {
  let row = ${WG_INDEX};                 // bi * heads + n
  if (row >= P.b * P.heads) { return; }
  let t = lid.x;
  let bi = row / P.heads;
  let n = row % P.heads;
  let slot = u32(SI[bi * 2u]);
  let at = u32(SI[bi * 2u + 1u]);
  let S = min(at + 1u, min(P.cap, ${maxS}u));
  let inv = 1.0 / (sqrt(f32(P.d)) * P.c);
  ${store}`;
  const softmax = `m = wg_reduce(m, t, true);
  var sum = 0.0;
  for (var j = t; j < S; j += ${wg}u) { let e = exp(sc[j] - m); sc[j] = e; sum += e; }
  let total = wg_reduce(sum, t, false);
  let norm = 1.0 / total;
  let outBase = row * P.d;`;
  const kvBase = "let kvBase = (slot * P.kvHeads + n / (P.heads / P.kvHeads)) * P.cap * P.d;";
  if (!vec4) {
    return `${head}
  for (var k = t; k < P.d; k += ${wg}u) { qv[k] = ${query("k")} * inv; }
  workgroupBarrier();
  ${kvBase}
  var m = -3.4028234e38;
  for (var j = t; j < S; j += ${wg}u) {
    var dot = 0.0;
    let kb = kvBase + j * P.d;
    for (var k = 0u; k < P.d; k++) { dot += qv[k] * K[kb + k]; }
    let sv = dot * P.c;
    sc[j] = sv;
    m = max(m, sv);
  }
  ${softmax}
  for (var k = t; k < P.d; k += ${wg}u) {
    var acc = 0.0;
    for (var j = 0u; j < S; j++) { acc += sc[j] * V[kvBase + j * P.d + k]; }
    O[outBase + k] = acc * norm;
  }
}
`;
  }
  const q4 = (c: number) => `${query(`4u * k4 + ${c}u`)} * inv`;
  return `${head}
  let d4 = P.d / 4u;
  for (var k4 = t; k4 < d4; k4 += ${wg}u) { qv[k4] = vec4<f32>(${
    [0, 1, 2, 3].map(q4).join(", ")
  }); }
  workgroupBarrier();
  ${kvBase}
  let kv4 = kvBase / 4u;
  var m = -3.4028234e38;
  for (var j = t; j < S; j += ${wg}u) {
    var dot = 0.0;
    let kb = kv4 + j * d4;
    for (var k4 = 0u; k4 < d4; k4++) {
      let q = qv[k4];
      let kk = K[kb + k4];
      dot += q.x * kk.x; dot += q.y * kk.y; dot += q.z * kk.z; dot += q.w * kk.w;
    }
    let sv = dot * P.c;
    sc[j] = sv;
    m = max(m, sv);
  }
  ${softmax}
  for (var k4 = t; k4 < d4; k4 += ${wg}u) {
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < S; j++) { acc += sc[j] * V[kv4 + j * d4 + k4]; }
    let o = outBase + 4u * k4;
    O[o] = acc.x * norm; O[o + 1u] = acc.y * norm; O[o + 2u] = acc.z * norm; O[o + 3u] = acc.w * norm;
  }
}
`;
}

/**
 * {@link qkvRotarySlots} then {@link attentionSlots} in one dispatch (ChatGLM's decode, heads ==
 * kv heads): each (row, head) workgroup rotates its query into workgroup memory, writes its
 * rotated key and its value into the slot at `length`, and attends over keys [0, length], the
 * same arithmetic as the two kernels. On llvmpipe each dispatch has a fixed cost, so a decode step
 * of a small model saves it once per layer (and the q buffer).
 */
export function qkvAttentionSlots(
  rec: Recording,
  qkv: Tensor,
  pos: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotInfo: Tensor,
  options: QkvRotarySlotsOptions & AttentionSlotsOptions,
): Tensor {
  const kernel = "qkvAttentionSlots";
  const { b, heads, d } = checkQkvSlots(kernel, qkv, pos, kCache, vCache, slotInfo, options.heads);
  if (d > MAX_D) throw new GpuError(`${kernel}: head dim ${d} exceeds ${MAX_D}`);
  const cap = kCache.shape[2];
  const maxS = scoreRows(kernel, options.maxKeys, cap);
  const out = outputTensor(rec, kernel, [b, 1, heads * d]);
  if (b === 0) return out;
  const maxPos = options.maxPosition ?? 8192;
  const table = rotaryTable(rec, d / 2, options.base ?? 10000, true, maxPos);
  const layout = options.layout ?? "interleaved";
  const wg = lanesOf(rec.gpu);
  const vec4 = d % 4 === 0;
  const rot = (which: number) => (k: string) => `rotated(${which}u, bi, n, ${k})`;
  const rot4 = (which: number) =>
    `vec4<f32>(${[0, 1, 2, 3].map((c) => rot(which)(`4u * k4 + ${c}u`)).join(", ")})`;
  const store = vec4
    ? `let ci = ((slot * P.heads + n) * P.cap + at) * P.d / 4u;
  for (var k4 = t; k4 < P.d / 4u; k4 += ${wg}u) {
    K[ci + k4] = ${rot4(1)};
    V[ci + k4] = ${rot4(2)};
  }
  storageBarrier();`
    : `let ci = ((slot * P.heads + n) * P.cap + at) * P.d;
  for (var k = t; k < P.d; k += ${wg}u) {
    K[ci + k] = rotated(1u, bi, n, k);
    V[ci + k] = rotated(2u, bi, n, k);
  }
  storageBarrier();`;
  const key = `qkvAttentionSlots:${layout}:${maxS}:${wg}${vec4 ? ":v4" : ""}`;
  const pipeline = getPipeline(rec.gpu, key, () => `
${AttentionSlotsParams.wgsl}${rotatedWgsl(layout)}
${declareOutput(5, "K", vec4 ? "vec4<f32>" : "f32")}
${declareOutput(6, "V", vec4 ? "vec4<f32>" : "f32")}
${declareOutput(7, "O")}
${attendWgsl(wg, maxS, rot(0), store, vec4)}`);
  recordDispatch(
    rec,
    pipeline,
    AttentionSlotsParams.pack({
      b,
      heads,
      d,
      cap,
      c: options.layerScale ?? 1,
      kvHeads: heads,
      maxPos,
    }),
    [
      bindingOf(qkv),
      bindingOf(pos),
      bindingOf(slotInfo),
      bindingOf(table),
      bindingOf(kCache),
      bindingOf(vCache),
      bindingOf(out),
    ],
    grid(rec.gpu, b * heads),
  );
  return out;
}

/**
 * Moves rows of a lockstep cache into slots: for each source row i with `info` i32 [n, 3] =
 * (slot, pads, length), positions [pads, pads + length) of `src` [n, heads, srcCap, d] go to
 * positions [0, length) of row `slot` of `dst` [slots, heads, dstCap, d]. One dispatch instead of
 * a buffer copy per row and head (a batched prefill lands in its slots this way).
 */
export function copyRowsToSlots(
  rec: Recording,
  src: Tensor,
  dst: Tensor,
  info: Tensor,
  maxLength: number,
): void {
  const kernel = "copyRowsToSlots";
  expectDtype(src, kernel, "src", ["f32"]);
  expectDtype(dst, kernel, "dst", ["f32"]);
  assertUnchunked(src, kernel, "src");
  assertUnchunked(dst, kernel, "dst");
  if (src.shape.length !== 4 || dst.shape.length !== 4) {
    throw new GpuError(`${kernel}: src and dst must be [rows, heads, capacity, d]`);
  }
  const [n, heads, srcCap, d] = src.shape;
  if (dst.shape[1] !== heads || dst.shape[3] !== d) {
    throw new GpuError(
      `${kernel}: dst [${dst.shape.join(", ")}] does not match src [${src.shape.join(", ")}]`,
    );
  }
  expectDtype(info, kernel, "info", ["i32"]);
  expectShape(info, kernel, "info", [n, 3]);
  if (!Number.isInteger(maxLength) || maxLength < 0 || maxLength > Math.min(srcCap, dst.shape[2])) {
    throw new GpuError(`${kernel}: maxLength ${maxLength} exceeds a capacity`);
  }
  const total = n * heads * maxLength * d;
  if (total === 0) return;
  const pipeline = getPipeline(rec.gpu, kernel, () => `
${CopySlotsParams.wgsl}${declareInput(1, "S", "f32")}
${declareInput(2, "INFO", "i32")}
${declareOutput(3, "D")}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.n * P.heads * P.maxLen * P.d) { return; }
  let j = e % P.d;
  let t1 = e / P.d;
  let p = t1 % P.maxLen;
  let t2 = t1 / P.maxLen;
  let h = t2 % P.heads;
  let i = t2 / P.heads;
  let len = u32(INFO[i * 3u + 2u]);
  if (p >= len) { return; }
  let slot = u32(INFO[i * 3u]);
  let pads = u32(INFO[i * 3u + 1u]);
  D[((slot * P.heads + h) * P.dstCap + p) * P.d + j] = S[((i * P.heads + h) * P.srcCap + pads + p) * P.d + j];
}
`);
  recordDispatch(
    rec,
    pipeline,
    CopySlotsParams.pack({ n, heads, d, maxLen: maxLength, srcCap, dstCap: dst.shape[2] }),
    [bindingOf(src), bindingOf(info), bindingOf(dst)],
    grid(rec.gpu, Math.ceil(total / 64)),
  );
}
