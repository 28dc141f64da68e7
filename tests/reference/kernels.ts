/**
 * Pure-TypeScript reference of every kernel in core/kernels, accumulating in f64. Used only by
 * tests. Layouts and semantics follow the kernel doc comments.
 */

/** Deterministic uniform numbers in [lo, hi) (mulberry32). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + (hi - lo) * u;
  }
  return out;
}

/** Random integers in [lo, hi). */
export function randomInts(n: number, seed: number, lo: number, hi: number): Int32Array {
  const r = randomArray(n, seed, 0, 1);
  return Int32Array.from(r, (u) => lo + Math.min(hi - lo - 1, Math.floor(u * (hi - lo))));
}

/** Max |a − b| / max(1, max |b|): the relative error tests bound. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let scale = 1;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  let err = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return Infinity;
    err = Math.max(err, d);
  }
  return err / scale;
}

/** C = op(A)·op(B) + bias; A [batch, M, K] (or [batch, K, M]); B [K, N]/[N, K], batched or shared. */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  batch: number,
  M: number,
  N: number,
  K: number,
  opts: {
    transposeA?: boolean;
    transposeB?: boolean;
    sharedB?: boolean;
    bias?: ArrayLike<number>;
  } = {},
): Float32Array {
  const out = new Float32Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ab = z * M * K;
    const bb = opts.sharedB ? 0 : z * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = opts.bias ? opts.bias[n] : 0;
        for (let k = 0; k < K; k++) {
          const av = opts.transposeA ? a[ab + k * M + m] : a[ab + m * K + k];
          const bv = opts.transposeB ? b[bb + n * K + k] : b[bb + k * N + n];
          s += av * bv;
        }
        out[z * M * N + m * N + n] = s;
      }
    }
  }
  return out;
}

/** LayerNorm over rows of length `cols` (biased variance). */
export function layerNormRef(
  x: ArrayLike<number>,
  cols: number,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  eps: number,
): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r * cols < x.length; r++) {
    let mean = 0;
    for (let i = 0; i < cols; i++) mean += x[r * cols + i];
    mean /= cols;
    let v = 0;
    for (let i = 0; i < cols; i++) v += (x[r * cols + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / cols + eps);
    for (let i = 0; i < cols; i++) out[r * cols + i] = (x[r * cols + i] - mean) * inv * w[i] + b[i];
  }
  return out;
}

/** RMSNorm over rows of length `cols`. */
export function rmsNormRef(
  x: ArrayLike<number>,
  cols: number,
  w: ArrayLike<number>,
  eps: number,
): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r * cols < x.length; r++) {
    let v = 0;
    for (let i = 0; i < cols; i++) v += x[r * cols + i] ** 2;
    const inv = 1 / Math.sqrt(v / cols + eps);
    for (let i = 0; i < cols; i++) out[r * cols + i] = x[r * cols + i] * inv * w[i];
  }
  return out;
}

/** Softmax over rows of length `cols`. */
export function softmaxRef(x: ArrayLike<number>, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r * cols < x.length; r++) {
    let m = -Infinity;
    for (let i = 0; i < cols; i++) m = Math.max(m, x[r * cols + i]);
    let s = 0;
    for (let i = 0; i < cols; i++) s += Math.exp(x[r * cols + i] - m);
    for (let i = 0; i < cols; i++) out[r * cols + i] = Math.exp(x[r * cols + i] - m) / s;
  }
  return out;
}

export const geluRef = (x: number): number =>
  0.5 * x * (1 + Math.tanh(0.7978845608028654 * x * (1 + 0.044715 * x * x)));
export const siluRef = (x: number): number => x / (1 + Math.exp(-x));

/** Reduction over rows of length `cols`. */
export function reduceRef(
  x: ArrayLike<number>,
  cols: number,
  op: "sum" | "max" | "sumsq",
): Float32Array {
  const rows = cols === 0 ? 0 : x.length / cols;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let v = op === "max" ? -3.4028234e38 : 0;
    for (let i = 0; i < cols; i++) {
      const e = x[r * cols + i];
      v = op === "max" ? Math.max(v, e) : op === "sum" ? v + e : v + e * e;
    }
    out[r] = v;
  }
  return out;
}

/** Rows of a [V, h] table. */
export function embeddingRef(
  table: ArrayLike<number>,
  h: number,
  ids: ArrayLike<number>,
): Float32Array {
  const out = new Float32Array(ids.length * h);
  for (let i = 0; i < ids.length; i++) {
    for (let j = 0; j < h; j++) out[i * h + j] = table[ids[i] * h + j];
  }
  return out;
}

/** inv_freq for r rotated dims, optionally rounded to f16 through `round`. */
function invFreq(r: number, round: (v: number) => number): number[] {
  return Array.from({ length: r / 2 }, (_, i) => round(1 / 10000 ** ((2 * i) / r)));
}

/** Rotates `r` values in place by position p ("rotate half", θ = f32(p·inv_freq)). */
function rotateSpan(x: number[], p: number, inv: number[]): number[] {
  const q = x.length / 2;
  const out = new Array<number>(x.length);
  for (let i = 0; i < q; i++) {
    const th = Math.fround(p * inv[i]);
    const c = Math.cos(th);
    const s = Math.sin(th);
    out[i] = x[i] * c - x[i + q] * s;
    out[i + q] = x[i + q] * c + x[i] * s;
  }
  return out;
}

/** One head vector rotated: "2d" (two halves by pos0, pos1, f16 inv_freq) or "1d". */
export function rotateHeadRef(
  x: number[],
  mode: "2d" | "1d",
  p0: number,
  p1: number,
  f16Round: (v: number) => number,
): number[] {
  const d = x.length;
  if (mode === "1d") return rotateSpan(x, p0, invFreq(d, (v) => v));
  const r = d / 2;
  const inv = invFreq(r, f16Round);
  return [...rotateSpan(x.slice(0, r), p0, inv), ...rotateSpan(x.slice(r), p1, inv)];
}

/**
 * ChatGLM attention for one batch: q [heads, s, d], k/v [heads, S, d], masked(i, j) for query
 * row i (0..s) and key j; c = layer scale. Returns ctx [s, heads·d].
 */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  heads: number,
  s: number,
  S: number,
  d: number,
  masked: (i: number, j: number) => boolean,
  c: number,
): Float32Array {
  const out = new Float32Array(s * heads * d);
  for (let n = 0; n < heads; n++) {
    for (let i = 0; i < s; i++) {
      const scores = new Float64Array(S);
      for (let j = 0; j < S; j++) {
        let dot = 0;
        for (let t = 0; t < d; t++) {
          dot += (q[(n * s + i) * d + t] / (Math.sqrt(d) * c)) * k[(n * S + j) * d + t];
        }
        scores[j] = (masked(i, j) ? -10000 : dot) * c;
      }
      const m = Math.max(...scores);
      let sum = 0;
      for (let j = 0; j < S; j++) sum += scores[j] = Math.exp(scores[j] - m);
      for (let t = 0; t < d; t++) {
        let acc = 0;
        for (let j = 0; j < S; j++) acc += scores[j] * v[(n * S + j) * d + t];
        out[(i * heads + n) * d + t] = acc / sum;
      }
    }
  }
  return out;
}

/** Per-row cross-entropy (0 for ignored) and the mean over counted rows. */
export function crossEntropyRef(
  logits: ArrayLike<number>,
  V: number,
  labels: ArrayLike<number>,
  ignore = -100,
): { loss: Float32Array; lse: Float32Array; mean: number; count: number } {
  const R = labels.length;
  const loss = new Float32Array(R);
  const lse = new Float32Array(R);
  let sum = 0;
  let count = 0;
  for (let r = 0; r < R; r++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - m);
    lse[r] = m + Math.log(s);
    if (labels[r] === ignore) continue;
    loss[r] = lse[r] - logits[r * V + labels[r]];
    sum += loss[r];
    count++;
  }
  return { loss, lse, mean: count ? sum / count : 0, count };
}
