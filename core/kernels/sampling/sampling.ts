/**
 * Next-token choice on the GPU: from logits rows [n, V] and per-row settings, writes one id per
 * row, so that a decode step needs no logits readback. It follows the host sampler
 * (serve/engine/sampling.ts `chooseToken`) step by step: repetition penalty over the row's earlier
 * ids, then greedy (temperature 0: argmax, first index on ties) or temperature, top-k, top-p and
 * a draw, walking the candidates in the host's order (value descending, lower id first on ties).
 *
 * The random draw is not made here: each row carries the uniform in [0, 1) that the host's
 * seeded generator would have drawn for that step (`rng.next()`), so the stream is the host's by
 * construction and the engine can draw the uniforms of the next k steps in advance (a sequence
 * draws exactly one per sampled step).
 *
 * Where it can differ from the host (documented, measured by tests/sampling_gpu.test.ts):
 * - the probabilities are f32 here, f64 there: a draw or a top-p cut landing within ~1e-6
 *   (relative) of a cumulative boundary may pick the neighbouring id. Greedy is exact.
 * - the penalty is applied in f32 (`v / penalty`, `v * penalty` with the penalty rounded to f32):
 *   exact for penalties representable in f32 (1, 1.25, 1.5, 2, …), within one ulp otherwise.
 * - a row with NaN or ±Infinity anywhere gives `invalidId` (ChatGLM's chat: id 5), as the
 *   scheduler does on the host (`InvalidScoreLogitsProcessor`); a row whose every text logit is
 *   -Infinity otherwise gives id 0.
 * - no UTF-8 mask (`validUtf8`): sequences that need it are sampled on the host.
 * - on software adapters the walk through the candidates stops after
 *   `samplingStepLimit(textVocab)` ranks (llvmpipe stops loops past 65535 iterations per
 *   invocation): ~2500 for a 2048-id vocabulary (every rank), ~240 for 32000, ~60 for 130k. A
 *   row that needs more writes -1 and must be sampled on the host (the engine does).
 *   Peaked distributions, top-k and top-p stay far below it.
 *
 * Design: a workgroup of {@link LANES} invocations per row; passes over the row strided by lane
 * with tree reductions in workgroup memory; each rank of the walk is one pass finding the
 * candidate that follows the previous one in the host's order (no sort, no extra memory beyond
 * one scratch copy of the penalised row).
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

/** Invocations per row. */
export const LANES = 128;
const LOG_LANES = 7;

/** u32 words of one row's settings (see {@link packSamplingRows}). */
export const SETTINGS_WORDS = 8;

/**
 * `rows` rows of stride `V` in the logits; ids at or above `limit` are never chosen; `outOffset`:
 * where row 0's id goes in `out`; `maxSteps`: ranks the walk may visit; `negInf`: the bits of
 * -Infinity (WGSL has no infinity literal); `settingsBase`: word of row 0's settings; the
 * `recent` ids (earlier steps of a decode group, in `out`): `recentCount` rows of `recentStride`
 * ids from `recentStart`, row r's id at `+ row`.
 */
const SamplingParams = uniformLayout({
  rows: "u32",
  V: "u32",
  limit: "u32",
  outOffset: "u32",
  maxSteps: "u32",
  negInf: "u32",
  settingsBase: "u32",
  recentStart: "u32",
  recentCount: "u32",
  recentStride: "u32",
  invalidId: "u32",
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
}

/**
 * Settings words [rows, 8] (f32 bits of temperature, top-p, penalty, uniform; top-k, the
 * history's start and length in `history`) and the rows' histories concatenated.
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
    for (let j = 0; j < h.length; j++) history[at++] = h[j];
  });
  return { settings, history };
}

/** Ranks the walk may visit for rows of `limit` ids within llvmpipe's loop budget. */
export function samplingStepLimit(limit: number): number {
  const pass = Math.ceil(limit / LANES) + LOG_LANES + 2;
  // Fixed passes: copy, argmax, count, sum (+ the history, bounded by the caller's context).
  const budget = SOFTWARE_LOOP_LIMIT - 4 * pass - 2048;
  return Math.max(1, Math.floor(budget / pass));
}

export interface SampleTokensOptions {
  /** Output i32 tensor; default a new [rows] one. */
  out?: Tensor;
  /** Index in `out` of row 0's id (rows go to outOffset + row), e.g. a ring of generated ids. */
  outOffset?: number;
  /** Ranks the walk may visit (default and maximum {@link samplingStepLimit}). */
  maxSteps?: number;
  /** Word in `settings` where row 0's settings start (the settings of several steps in one). */
  settingsBase?: number;
  /**
   * Ids of earlier steps in `out` that join each row's history for the repetition penalty (a
   * decode group's ring of generated ids): `count` rows of `stride` ids from index `start`.
   */
  recent?: { start: number; count: number; stride: number };
  /** The id a row with NaN or ±Infinity logits gets (default 5, ChatGLM's chat). */
  invalidId?: number;
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
  const settingsBase = opts.settingsBase ?? 0;
  if (numel(settings.shape) < settingsBase + rows * SETTINGS_WORDS) {
    throw new GpuError(
      `sampleTokens: settings hold ${numel(settings.shape)} words, expected ${
        settingsBase + rows * SETTINGS_WORDS
      } (${SETTINGS_WORDS} per row from word ${settingsBase})`,
    );
  }
  const recent = opts.recent ?? { start: 0, count: 0, stride: 0 };
  if (recent.count > 0 && !opts.out) {
    throw new GpuError("sampleTokens: recent ids are read from `out`; give it");
  }
  const outOffset = opts.outOffset ?? 0;
  const y = opts.out ?? outputTensor(rec, "sampleTokens", [rows], undefined, "i32");
  if (opts.out) {
    expectDtype(opts.out, "sampleTokens", "out", ["i32"]);
    assertUnchunked(opts.out, "sampleTokens", "out");
    const lastRecent = recent.start + (recent.count - 1) * recent.stride + rows;
    if (recent.count > 0 && lastRecent > numel(y.shape)) {
      throw new GpuError(`sampleTokens: recent ids reach index ${lastRecent} of ${numel(y.shape)}`);
    }
    if (!(Number.isInteger(outOffset) && outOffset >= 0) || outOffset + rows > numel(y.shape)) {
      throw new GpuError(
        `sampleTokens: out has ${numel(y.shape)} ids, rows ${outOffset}..${
          outOffset + rows
        } do not fit`,
      );
    }
  }
  if (rows === 0) return y;
  // Only llvmpipe stops long loops; a hardware GPU may walk every candidate.
  const cap = rec.gpu.isSoftware ? samplingStepLimit(limit) : limit;
  const maxSteps = Math.min(opts.maxSteps ?? cap, cap);
  const scratch = emptyTensor(rec.gpu, [rows, limit], "f32", {
    rec,
    label: "sampleTokens scratch",
  });
  const pipeline = getPipeline(rec.gpu, "sampleTokens", () => SHADER);
  recordDispatch(
    rec,
    pipeline,
    SamplingParams.pack({
      rows,
      V,
      limit,
      outOffset,
      maxSteps,
      negInf: 0xff800000,
      settingsBase,
      recentStart: recent.start,
      recentCount: recent.count,
      recentStride: recent.stride,
      invalidId: opts.invalidId ?? 5,
    }),
    [bindingOf(logits), bindingOf(settings), bindingOf(history), bindingOf(scratch), bindingOf(y)],
    grid(rec.gpu, rows),
  );
  releaseTensor(scratch, rec);
  return y;
}

const NONE = "0xffffffffu";

const SHADER = `
${SamplingParams.wgsl}
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> C: array<u32>;
@group(0) @binding(3) var<storage, read> H: array<i32>;
@group(0) @binding(4) var<storage, read_write> S: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y: array<i32>;

var<workgroup> rv: array<f32, ${LANES}>;
var<workgroup> ri: array<u32, ${LANES}>;

// (va, ia) comes before (vb, ib) in the host's order: value descending, lower id first.
fn before(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
  return va > vb || (va == vb && ia < ib);
}

// Leaves the first of the lanes' (v, i) in the host's order in rv[0], ri[0].
fn first_of(t: u32, v: f32, i: u32) {
  workgroupBarrier();
  rv[t] = v; ri[t] = i;
  workgroupBarrier();
  for (var s = ${LANES / 2}u; s > 0u; s >>= 1u) {
    if (t < s && before(rv[t + s], ri[t + s], rv[t], ri[t])) { rv[t] = rv[t + s]; ri[t] = ri[t + s]; }
    workgroupBarrier();
  }
}

// Leaves the lanes' sum in rv[0].
fn sum_of(t: u32, v: f32) {
  workgroupBarrier();
  rv[t] = v;
  workgroupBarrier();
  for (var s = ${LANES / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { rv[t] = rv[t] + rv[t + s]; }
    workgroupBarrier();
  }
}

@compute @workgroup_size(${LANES})
fn main(${WG_BUILTINS}) {
  let row = ${WG_INDEX};
  let t = lid.x;
  if (row >= P.rows) { return; }
  let ninf = bitcast<f32>(P.negInf);
  let cb = P.settingsBase + row * ${SETTINGS_WORDS}u;
  let temp = bitcast<f32>(C[cb]);
  let topP = bitcast<f32>(C[cb + 1u]);
  let pen = bitcast<f32>(C[cb + 2u]);
  let u = bitcast<f32>(C[cb + 3u]);
  let topK = C[cb + 4u];
  let hs = C[cb + 5u];
  let hl = C[cb + 6u];
  let lb = row * P.V;
  let sb = row * P.limit;

  // The penalised row: written from the logits each time, so an id seen twice is penalised once.
  for (var i = t; i < P.limit; i += ${LANES}u) { S[sb + i] = L[lb + i]; }
  // Any NaN or ±Infinity in the whole row (non-text ids too, as the host checks).
  var bad = 0.0;
  for (var i = t; i < P.V; i += ${LANES}u) {
    if ((bitcast<u32>(L[lb + i]) & 0x7f800000u) == 0x7f800000u) { bad = 1.0; }
  }
  sum_of(t, bad);
  if (workgroupUniformLoad(&rv[0]) > 0.0) {
    if (t == 0u) { Y[P.outOffset + row] = select(0, i32(P.invalidId), P.invalidId < P.limit); }
    return;
  }
  storageBarrier();
  if (pen != 1.0) {
    for (var j = t; j < hl; j += ${LANES}u) {
      let id = H[hs + j];
      if (id >= 0 && u32(id) < P.limit) {
        let v = L[lb + u32(id)];
        S[sb + u32(id)] = select(v / pen, v * pen, v < 0.0);
      }
    }
    for (var j = t; j < P.recentCount; j += ${LANES}u) {
      let id = Y[P.recentStart + j * P.recentStride + row];
      if (id >= 0 && u32(id) < P.limit) {
        let v = L[lb + u32(id)];
        S[sb + u32(id)] = select(v / pen, v * pen, v < 0.0);
      }
    }
  }
  storageBarrier();

  // argmax, first index on ties; none above -Infinity gives id 0 as the host's argmax.
  var bv = ninf;
  var bi = ${NONE};
  for (var i = t; i < P.limit; i += ${LANES}u) { let v = S[sb + i]; if (v > bv) { bv = v; bi = i; } }
  first_of(t, bv, bi);
  let bestV = workgroupUniformLoad(&rv[0]);
  let bestI = workgroupUniformLoad(&ri[0]);
  if (!(temp > 0.0) || bestI == ${NONE}) {
    if (t == 0u) { Y[P.outOffset + row] = select(i32(bestI), 0, bestI == ${NONE}); }
    return;
  }

  // Candidates: within e^-40 of the best (as the host); their count and total mass.
  let fl = bestV - 40.0 * temp;
  let mx = bestV / temp;
  var cnt = 0.0;
  var mass = 0.0;
  for (var i = t; i < P.limit; i += ${LANES}u) {
    let v = S[sb + i];
    if (v >= fl) { cnt += 1.0; mass += exp(v / temp - mx); }
  }
  sum_of(t, cnt);
  let count = u32(workgroupUniformLoad(&rv[0]));
  sum_of(t, mass);
  var total = workgroupUniformLoad(&rv[0]);
  var keep = count;
  if (topK > 0u && topK < count) { keep = topK; }

  // Walks the candidates in the host's order: rank r is the first after rank r - 1.
  var steps = 0u;
  var over = false;
  if (keep < count) {
    // top-k: the mass of the kept ranks, summed in order as the host does.
    total = 0.0;
    var pv = bitcast<f32>(0x7f800000u);
    var pi = 0u;
    for (var r = 0u; r < keep; r++) {
      if (steps >= P.maxSteps) { over = true; break; }
      steps++;
      var cv = ninf;
      var ci = ${NONE};
      for (var i = t; i < P.limit; i += ${LANES}u) {
        let v = S[sb + i];
        if (v >= fl && before(pv, pi, v, i) && before(v, i, cv, ci)) { cv = v; ci = i; }
      }
      first_of(t, cv, ci);
      pv = workgroupUniformLoad(&rv[0]);
      pi = workgroupUniformLoad(&ri[0]);
      total += exp(pv / temp - mx);
    }
  }
  if (topP < 1.0 && !over) {
    // The smallest prefix whose share reaches top-p (at least one id); its mass is the new total.
    var cum = 0.0;
    var cutMass = 0.0;
    var cut = keep;
    var pv = bitcast<f32>(0x7f800000u);
    var pi = 0u;
    for (var r = 0u; r < keep; r++) {
      if (steps >= P.maxSteps) { over = true; break; }
      steps++;
      var cv = ninf;
      var ci = ${NONE};
      for (var i = t; i < P.limit; i += ${LANES}u) {
        let v = S[sb + i];
        if (v >= fl && before(pv, pi, v, i) && before(v, i, cv, ci)) { cv = v; ci = i; }
      }
      first_of(t, cv, ci);
      pv = workgroupUniformLoad(&rv[0]);
      pi = workgroupUniformLoad(&ri[0]);
      let p = exp(pv / temp - mx);
      cum += p / total;
      cutMass += p;
      if (cum >= topP) { cut = r + 1u; break; }
    }
    keep = cut;
    total = cutMass;
  }
  // The draw: the first rank where the running mass passes u * total (else the last kept).
  var chosen = ${NONE};
  if (!over) {
    var left = u * total;
    var pv = bitcast<f32>(0x7f800000u);
    var pi = 0u;
    for (var r = 0u; r < keep; r++) {
      if (steps >= P.maxSteps) { over = true; break; }
      steps++;
      var cv = ninf;
      var ci = ${NONE};
      for (var i = t; i < P.limit; i += ${LANES}u) {
        let v = S[sb + i];
        if (v >= fl && before(pv, pi, v, i) && before(v, i, cv, ci)) { cv = v; ci = i; }
      }
      first_of(t, cv, ci);
      pv = workgroupUniformLoad(&rv[0]);
      pi = workgroupUniformLoad(&ri[0]);
      chosen = pi;
      left -= exp(pv / temp - mx);
      if (left < 0.0) { break; }
    }
  }
  if (t == 0u) { Y[P.outOffset + row] = select(i32(chosen), -1, over); }
}
`;
