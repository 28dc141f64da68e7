/**
 * Next-token choice on the GPU: from logits rows [n, V] and per-row settings, writes one id per
 * row, so that a decode step needs no logits readback. It follows the host sampler
 * (serve/engine/sampling.ts `chooseToken`) step by step: repetition penalty over the row's earlier
 * ids, then greedy (temperature 0: argmax, first index on ties) or temperature, top-k, top-p and
 * a draw over the candidates in the host's order (value descending, lower id first on ties).
 *
 * The random draw is not made here: each row carries the uniform in [0, 1) that the host's
 * seeded generator would have drawn for that step (`rng.next()`), so the stream is the host's by
 * construction and the engine can draw the uniforms of the next k steps in advance (a sequence
 * draws exactly one per sampled step).
 *
 * Design: one workgroup per row ({@link samplingLanes} invocations), no sort. Top-k, top-p and
 * the draw are each "the first candidate, in the host's order, whose prefix reaches a goal" (a
 * count of k; a mass of top-p × total; a mass above u × total), found by one WGSL function
 * (`find` in the shader): the candidates' values as order-preserving u32 keys, 16 thresholds per
 * pass over the whole row (each lane sums count or mass up to each threshold, one tree reduction
 * for all 16), the key range narrowed 16-fold per pass (at most 8 passes for 32 bits, from the
 * kept set's last key up to the best), then ties on that key resolved the same way over ids
 * (one pass when there are none). At most ~50 passes over the row, whatever the distribution;
 * the serial walk this replaces made one pass per candidate rank (~1,500 on a flat 2048-id row;
 * on a 130k vocabulary it gave up after ~60). Measured on llvmpipe, one row: flat 2048 ids
 * ~2 ms (the walk: 70–160 ms), flat 130k ids 40–100 ms (the host's sort: 200–400 ms).
 *
 * Where it can differ from the host (documented, measured by tests/sampling_gpu.test.ts):
 * - the probabilities are f32 here and summed in tree order, f64 and in rank order there: a draw
 *   or a top-p cut landing within ~1e-6 (relative) of a cumulative boundary may pick the
 *   neighbouring id. Greedy is exact and top-k (a count) is exact.
 * - ties: equal values are ordered by id as on the host, except -0 and +0, which the keys treat
 *   as equal too (both map to +0's key), so they also tie by id: the same as the host.
 * - the penalty is applied in f32 (`v / penalty`, `v * penalty` with the penalty rounded to f32):
 *   exact for penalties representable in f32 (1, 1.25, 1.5, 2, …), within one ulp otherwise.
 * - the candidate floor (best − 40·T) is computed in f32: an id whose logit lies within an ulp
 *   of it may be in or out of the candidates (its weight, ~e^-40, changes no sum or draw).
 * - a row with NaN or ±Infinity anywhere gives `invalidId` (ChatGLM's chat: id 5), as the
 *   scheduler does on the host (`InvalidScoreLogitsProcessor`); a row whose every text logit is
 *   -Infinity otherwise gives id 0.
 * - the UTF-8 mask (`validUtf8`, serve/engine/sampling.ts `maskInvalidUtf8`) is applied for
 *   vocabularies of single-byte tokens only (`utf8`: each row's trailing byte tokens kept in GPU
 *   memory, moved on by `advanceDecode`); byte-level vocabularies (tokens of several bytes) sample
 *   with it on the host.
 * - on software adapters a row may hold at most {@link maxSampledIds} ids (llvmpipe stops loops
 *   past 65535 iterations per invocation; ~300k, above every vocabulary in use).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  emptyTensor,
  numel,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  expectDtype,
  outputTensor,
  SOFTWARE_LOOP_LIMIT,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/** Invocations per row at most (hardware adapters: always). */
export const LANES = 256;
/**
 * Fewest invocations per row (software adapters): one SIMD batch of llvmpipe, so a barrier
 * switches no other batch (measured on the demo model's logits, T0.95 p0.7: 280–500 µs per row
 * at 8 lanes, 450–990 at 32).
 */
const MIN_LANES = 8;

/** u32 words of one row's settings (see {@link packSamplingRows}). */
export const SETTINGS_WORDS = 8;

/**
 * `rows` rows of stride `V` in the logits; ids at or above `limit` are never chosen; `outOffset`:
 * where row 0's id goes in `out`; `negInf`: the bits of -Infinity (WGSL has no infinity literal);
 * `settingsBase`: word of row 0's settings; the `recent` ids (earlier steps of a decode group, in
 * `out`): `recentCount` rows of `recentStride` ids from `recentStart`, row r's id at `+ row`.
 * `stepped` (0/1): a decode group's step counter `s` is read from the `step` binding, and the
 * settings (`s × rows` rows further), the output (`s × outStride` further) and the recent ids
 * (`s` more rows) move on with it, so that every step of a group is the same dispatch.
 */
const SamplingParams = uniformLayout({
  rows: "u32",
  V: "u32",
  limit: "u32",
  outOffset: "u32",
  negInf: "u32",
  settingsBase: "u32",
  recentStart: "u32",
  recentCount: "u32",
  recentStride: "u32",
  invalidId: "u32",
  stepped: "u32",
  outStride: "u32",
  utf8Table: "u32",
  utf8State: "u32",
});

/** One row's settings, as the host sampler takes them plus its draw. */
export interface SamplingRow {
  /** 0 (or absent): greedy. */
  temperature?: number;
  topP?: number;
  /** 0 (or absent): no top-k. */
  topK?: number;
  repetitionPenalty?: number;
  /** The host generator's draw for this step, in [0, 1) (unused when greedy). */
  uniform?: number;
  /** Ids seen so far (prompt then answer): the repetition penalty's set. */
  history?: ArrayLike<number>;
  /** Apply the UTF-8 mask to this row (with `SampleTokensOptions.utf8`). */
  validUtf8?: boolean;
}

/**
 * Settings words [rows, 8] (f32 bits of temperature, top-p, penalty, uniform; top-k, the
 * history's start and length in `history`, the UTF-8 mask flag) and the rows' histories
 * concatenated.
 */
export function packSamplingRows(
  rows: readonly SamplingRow[],
): { settings: Uint32Array; history: Int32Array } {
  const settings = new Uint32Array(Math.max(1, rows.length) * SETTINGS_WORDS);
  const f = new Float32Array(settings.buffer);
  const total = rows.reduce((s, r) => s + (r.history?.length ?? 0), 0);
  const history = new Int32Array(Math.max(1, total));
  let at = 0;
  rows.forEach((r, i) => {
    const b = i * SETTINGS_WORDS;
    const temperature = r.temperature ?? 0;
    const penalty = r.repetitionPenalty ?? 1;
    const topP = r.topP ?? 1;
    const topK = r.topK ?? 0;
    const u = r.uniform ?? 0;
    if (!(penalty > 0)) throw new RangeError(`sampling row ${i}: repetition penalty must be > 0`);
    if (!(temperature >= 0)) throw new RangeError(`sampling row ${i}: temperature must be >= 0`);
    if (!(topP > 0 && topP <= 1)) {
      throw new RangeError(`sampling row ${i}: top-p must be in (0, 1]`);
    }
    if (!(Number.isInteger(topK) && topK >= 0)) {
      throw new RangeError(`sampling row ${i}: top-k must be an integer >= 0`);
    }
    if (!(u >= 0 && u < 1)) throw new RangeError(`sampling row ${i}: uniform must be in [0, 1)`);
    f[b] = temperature;
    f[b + 1] = topP;
    f[b + 2] = penalty;
    f[b + 3] = u;
    settings[b + 4] = Math.min(topK, 0xffffffff);
    const h = r.history ?? [];
    settings[b + 5] = at;
    settings[b + 6] = h.length;
    settings[b + 7] = r.validUtf8 ? 1 : 0;
    for (let j = 0; j < h.length; j++) history[at++] = h[j];
  });
  return { settings, history };
}

/** Passes over a row the kernel makes at most (see the shader's `find`). */
const MAX_PASSES = 52;

/** Loop iterations kept for the history (32768 ids at the fewest lanes) and the reductions. */
const LOOP_MARGIN = 4096;

/**
 * Most ids a row may hold on a software adapter: llvmpipe stops every loop of an invocation past
 * {@link SOFTWARE_LOOP_LIMIT} iterations in all, and each lane visits `V / lanes` ids per pass.
 */
export function maxSampledIds(): number {
  return Math.floor((SOFTWARE_LOOP_LIMIT - LOOP_MARGIN) / MAX_PASSES) * LANES;
}

/**
 * Invocations per row. On a software adapter a workgroup runs on one CPU thread, its lanes in
 * SIMD batches of 8 with a switch at every barrier, so more lanes only add reduction work: the
 * fewest that keep `V / lanes × passes` inside the loop limit. On hardware, {@link LANES}.
 */
export function samplingLanes(software: boolean, V: number): number {
  if (!software) return LANES;
  let lanes = MIN_LANES;
  while (lanes < LANES && Math.ceil(V / lanes) * MAX_PASSES + LOOP_MARGIN > SOFTWARE_LOOP_LIMIT) {
    lanes *= 2;
  }
  return lanes;
}

export interface SampleTokensOptions {
  /** Output i32 tensor; default a new [rows] one. */
  out?: Tensor;
  /** Index in `out` of row 0's id (rows go to outOffset + row), e.g. a ring of generated ids. */
  outOffset?: number;
  /** Word in `settings` where row 0's settings start (the settings of several steps in one). */
  settingsBase?: number;
  /**
   * Ids of earlier steps in `out` that join each row's history for the repetition penalty (a
   * decode group's ring of generated ids): `count` rows of `stride` ids from index `start`.
   */
  recent?: { start: number; count: number; stride: number };
  /**
   * A decode group's step counter (u32 [1], `s`, advanced on the GPU by `advanceDecode`): the
   * settings are read `s × rows` rows after `settingsBase`, the ids written `s × stride` after
   * `outOffset`, and `s` more rows of recent ids join the history. Every step of the group is
   * then the same dispatch (recorded once, replayed). `settings` must hold every step's rows.
   */
  step?: { counter: Tensor; steps: number; stride: number };
  /** The id a row with NaN or ±Infinity logits gets (default 5, ChatGLM's chat). */
  invalidId?: number;
  /**
   * The UTF-8 mask for rows whose settings flag it (single-byte-token vocabularies): `table` is
   * the word in `settings` where the token id of each byte value starts (256 words, -1 where the
   * vocabulary has none, {@link utf8IdTable}); `state` the index in `out` of row 0's
   * trailing-bytes word ({@link utf8State}; rows at `state + row`), advanced by `advanceDecode`.
   */
  utf8?: { table: number; state: number };
}

/**
 * A row's UTF-8 state word: its last (up to 3) trailing byte tokens' bytes, as `pendingChar`
 * (serve/engine/utf8_tokens.ts) looks at them: bits 0-1 how many, byte j back (0 = newest) in
 * bits 8(j+1) to 8(j+1)+7. The sampler derives the open character from it, `advanceDecode` pushes the
 * byte of each chosen id (a non-byte id clears it).
 */
export function utf8State(ids: ArrayLike<number>, byteOf: ArrayLike<number>): number {
  let state = 0;
  let count = 0;
  for (let i = ids.length - 1; i >= 0 && count < 3; i--) {
    const id = ids[i];
    const b = id >= 0 && id < byteOf.length ? byteOf[id] : -1;
    if (b < 0) break;
    state |= b << (8 * (count + 1));
    count++;
  }
  return (state | count) >>> 0;
}

/** The `utf8.table` words: the token id of each byte value (-1: none), as u32 bits. */
export function utf8IdTable(idOf: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(256).fill(0xffffffff);
  for (let b = 0; b < 256 && b < idOf.length; b++) out[b] = idOf[b] >>> 0;
  return out;
}

/**
 * Chooses one id per row of `logits` (f32 [rows, V]); ids at or above `textVocab` are never
 * chosen. `settings` (u32 [rows, 8]) and `history` (i32) are {@link packSamplingRows}' arrays,
 * uploaded. Returns the i32 ids (`out`).
 */
export function sampleTokens(
  rec: Recording,
  logits: Tensor,
  textVocab: number,
  settings: Tensor,
  history: Tensor,
  opts: SampleTokensOptions = {},
): Tensor {
  expectDtype(logits, "sampleTokens", "logits", ["f32"]);
  expectDtype(settings, "sampleTokens", "settings", ["u32"]);
  expectDtype(history, "sampleTokens", "history", ["i32"]);
  for (const [t, name] of [[logits, "logits"], [settings, "settings"], [history, "history"]]) {
    assertUnchunked(t as Tensor, "sampleTokens", name as string);
  }
  if (logits.shape.length !== 2) {
    throw new GpuError(`sampleTokens: logits must be [rows, V], got [${logits.shape.join(", ")}]`);
  }
  const [rows, V] = logits.shape;
  const limit = Math.min(V, textVocab);
  if (!(Number.isInteger(textVocab) && textVocab >= 1)) {
    throw new GpuError(`sampleTokens: textVocab must be an integer >= 1, got ${textVocab}`);
  }
  if (rec.gpu.isSoftware && V > maxSampledIds()) {
    throw new GpuError(
      `sampleTokens: rows of ${V} ids exceed the ${maxSampledIds()} a software adapter can ` +
        "sample (its loop limit); sample on the host",
    );
  }
  const settingsBase = opts.settingsBase ?? 0;
  const step = opts.step;
  const stepsHeld = step ? step.steps : 1;
  if (step) {
    expectDtype(step.counter, "sampleTokens", "step counter", ["u32"]);
    if (!opts.out) throw new GpuError("sampleTokens: a step counter needs `out` (the ring)");
  }
  if (numel(settings.shape) < settingsBase + stepsHeld * rows * SETTINGS_WORDS) {
    throw new GpuError(
      `sampleTokens: settings hold ${numel(settings.shape)} words, expected ${
        settingsBase + stepsHeld * rows * SETTINGS_WORDS
      } (${SETTINGS_WORDS} per row and step from word ${settingsBase})`,
    );
  }
  const recent = opts.recent ?? { start: 0, count: 0, stride: 0 };
  if (recent.count > 0 && !opts.out) {
    throw new GpuError("sampleTokens: recent ids are read from `out`; give it");
  }
  const outOffset = opts.outOffset ?? 0;
  const utf8 = opts.utf8;
  if (utf8) {
    if (!opts.out) throw new GpuError("sampleTokens: the UTF-8 state is read from `out`; give it");
    if (utf8.table + 256 > numel(settings.shape)) {
      throw new GpuError(`sampleTokens: settings hold no UTF-8 table at word ${utf8.table}`);
    }
    if (utf8.state + rows > numel(opts.out.shape)) {
      throw new GpuError(`sampleTokens: out holds no UTF-8 state at ${utf8.state}`);
    }
  }
  const y = opts.out ?? outputTensor(rec, "sampleTokens", [rows], undefined, "i32");
  if (opts.out) {
    expectDtype(opts.out, "sampleTokens", "out", ["i32"]);
    assertUnchunked(opts.out, "sampleTokens", "out");
    const lastStep = step ? (step.steps - 1) * step.stride : 0;
    const lastRecent = recent.start + (recent.count - 1) * recent.stride + rows + lastStep;
    if (recent.count > 0 && lastRecent > numel(y.shape)) {
      throw new GpuError(`sampleTokens: recent ids reach index ${lastRecent} of ${numel(y.shape)}`);
    }
    if (
      !(Number.isInteger(outOffset) && outOffset >= 0) ||
      outOffset + lastStep + rows > numel(y.shape)
    ) {
      throw new GpuError(
        `sampleTokens: out has ${numel(y.shape)} ids, rows ${outOffset}..${
          outOffset + lastStep + rows
        } do not fit`,
      );
    }
  }
  if (rows === 0) return y;
  const keys = emptyTensor(rec.gpu, [rows, limit], "u32", { rec, label: "sampleTokens keys" });
  const weights = emptyTensor(rec.gpu, [rows, limit], "f32", {
    rec,
    label: "sampleTokens weights",
  });
  const lanes = samplingLanes(rec.gpu.isSoftware, V);
  const pipeline = getPipeline(rec.gpu, `sampleTokens:${lanes}`, () => shader(lanes));
  recordDispatch(
    rec,
    pipeline,
    SamplingParams.pack({
      rows,
      V,
      limit,
      outOffset,
      negInf: 0xff800000,
      settingsBase,
      recentStart: recent.start,
      recentCount: recent.count,
      recentStride: recent.stride,
      invalidId: opts.invalidId ?? 5,
      stepped: step ? 1 : 0,
      outStride: step?.stride ?? 0,
      utf8Table: utf8 ? utf8.table : 0xffffffff,
      utf8State: utf8 ? utf8.state : 0,
    }),
    [
      bindingOf(logits),
      bindingOf(settings),
      bindingOf(history),
      bindingOf(keys),
      bindingOf(weights),
      bindingOf(y),
      // Without a counter the settings stand in (read-only, never read).
      bindingOf(step?.counter ?? settings),
    ],
    grid(rec.gpu, rows),
  );
  releaseTensor(keys, rec);
  releaseTensor(weights, rec);
  return y;
}

const NONE = "0xffffffffu";
const ALL = `vec4<u32>(${NONE})`;

/**
 * The kernel. Keys: `okey(v)` orders like the values (-0 taken as +0, equal to it on the host);
 * a row's candidates are the ids whose penalised key is at least the floor's (`rfk`); the kept
 * set (top-k, then top-p) is every candidate up to a bound element (`rbk`, `rbi`) in the host's
 * order (key descending, lower id first).
 */
const shader = (lanes: number) => `
${SamplingParams.wgsl}
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> C: array<u32>;
@group(0) @binding(3) var<storage, read> H: array<i32>;
@group(0) @binding(4) var<storage, read_write> K: array<u32>;
@group(0) @binding(5) var<storage, read_write> W: array<f32>;
@group(0) @binding(6) var<storage, read_write> Y: array<i32>;
@group(0) @binding(7) var<storage, read> ST: array<u32>;

var<workgroup> acc: array<array<vec4<f32>, 4>, ${lanes}>;
var<workgroup> rv: array<f32, ${lanes}>;
var<workgroup> ri: array<u32, ${lanes}>;
var<workgroup> rk: array<u32, ${lanes}>;

// The row: base of its keys and weights, floor key, bound, and what the metric sums.
var<private> rsb: u32;
var<private> rfk: u32;
var<private> rbk: u32;
var<private> rbi: u32;
var<private> useMass: bool;

fn okey(x: f32) -> u32 {
  let b = bitcast<u32>(select(x, 0.0, x == 0.0));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn ofkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// UTF-8 (utf8_tokens.ts): a lead byte's character length (0: none) and its second byte's range.
fn char_len(b: u32) -> u32 {
  if (b < 0x80u) { return 1u; }
  if (b >= 0xc2u && b <= 0xdfu) { return 2u; }
  if (b >= 0xe0u && b <= 0xefu) { return 3u; }
  if (b >= 0xf0u && b <= 0xf4u) { return 4u; }
  return 0u;
}

fn second_range(lead: u32) -> vec2<u32> {
  if (lead == 0xe0u) { return vec2<u32>(0xa0u, 0xbfu); }
  if (lead == 0xedu) { return vec2<u32>(0x80u, 0x9fu); }
  if (lead == 0xf0u) { return vec2<u32>(0x90u, 0xbfu); }
  if (lead == 0xf4u) { return vec2<u32>(0x80u, 0x8fu); }
  return vec2<u32>(0x80u, 0xbfu);
}

// The range the next byte must fall in to continue the character open at the end of a row's
// trailing bytes (\`utf8State\`), as \`pendingInBytes\`; lo > hi when none is open.
fn pending_range(st: u32) -> vec2<u32> {
  let none = vec2<u32>(1u, 0u);
  let cont = vec2<u32>(0x80u, 0xbfu);
  let cnt = st & 3u;
  for (var k = 1u; k <= cnt; k++) {
    let lead = (st >> (8u * k)) & 0xffu;
    if (lead >= 0x80u && lead <= 0xbfu) { continue; }
    if (char_len(lead) <= k) { return none; }
    for (var j = 1u; j < k; j++) {
      let r = select(cont, second_range(lead), j == 1u);
      let c = (st >> (8u * (k - j))) & 0xffu;
      if (c < r.x || c > r.y) { return none; }
    }
    return select(cont, second_range(lead), k == 1u);
  }
  return none;
}

// (ka, ia) is at or before (kb, ib) in the host's order.
fn upto(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia <= ib);
}

// For 16 thresholds (tk, ti) in the host's order: the count (or mass) of the kept candidates at
// or before each, summed over the row; the same in every lane.
fn metrics(t: u32, tk0: vec4<u32>, tk1: vec4<u32>, tk2: vec4<u32>, tk3: vec4<u32>,
           ti0: vec4<u32>, ti1: vec4<u32>, ti2: vec4<u32>, ti3: vec4<u32>) -> array<vec4<f32>, 4> {
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  let zero = vec4<f32>(0.0);
  for (var i = t; i < P.limit; i += ${lanes}u) {
    let k = K[rsb + i];
    if (k >= rfk && upto(k, i, rbk, rbi)) {
      let w = vec4<f32>(select(1.0, W[rsb + i], useMass));
      let kv = vec4<u32>(k);
      let iv = vec4<u32>(i);
      a0 += select(zero, w, (kv > tk0) | ((kv == tk0) & (iv <= ti0)));
      a1 += select(zero, w, (kv > tk1) | ((kv == tk1) & (iv <= ti1)));
      a2 += select(zero, w, (kv > tk2) | ((kv == tk2) & (iv <= ti2)));
      a3 += select(zero, w, (kv > tk3) | ((kv == tk3) & (iv <= ti3)));
    }
  }
  workgroupBarrier();
  acc[t][0] = a0;
  acc[t][1] = a1;
  acc[t][2] = a2;
  acc[t][3] = a3;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (t < s) {
      acc[t][0] += acc[t + s][0];
      acc[t][1] += acc[t + s][1];
      acc[t][2] += acc[t + s][2];
      acc[t][3] += acc[t + s][3];
    }
    workgroupBarrier();
  }
  return array<vec4<f32>, 4>(
    workgroupUniformLoad(&acc[0][0]),
    workgroupUniformLoad(&acc[0][1]),
    workgroupUniformLoad(&acc[0][2]),
    workgroupUniformLoad(&acc[0][3]),
  );
}

// The count (or mass) of the whole kept set.
fn kept_metric(t: u32) -> f32 {
  let k = vec4<u32>(rbk);
  let i = vec4<u32>(rbi);
  return metrics(t, k, k, k, k, i, i, i, i)[0].x;
}

// How many of the 16 metrics reach the goal (pass it, when strict).
fn reached(m: array<vec4<f32>, 4>, goal: f32, strict: bool) -> u32 {
  let g = vec4<f32>(goal);
  let one = vec4<u32>(1u);
  let z = vec4<u32>(0u);
  let n = select(z, one, select(m[0] >= g, m[0] > g, strict)) +
    select(z, one, select(m[1] >= g, m[1] > g, strict)) +
    select(z, one, select(m[2] >= g, m[2] > g, strict)) +
    select(z, one, select(m[3] >= g, m[3] > g, strict));
  return n.x + n.y + n.z + n.w;
}

// Leaves the kept candidates' count with key kk, and the lowest id among them, in every lane.
fn ties(t: u32, kk: u32) -> vec2<u32> {
  var c = 0u;
  var m = ${NONE};
  for (var i = t; i < P.limit; i += ${lanes}u) {
    if (K[rsb + i] == kk && upto(kk, i, rbk, rbi)) { c += 1u; m = min(m, i); }
  }
  workgroupBarrier();
  rk[t] = c;
  ri[t] = m;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { rk[t] += rk[t + s]; ri[t] = min(ri[t], ri[t + s]); }
    workgroupBarrier();
  }
  return vec2<u32>(workgroupUniformLoad(&rk[0]), workgroupUniformLoad(&ri[0]));
}

// The first kept candidate, in the host's order, whose prefix count (or mass) reaches goal
// (passes it, when strict); the bound itself when even the whole kept set (\`whole\`) does not.
// The one search behind top-k, top-p and the draw. First the key: the largest whose prefix
// (every id) reaches; 16 keys tried per pass between lo (reaches) and hi (above it nothing
// reaches). Then the id among that key's ties, the same way.
fn find(t: u32, goal: f32, strict: bool, whole: f32, bestK: u32) -> vec2<u32> {
  if (!select(whole >= goal, whole > goal, strict)) { return vec2<u32>(rbk, rbi); }
  let q0 = vec4<u32>(1u, 2u, 3u, 4u);
  let all = ${ALL};
  // Every kept candidate's key is at least the floor's and the bound's.
  var lo = max(rfk, rbk);
  var hi = bestK;
  for (var it = 0u; it < 12u && lo < hi; it++) {
    let step = (hi - lo) / 16u + 1u;
    let h = vec4<u32>(hi);
    let b = vec4<u32>(lo);
    let st = vec4<u32>(step);
    let m = metrics(t, min(b + st * q0, h), min(b + st * (q0 + 4u), h),
      min(b + st * (q0 + 8u), h), min(b + st * (q0 + 12u), h), all, all, all, all);
    let n = reached(m, goal, strict);
    let top = min(lo + step * (n + 1u), hi + 1u) - 1u;
    if (n > 0u) { lo = min(lo + step * n, hi); }
    hi = top;
  }
  let kk = lo;
  let tie = ties(t, kk);
  var a = tie.y;
  var z = P.limit - 1u;
  if (tie.x > 1u) {
    let k = vec4<u32>(kk);
    let q = vec4<u32>(0u, 1u, 2u, 3u);
    for (var it = 0u; it < 12u && a < z; it++) {
      let step = (z - a) / 16u + 1u;
      let h = vec4<u32>(z);
      let b = vec4<u32>(a);
      let st = vec4<u32>(step);
      let m = metrics(t, k, k, k, k, min(b + st * q, h), min(b + st * (q + 4u), h),
        min(b + st * (q + 8u), h), min(b + st * (q + 12u), h));
      // Ids below the answer do not reach: the first 16 - reached thresholds.
      let below = 16u - reached(m, goal, strict);
      let top = select(z, min(a + step * below, z), below < 16u);
      if (below > 0u) { a = min(a + step * (below - 1u), z) + 1u; }
      z = top;
    }
  }
  return vec2<u32>(kk, a);
}

@compute @workgroup_size(${lanes})
fn main(${WG_BUILTINS}) {
  let row = ${WG_INDEX};
  let t = lid.x;
  if (row >= P.rows) { return; }
  let s = select(0u, ST[0], P.stepped != 0u);
  let cb = P.settingsBase + (s * P.rows + row) * ${SETTINGS_WORDS}u;
  let temp = bitcast<f32>(C[cb]);
  let topP = bitcast<f32>(C[cb + 1u]);
  let pen = bitcast<f32>(C[cb + 2u]);
  let u = bitcast<f32>(C[cb + 3u]);
  let topK = C[cb + 4u];
  let hs = C[cb + 5u];
  let hl = C[cb + 6u];
  let lb = row * P.V;
  let out = P.outOffset + s * P.outStride + row;
  rsb = row * P.limit;

  // One pass: the row's keys, any NaN or ±Infinity in the whole row (non-text ids too, as the
  // host checks), and the argmax (first index on ties; none above -Infinity gives id 0 as the
  // host's argmax). Keys are written from the logits each time, so an id seen twice is
  // penalised once.
  let none = okey(bitcast<f32>(P.negInf));
  var bad = 0u;
  var bk = none;
  var bi = ${NONE};
  for (var i = t; i < P.V; i += ${lanes}u) {
    let v = L[lb + i];
    if ((bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u) { bad = 1u; }
    if (i < P.limit) {
      let k = okey(v);
      K[rsb + i] = k;
      if (k > bk) { bk = k; bi = i; }
    }
  }
  workgroupBarrier();
  rv[t] = f32(bad);
  workgroupBarrier();
  for (var w = ${lanes / 2}u; w > 0u; w >>= 1u) {
    if (t < w) { rv[t] = max(rv[t], rv[t + w]); }
    workgroupBarrier();
  }
  if (workgroupUniformLoad(&rv[0]) > 0.0) {
    if (t == 0u) { Y[out] = select(0, i32(P.invalidId), P.invalidId < P.limit); }
    return;
  }
  // The UTF-8 mode, the same in every lane: 0 none, 1 mask the bytes that cannot start a
  // character, 2 keep only the byte ids in [lo, hi] (bits 8-15, 16-23) that continue the open one.
  workgroupBarrier();
  if (t == 0u) {
    var mode = 0u;
    if (P.utf8Table != ${NONE} && C[cb + 7u] != 0u) {
      let pr = pending_range(bitcast<u32>(Y[P.utf8State + row]));
      mode = 1u;
      if (pr.x <= pr.y) {
        // As the host: leave the row alone when none of the continuing bytes is a text id.
        mode = 0u;
        for (var b = pr.x; b <= pr.y; b++) {
          let id = C[P.utf8Table + b];
          if (id < P.limit) { mode = 2u | (pr.x << 8u) | (pr.y << 16u); }
        }
      }
    }
    rk[0] = mode;
  }
  let utf8 = workgroupUniformLoad(&rk[0]);
  if (pen != 1.0) {
    storageBarrier();
    for (var j = t; j < hl; j += ${lanes}u) {
      let id = H[hs + j];
      if (id >= 0 && u32(id) < P.limit) {
        let v = L[lb + u32(id)];
        K[rsb + u32(id)] = okey(select(v / pen, v * pen, v < 0.0));
      }
    }
    for (var j = t; j < P.recentCount + s; j += ${lanes}u) {
      let id = Y[P.recentStart + j * P.recentStride + row];
      if (id >= 0 && u32(id) < P.limit) {
        let v = L[lb + u32(id)];
        K[rsb + u32(id)] = okey(select(v / pen, v * pen, v < 0.0));
      }
    }
  }
  if ((utf8 & 3u) == 1u) {
    for (var b = t; b < 256u; b += ${lanes}u) {
      let id = C[P.utf8Table + b];
      if (char_len(b) == 0u && id < P.limit) { K[rsb + id] = none; }
    }
  } else if ((utf8 & 3u) == 2u) {
    // Every id masked but the continuing bytes' (keys kept, penalised as the host's order gives).
    let lo = (utf8 >> 8u) & 0xffu;
    let hi = (utf8 >> 16u) & 0xffu;
    // A continuation range holds at most 64 bytes: ${Math.ceil(64 / lanes)} per lane.
    var kept: array<u32, ${Math.ceil(64 / lanes)}>;
    for (var m = 0u; m < ${Math.ceil(64 / lanes)}u; m++) { kept[m] = none; }
    storageBarrier();
    for (var m = 0u; m < ${Math.ceil(64 / lanes)}u; m++) {
      let b = lo + t + m * ${lanes}u;
      if (b <= hi) {
        let id = C[P.utf8Table + b];
        if (id < P.limit) { kept[m] = K[rsb + id]; }
      }
    }
    storageBarrier();
    workgroupBarrier();
    for (var i = t; i < P.limit; i += ${lanes}u) { K[rsb + i] = none; }
    storageBarrier();
    workgroupBarrier();
    for (var m = 0u; m < ${Math.ceil(64 / lanes)}u; m++) {
      let b = lo + t + m * ${lanes}u;
      if (b <= hi) {
        let id = C[P.utf8Table + b];
        if (id < P.limit) { K[rsb + id] = kept[m]; }
      }
    }
  }
  if (pen != 1.0 || utf8 != 0u) {
    storageBarrier();
    workgroupBarrier();
    // The argmax again, of the penalised (and masked) keys.
    bk = none;
    bi = ${NONE};
    for (var i = t; i < P.limit; i += ${lanes}u) { let k = K[rsb + i]; if (k > bk) { bk = k; bi = i; } }
  }
  workgroupBarrier();
  rk[t] = bk;
  ri[t] = bi;
  workgroupBarrier();
  for (var w = ${lanes / 2}u; w > 0u; w >>= 1u) {
    if (t < w && (rk[t + w] > rk[t] || (rk[t + w] == rk[t] && ri[t + w] < ri[t]))) {
      rk[t] = rk[t + w];
      ri[t] = ri[t + w];
    }
    workgroupBarrier();
  }
  let bestK = workgroupUniformLoad(&rk[0]);
  let bestI = workgroupUniformLoad(&ri[0]);
  if (!(temp > 0.0) || bestI == ${NONE}) {
    if (t == 0u) { Y[out] = select(i32(bestI), 0, bestI == ${NONE}); }
    return;
  }

  // Candidates: within e^-40 of the best (as the host), with their weights.
  let bestV = ofkey(bestK);
  rfk = okey(bestV - 40.0 * temp);
  let mx = bestV / temp;
  for (var i = t; i < P.limit; i += ${lanes}u) {
    let k = K[rsb + i];
    if (k >= rfk) { W[rsb + i] = exp(ofkey(k) / temp - mx); }
  }
  storageBarrier();
  // The bound at the end of the order: everything kept.
  rbk = 0u;
  rbi = ${NONE};
  if (topK > 0u) {
    useMass = false;
    let count = kept_metric(t);
    if (f32(topK) < count) {
      // top-k: the kept set ends at the k-th candidate.
      let e = find(t, f32(topK), false, count, bestK);
      rbk = e.x;
      rbi = e.y;
    }
  }
  useMass = true;
  var total = kept_metric(t);
  if (topP < 1.0) {
    // The smallest prefix whose share reaches top-p (at least one id); its mass is the new total.
    let e = find(t, topP * total, false, total, bestK);
    rbk = e.x;
    rbi = e.y;
    total = kept_metric(t);
  }
  // The draw: the first candidate where the running mass passes u * total (else the last kept).
  var e = find(t, u * total, true, total, bestK);
  if (e.y == ${NONE}) {
    // Past every candidate (rounding) with nothing cut: the last candidate, by count.
    useMass = false;
    let count = kept_metric(t);
    e = find(t, count, false, count, bestK);
  }
  if (t == 0u) { Y[out] = i32(e.y); }
}
`;
