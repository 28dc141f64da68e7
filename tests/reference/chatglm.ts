/**
 * A plain CPU float32 reference of ChatGLM-6B (v1), written straight from the fixture README
 * (§3 forward, §3.1 qkv layout, §3.2 rotary, §3.3 attention, §7 LoRA, §8 loss). Used only by
 * tests: the oracle for the GPU model and, later, for the trainer's gradients. It takes the
 * explicit mask and positions (the goldens' form) so it does not share the model's input logic.
 *
 * Sums run in float64 and every op's output is stored as float32.
 */

import assert from "node:assert/strict";
import { type ChatGLMConfig, RESIDUAL_ALPHA } from "../../core/models/chatglm/config.ts";
import { rotaryInvFreq } from "../../core/models/chatglm/rotary.ts";
import { iterateTensors, openCheckpoint } from "../../core/io/checkpoint.ts";
import { bytesToF32 } from "../../core/io/dtype.ts";

export interface RefLoraModule {
  a: Float32Array; // [r, in]
  b: Float32Array; // [out, r]
  r: number;
}

export interface RefLora {
  scaling: number;
  /** Keyed by full module name, e.g. `transformer.layers.0.attention.query_key_value`. */
  modules: Map<string, RefLoraModule>;
}

export interface RefModel {
  config: ChatGLMConfig;
  weights: Map<string, Float32Array>;
  lora?: RefLora;
}

/** Per layer, per batch row: the keys (after rotary) and values of every earlier position. */
export interface RefCache {
  k: Float32Array[][][]; // [layer][row][position] → [h]
  v: Float32Array[][][];
}

export function refCreateCache(config: ChatGLMConfig, batch: number): RefCache {
  const make = () =>
    Array.from({ length: config.numLayers }, () => Array.from({ length: batch }, () => []));
  return { k: make(), v: make() };
}

export interface RefForwardOptions {
  cache?: RefCache;
  /** Called with (index, [b, s, h]): 0 = embeddings, l+1 = output of layer l, L+1 = final LN. */
  onHidden?: (index: number, hidden: Float32Array) => void;
}

function weight(model: RefModel, name: string): Float32Array {
  const w = model.weights.get(name);
  if (!w) throw new Error(`reference: missing weight ${name}`);
  return w;
}

/** y[n, out] = x[n, in] · Wᵀ + b (+ LoRA branch when the module is targeted). */
function linear(
  model: RefModel,
  module: string,
  x: Float32Array,
  n: number,
  inDim: number,
  outDim: number,
  bias = true,
): Float32Array {
  const w = weight(model, `${module}.weight`);
  const b = bias ? weight(model, `${module}.bias`) : null;
  const y = new Float32Array(n * outDim);
  for (let t = 0; t < n; t++) {
    const xo = t * inDim;
    for (let o = 0; o < outDim; o++) {
      let acc = b ? b[o] : 0;
      const wo = o * inDim;
      for (let i = 0; i < inDim; i++) acc += x[xo + i] * w[wo + i];
      y[t * outDim + o] = acc;
    }
  }
  const lora = model.lora?.modules.get(module);
  if (lora) {
    const r = lora.r;
    const mid = new Float32Array(r);
    for (let t = 0; t < n; t++) {
      const xo = t * inDim;
      for (let k = 0; k < r; k++) {
        let acc = 0;
        for (let i = 0; i < inDim; i++) acc += x[xo + i] * lora.a[k * inDim + i];
        mid[k] = acc;
      }
      for (let o = 0; o < outDim; o++) {
        let acc = 0;
        for (let k = 0; k < r; k++) acc += mid[k] * lora.b[o * r + k];
        y[t * outDim + o] = y[t * outDim + o] + Math.fround(model.lora!.scaling * Math.fround(acc));
      }
    }
  }
  return y;
}

function layerNorm(
  x: Float32Array,
  n: number,
  h: number,
  w: Float32Array,
  b: Float32Array,
  eps: number,
): Float32Array {
  const y = new Float32Array(n * h);
  for (let t = 0; t < n; t++) {
    let mean = 0;
    for (let i = 0; i < h; i++) mean += x[t * h + i];
    mean /= h;
    let v = 0;
    for (let i = 0; i < h; i++) v += (x[t * h + i] - mean) ** 2;
    v /= h;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < h; i++) y[t * h + i] = (x[t * h + i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

export function refGelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(0.7978845608028654 * x * (1 + 0.044715 * x * x)));
}

/** Rotates the two halves of one head vector in place (§3.2, "rotate half"). */
function rotate(v: Float32Array, off: number, r: number, p: number, invFreq: Float32Array): void {
  const half = r / 2;
  for (let i = 0; i < half; i++) {
    const theta = Math.fround(p * invFreq[i]);
    const c = Math.fround(Math.cos(theta)), s = Math.fround(Math.sin(theta));
    const a = v[off + i], b = v[off + i + half];
    v[off + i] = a * c - b * s;
    v[off + i + half] = b * c + a * s;
  }
}

/**
 * Forward pass over `ids` [b, s] with mask [b, s, S] (1 = may NOT attend; S = cached + s) and
 * positions [b, 2, s]. Returns logits [b, s, V]; with a cache, appends this step's k, v to it.
 */
export function refForward(
  model: RefModel,
  ids: ArrayLike<number>,
  batch: number,
  seq: number,
  mask: ArrayLike<number>,
  pos: ArrayLike<number>,
  options: RefForwardOptions = {},
): Float32Array {
  const cfg = model.config;
  const h = cfg.hiddenSize, heads = cfg.numHeads, d = cfg.headDim, r = d / 2;
  const n = batch * seq;
  const invFreq = rotaryInvFreq(r);
  const cache = options.cache ?? refCreateCache(cfg, batch);
  const past = cache.k[0][0].length;
  const total = past + seq;

  const emb = weight(model, "transformer.word_embeddings.weight");
  let x: Float32Array = new Float32Array(n * h);
  for (let t = 0; t < n; t++) x.set(emb.subarray(ids[t] * h, ids[t] * h + h), t * h);
  options.onHidden?.(0, x);

  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `transformer.layers.${l}`;
    const a = layerNorm(
      x,
      n,
      h,
      weight(model, `${p}.input_layernorm.weight`),
      weight(model, `${p}.input_layernorm.bias`),
      cfg.layernormEpsilon,
    );
    const qkv = linear(model, `${p}.attention.query_key_value`, a, n, h, 3 * h);
    const q = new Float32Array(n * h);
    for (let t = 0; t < n; t++) {
      const bi = Math.floor(t / seq), si = t % seq;
      const k = new Float32Array(h), v = new Float32Array(h);
      for (let hd = 0; hd < heads; hd++) {
        const src = t * 3 * h + hd * 3 * d;
        q.set(qkv.subarray(src, src + d), t * h + hd * d);
        k.set(qkv.subarray(src + d, src + 2 * d), hd * d);
        v.set(qkv.subarray(src + 2 * d, src + 3 * d), hd * d);
        const p0 = pos[(bi * 2) * seq + si], p1 = pos[(bi * 2 + 1) * seq + si];
        rotate(q, t * h + hd * d, r, p0, invFreq);
        rotate(q, t * h + hd * d + r, r, p1, invFreq);
        rotate(k, hd * d, r, p0, invFreq);
        rotate(k, hd * d + r, r, p1, invFreq);
      }
      cache.k[l][bi].push(k);
      cache.v[l][bi].push(v);
    }

    const c = l + 1;
    const norm = Math.sqrt(d) * c;
    const ctx = new Float32Array(n * h);
    const scores = new Float64Array(total);
    for (let t = 0; t < n; t++) {
      const bi = Math.floor(t / seq), si = t % seq;
      const keys = cache.k[l][bi], vals = cache.v[l][bi];
      for (let hd = 0; hd < heads; hd++) {
        const qo = t * h + hd * d;
        let max = -Infinity;
        for (let j = 0; j < total; j++) {
          let s: number;
          if (mask[(bi * seq + si) * total + j]) {
            s = -10000;
          } else {
            s = 0;
            for (let i = 0; i < d; i++) s += Math.fround(q[qo + i] / norm) * keys[j][hd * d + i];
            s = Math.fround(s);
          }
          s *= c;
          scores[j] = s;
          if (s > max) max = s;
        }
        let sum = 0;
        for (let j = 0; j < total; j++) {
          scores[j] = Math.exp(scores[j] - max);
          sum += scores[j];
        }
        for (let i = 0; i < d; i++) {
          let acc = 0;
          for (let j = 0; j < total; j++) acc += scores[j] * vals[j][hd * d + i];
          ctx[qo + i] = acc / sum;
        }
      }
    }
    const o = linear(model, `${p}.attention.dense`, ctx, n, h, h);
    const hmid = new Float32Array(n * h);
    for (let i = 0; i < n * h; i++) hmid[i] = Math.fround(a[i] * RESIDUAL_ALPHA) + o[i];
    const m = layerNorm(
      hmid,
      n,
      h,
      weight(model, `${p}.post_attention_layernorm.weight`),
      weight(model, `${p}.post_attention_layernorm.bias`),
      cfg.layernormEpsilon,
    );
    const inner = cfg.innerHiddenSize;
    const up = linear(model, `${p}.mlp.dense_h_to_4h`, m, n, h, inner);
    for (let i = 0; i < up.length; i++) up[i] = refGelu(up[i]);
    const f = linear(model, `${p}.mlp.dense_4h_to_h`, up, n, inner, h);
    const next = new Float32Array(n * h);
    for (let i = 0; i < n * h; i++) next[i] = Math.fround(m[i] * RESIDUAL_ALPHA) + f[i];
    x = next;
    options.onHidden?.(l + 1, x);
  }
  const y = layerNorm(
    x,
    n,
    h,
    weight(model, "transformer.final_layernorm.weight"),
    weight(model, "transformer.final_layernorm.bias"),
    cfg.layernormEpsilon,
  );
  options.onHidden?.(cfg.numLayers + 1, y);
  return linear(model, "lm_head", y, n, h, cfg.vocabSize, false);
}

/**
 * Mean shifted cross-entropy (§8): over (row, t) with labels[row][t+1] ≠ −100 of
 * logsumexp(logits[row][t]) − logits[row][t][label].
 */
export function refLoss(
  logits: Float32Array,
  labels: number[][],
  vocab: number,
): number {
  const seq = labels[0].length;
  let total = 0, count = 0;
  labels.forEach((row, b) => {
    for (let t = 0; t + 1 < seq; t++) {
      const label = row[t + 1];
      if (label === -100) continue;
      const off = (b * seq + t) * vocab;
      let max = -Infinity;
      for (let v = 0; v < vocab; v++) max = Math.max(max, logits[off + v]);
      let sum = 0;
      for (let v = 0; v < vocab; v++) sum += Math.exp(logits[off + v] - max);
      total += Math.log(sum) + max - logits[off + label];
      count++;
    }
  });
  return total / count;
}

// ---------------------------------------------------------------------------------------------
// Goldens (fixture README §12): index, raw files, the comparison rule.

export interface GoldenFile {
  key: string;
  file: string;
  dtype: "float32" | "int32";
  shape: number[];
  tensors?: { name: string; offset: number; shape: number[] }[];
}

export interface GoldenCase {
  name: string;
  values: Record<string, unknown>;
  files: GoldenFile[];
}

export interface Goldens {
  dir: string;
  cases: Map<string, GoldenCase>;
  /** Reads a case's file by key, as Float32Array or Int32Array. */
  read(caseName: string, key: string): { data: Float32Array | Int32Array; shape: number[] };
  rtol: number;
  atol: number;
}

export function loadGoldens(modelDir: string): Goldens {
  const dir = `${modelDir}/goldens`;
  const index = JSON.parse(Deno.readTextFileSync(`${dir}/index.json`));
  const cases = new Map<string, GoldenCase>(
    (index.cases as GoldenCase[]).map((c) => [c.name, c]),
  );
  return {
    dir,
    cases,
    rtol: index.compare?.rtol ?? 1e-4,
    atol: index.compare?.atol ?? 1e-6,
    read(caseName, key) {
      const c = cases.get(caseName);
      if (!c) throw new Error(`goldens: no case ${caseName}`);
      const f = c.files.find((f) => f.key === key);
      if (!f) throw new Error(`goldens: case ${caseName} has no file ${key}`);
      const bytes = Deno.readFileSync(`${dir}/${f.file}`);
      const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      const data = f.dtype === "int32" ? new Int32Array(buf) : new Float32Array(buf);
      return { data, shape: f.shape };
    },
  };
}

/**
 * The §12 rule over the selected elements: max|a − g| ≤ rtol·max|g| + atol. `select` lists
 * [start, end) element ranges (e.g. the real positions of a padded batch); all when omitted.
 */
export function compareRule(
  actual: ArrayLike<number>,
  golden: ArrayLike<number>,
  rtol = 1e-4,
  atol = 1e-6,
  select?: [number, number][],
): { maxDiff: number; maxGolden: number; limit: number; ok: boolean } {
  const ranges = select ?? [[0, golden.length]];
  let maxDiff = 0, maxGolden = 0;
  for (const [s, e] of ranges) {
    for (let i = s; i < e; i++) {
      const d = Math.abs(actual[i] - golden[i]);
      // NaN must fail, so compare with a negated test.
      if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
      maxGolden = Math.max(maxGolden, Math.abs(golden[i]));
    }
  }
  const limit = rtol * maxGolden + atol;
  return { maxDiff, maxGolden, limit, ok: maxDiff <= limit };
}

/**
 * Asserts {@link compareRule} at its defaults (1e-4 of the largest expected value + 1e-6); `of`
 * names what the expected values are in the message ("golden", "webgpu", …).
 */
export function assertWithinRule(
  name: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  select?: [number, number][],
  of = "golden",
): void {
  const r = compareRule(actual, expected, 1e-4, 1e-6, select);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit} (max |${of}| ${r.maxGolden})`);
}

/** First index of the largest value (greedy, spec §6). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Element ranges of the real (non-pad) positions of a [b, S, width] tensor. */
export function realRanges(pads: number[], seq: number, width: number): [number, number][] {
  return pads.map((p, b) => [(b * seq + p) * width, (b + 1) * seq * width]);
}

/** Every weight of a model directory as f32 (any stored dtype), skipping the `inv_freq` buffers. */
export async function loadRefWeights(dir: string): Promise<Map<string, Float32Array>> {
  const ckpt = await openCheckpoint(dir);
  const out = new Map<string, Float32Array>();
  for await (const t of iterateTensors(ckpt)) {
    if (t.name.endsWith(".rotary_emb.inv_freq")) continue;
    out.set(t.name, bytesToF32(t.data, t.dtype));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Inputs and greedy decoding, restated literally from §4.1, §4.2 and §5 (explicit matrices), so
// the model's compact row layout is checked against an independent construction.

/** Rule §4.1 on one unpadded sequence: mask [s, s] (1 = may not attend), pos [2, s]. */
export function refRule41(
  ids: number[],
  config: ChatGLMConfig,
): { mask: Uint8Array; pos: Int32Array } {
  const s = ids.length;
  const ctx = ids.indexOf(config.bosTokenId);
  const mpos = ids.includes(config.gmaskTokenId)
    ? ids.indexOf(config.gmaskTokenId)
    : ids.indexOf(config.maskTokenId);
  if (ctx < 0 || mpos < 0) throw new Error("reference: no <sop> or no mask token");
  const mask = new Uint8Array(s * s);
  for (let i = 0; i < s; i++) {
    for (let j = 0; j < s; j++) {
      mask[i * s + j] = j < ctx || j <= i ? 0 : 1;
    }
  }
  const pos = new Int32Array(2 * s);
  for (let i = 0; i < s; i++) {
    pos[i] = i < ctx ? i : mpos;
    pos[s + i] = i < ctx ? 0 : i - ctx + 1;
  }
  return { mask, pos };
}

/** §4.2: left-pads unpadded prompts into one batch with per-sequence masks and positions. */
export function refPadBatch(
  prompts: number[][],
  config: ChatGLMConfig,
): { ids: number[][]; mask: Uint8Array; pos: Int32Array; pads: number[]; seq: number } {
  const S = Math.max(...prompts.map((p) => p.length));
  const mask = new Uint8Array(prompts.length * S * S).fill(1);
  const pos = new Int32Array(prompts.length * 2 * S);
  const ids: number[][] = [];
  const pads: number[] = [];
  prompts.forEach((x, b) => {
    const k = S - x.length, n = x.length;
    const one = refRule41(x, config);
    ids.push([...new Array(k).fill(config.padTokenId), ...x]);
    pads.push(k);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) mask[(b * S + k + i) * S + k + j] = one.mask[i * n + j];
      pos[(b * 2) * S + k + i] = one.pos[i];
      pos[(b * 2 + 1) * S + k + i] = one.pos[n + i];
    }
  });
  return { ids, mask, pos, pads, seq: S };
}

export interface RefGenerateResult {
  /** New tokens per row, `<eop>` included, finished rows stop growing. */
  tokens: number[][];
  /** Raw logits [b, V] (before masking) of every step. */
  stepLogits: Float32Array[];
  /** live[step][row]: the row was unfinished when the step's token was chosen. */
  live: boolean[][];
}

/**
 * Greedy decoding per §5: ids ≥ textVocab masked, finished rows feed pad, stop when all rows are
 * done or after maxNewTokens. With `useCache` each step runs one token against the KV cache;
 * otherwise the whole grown sequence is recomputed with the grown explicit mask.
 */
export function refGenerate(
  model: RefModel,
  prompts: number[][],
  options: { maxNewTokens: number; textVocab: number; useCache: boolean },
): RefGenerateResult {
  const cfg = model.config, V = cfg.vocabSize;
  const batch = prompts.length;
  const init = refPadBatch(prompts, cfg);
  let S = init.seq;
  let ids = init.ids.map((r) => [...r]);
  let mask = init.mask, pos = init.pos;
  const cache = refCreateCache(cfg, batch);
  let logits = refForward(model, ids.flat(), batch, S, mask, pos, { cache });
  let lastRows = Array.from(
    { length: batch },
    (_, b) => logits.subarray((b * S + S - 1) * V, (b * S + S) * V),
  );
  const tokens: number[][] = prompts.map(() => []);
  const finished = new Array(batch).fill(false);
  const stepLogits: Float32Array[] = [];
  const live: boolean[][] = [];
  for (let step = 0; step < options.maxNewTokens; step++) {
    const raw = new Float32Array(batch * V);
    lastRows.forEach((row, b) => raw.set(row, b * V));
    stepLogits.push(raw);
    live.push(finished.map((f) => !f));
    const next = lastRows.map((row, b) => {
      if (finished[b]) return cfg.padTokenId;
      let best = 0;
      for (let v = 1; v < options.textVocab; v++) if (row[v] > row[best]) best = v;
      return best;
    });
    next.forEach((t, b) => {
      if (!finished[b]) {
        tokens[b].push(t);
        if (t === cfg.eosTokenId) finished[b] = true;
      }
    });
    if (finished.every((f) => f) || step + 1 === options.maxNewTokens) break;
    // Grow ids, mask and positions by one column (§5).
    const S1 = S + 1;
    const mask1 = new Uint8Array(batch * S1 * S1);
    const pos1 = new Int32Array(batch * 2 * S1);
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < S; i++) {
        for (let j = 0; j < S; j++) mask1[(b * S1 + i) * S1 + j] = mask[(b * S + i) * S + j];
        mask1[(b * S1 + i) * S1 + S] = 1;
      }
      for (let j = 0; j < S; j++) mask1[(b * S1 + S) * S1 + j] = mask[(b * S + S - 1) * S + j];
      mask1[(b * S1 + S) * S1 + S] = 0;
      for (let r = 0; r < 2; r++) {
        for (let i = 0; i < S; i++) pos1[(b * 2 + r) * S1 + i] = pos[(b * 2 + r) * S + i];
      }
      pos1[(b * 2) * S1 + S] = pos[(b * 2) * S + S - 1];
      pos1[(b * 2 + 1) * S1 + S] = pos[(b * 2 + 1) * S + S - 1] + 1;
    }
    ids = ids.map((r, b) => [...r, next[b]]);
    mask = mask1, pos = pos1, S = S1;
    if (options.useCache) {
      const stepMask = new Uint8Array(batch * S);
      const stepPos = new Int32Array(batch * 2);
      for (let b = 0; b < batch; b++) {
        stepMask.set(mask.subarray((b * S + S - 1) * S, (b * S + S) * S), b * S);
        stepPos[b * 2] = pos[(b * 2) * S + S - 1];
        stepPos[b * 2 + 1] = pos[(b * 2 + 1) * S + S - 1];
      }
      logits = refForward(model, next, batch, 1, stepMask, stepPos, { cache });
      lastRows = Array.from({ length: batch }, (_, b) => logits.subarray(b * V, (b + 1) * V));
    } else {
      logits = refForward(model, ids.flat(), batch, S, mask, pos);
      lastRows = Array.from(
        { length: batch },
        (_, b) => logits.subarray((b * S + S - 1) * V, (b * S + S) * V),
      );
    }
  }
  return { tokens, stepLogits, live };
}
