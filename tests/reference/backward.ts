/**
 * Float64 CPU forwards of the ops with backward kernels, and a central-difference gradient, for
 * the finite-difference checks of the backward kernels (core/kernels/<op>/*_grad.ts). Used only by tests.
 */

/** Central differences of a scalar function at x (every coordinate), step h. */
export function numericGrad(f: (x: Float64Array) => number, x: ArrayLike<number>, h = 1e-3) {
  const p = Float64Array.from(x);
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    const v = p[i];
    p[i] = v + h;
    const up = f(p);
    p[i] = v - h;
    const down = f(p);
    p[i] = v;
    out[i] = (up - down) / (2 * h);
  }
  return out;
}

/** Σ g·y. */
export function dotWith(y: ArrayLike<number>, g: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i] * g[i];
  return s;
}

export function linear64(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  rows: number,
  N: number,
  K: number,
): Float64Array {
  const y = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[r * K + k] * w[n * K + k];
      y[r * N + n] = s;
    }
  }
  return y;
}

export function layerNorm64(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  h: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r * h < x.length; r++) {
    let mean = 0;
    for (let j = 0; j < h; j++) mean += x[r * h + j];
    mean /= h;
    let v = 0;
    for (let j = 0; j < h; j++) v += (x[r * h + j] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / h + eps);
    for (let j = 0; j < h; j++) y[r * h + j] = (x[r * h + j] - mean) * inv * w[j] + b[j];
  }
  return y;
}

export const gelu64 = (x: number): number =>
  0.5 * x * (1 + Math.tanh(0.7978845608028654 * x * (1 + 0.044715 * x * x)));

/**
 * ChatGLM attention (layer scale c, compact mask: pads 0, context ctx[bi]) for q, k, v
 * [b, heads, s, d] → ctx [b, s, heads·d].
 */
export function attention64(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  b: number,
  heads: number,
  s: number,
  d: number,
  ctx: number[],
  c: number,
): Float64Array {
  return maskedAttention64(
    q,
    k,
    v,
    [b, heads, s, s, s, d],
    (bi, i, j) => !(j < ctx[bi] || j <= i),
    c,
    -10000,
  );
}

/**
 * f64 attention of q [b, heads, s, d] over a K/V cache [b, heads, cap, d] holding S keys, any
 * mask and mask value: ctx [b, s, heads·d]. `masked(bi, i, j)` takes the query's cache position i.
 */
export function maskedAttention64(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  [b, heads, s, S, cap, d]: number[],
  masked: (bi: number, i: number, j: number) => boolean,
  c: number,
  maskValue: number,
): Float64Array {
  const out = new Float64Array(b * s * heads * d);
  for (let bi = 0; bi < b; bi++) {
    for (let n = 0; n < heads; n++) {
      const kv = (bi * heads + n) * cap * d;
      for (let qi = 0; qi < s; qi++) {
        const qb = ((bi * heads + n) * s + qi) * d;
        const sc = new Float64Array(S);
        for (let j = 0; j < S; j++) {
          let dot = 0;
          for (let t = 0; t < d; t++) dot += (q[qb + t] / (Math.sqrt(d) * c)) * k[kv + j * d + t];
          sc[j] = (masked(bi, S - s + qi, j) ? maskValue : dot) * c;
        }
        const m = Math.max(...sc);
        let sum = 0;
        for (let j = 0; j < S; j++) sum += sc[j] = Math.exp(sc[j] - m);
        for (let t = 0; t < d; t++) {
          let acc = 0;
          for (let j = 0; j < S; j++) acc += sc[j] * v[kv + j * d + t];
          out[((bi * s + qi) * heads + n) * d + t] = acc / sum;
        }
      }
    }
  }
  return out;
}

/**
 * ChatGLM's split of qkv [b, s, heads·3d] (per head q|k|v) with 2-D rotary by pos [b, 2, s]:
 * returns q, k, v [b, heads, s, d] concatenated.
 */
export function qkvRotary64(
  qkv: ArrayLike<number>,
  pos: ArrayLike<number>,
  b: number,
  s: number,
  heads: number,
  d: number,
  invFreq: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(3 * b * heads * s * d);
  const r = d / 2, quarter = r / 2;
  for (let bi = 0; bi < b; bi++) {
    for (let si = 0; si < s; si++) {
      for (let n = 0; n < heads; n++) {
        for (let which = 0; which < 3; which++) {
          const src = (bi * s + si) * 3 * heads * d + n * 3 * d + which * d;
          const dst = which * b * heads * s * d + ((bi * heads + n) * s + si) * d;
          for (let j = 0; j < d; j++) {
            if (which === 2) {
              out[dst + j] = qkv[src + j];
              continue;
            }
            const span = Math.floor(j / r), jj = j - span * r;
            const i = jj < quarter ? jj : jj - quarter;
            const p = pos[(bi * 2 + span) * s + si];
            const theta = Math.fround(p * invFreq[i]);
            const cs = Math.cos(theta), sn = Math.sin(theta);
            const partner = jj < quarter ? j + quarter : j - quarter;
            out[dst + j] = jj < quarter
              ? qkv[src + j] * cs - qkv[src + partner] * sn
              : qkv[src + j] * cs + qkv[src + partner] * sn;
          }
        }
      }
    }
  }
  return out;
}

/** Mean cross-entropy over rows whose label is not −100. */
export function crossEntropy64(logits: ArrayLike<number>, V: number, labels: ArrayLike<number>) {
  let sum = 0, count = 0;
  for (let r = 0; r < labels.length; r++) {
    if (labels[r] === -100) continue;
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j] - m);
    sum += m + Math.log(s) - logits[r * V + labels[r]];
    count++;
  }
  return count ? sum / count : 0;
}
