/**
 * Float64 CPU forms of the Llama-family ops (tests/fixtures/llama-family/README.md §4): RMSNorm,
 * rotate-half rotary into head-major layout, grouped-query attention with left pads and a past,
 * and SwiGLU's gate. Written from the spec only; used by tests/llama_kernels.test.ts.
 */

/** y = w ⊙ x / sqrt(mean(x²) + eps) over rows of `cols`. */
export function rmsNorm64(x: ArrayLike<number>, w: ArrayLike<number>, cols: number, eps: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[r * cols + j] ** 2;
    const inv = 1 / Math.sqrt(ss / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = w[j] * x[r * cols + j] * inv;
  }
  return y;
}

/**
 * x [b, s, H·d] → [b, H, s, d], dims i and i + d/2 rotated by angle pos·invFreq[i] (angles in
 * float32 as the reference, cos/sin in f64). Without `invFreq`: moved only.
 */
export function headsRotary64(
  x: ArrayLike<number>,
  b: number,
  s: number,
  H: number,
  d: number,
  pos: ArrayLike<number> | null,
  invFreq: ArrayLike<number> | null,
) {
  const out = new Float64Array(b * H * s * d);
  const half = d / 2;
  for (let bi = 0; bi < b; bi++) {
    for (let si = 0; si < s; si++) {
      for (let n = 0; n < H; n++) {
        const src = ((bi * s + si) * H + n) * d;
        const dst = ((bi * H + n) * s + si) * d;
        for (let i = 0; i < half; i++) {
          const lo = x[src + i], hi = x[src + i + half];
          if (!pos || !invFreq) {
            out[dst + i] = lo;
            out[dst + i + half] = hi;
            continue;
          }
          const th = Math.fround(pos[bi * s + si] * invFreq[i]);
          const c = Math.cos(th), sn = Math.sin(th);
          out[dst + i] = lo * c - hi * sn;
          out[dst + i + half] = hi * c + lo * sn;
        }
      }
    }
  }
  return out;
}

/**
 * q [b, nh, s, d] over k, v [b, nkv, S, d] (S = past + s): query i (cache index past + i) sees key
 * j iff j ≤ past + i and j ≥ pads[b]; query head n reads kv head n / (nh / nkv). A query with no
 * visible key gets uniform weights. Returns ctx [b, s, nh·d].
 */
export function gqaAttention64(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dims: { b: number; nh: number; nkv: number; s: number; S: number; d: number },
  pads: number[],
) {
  const { b, nh, nkv, s, S, d } = dims;
  const past = S - s, group = nh / nkv;
  const out = new Float64Array(b * s * nh * d);
  for (let bi = 0; bi < b; bi++) {
    for (let n = 0; n < nh; n++) {
      const m = Math.floor(n / group);
      for (let i = 0; i < s; i++) {
        const qi = past + i;
        const scores = new Float64Array(S);
        const visible: boolean[] = [];
        for (let j = 0; j < S; j++) {
          visible.push(j <= qi && j >= pads[bi] && qi >= pads[bi]);
          let dot = 0;
          for (let t = 0; t < d; t++) {
            dot += q[((bi * nh + n) * s + i) * d + t] * k[((bi * nkv + m) * S + j) * d + t];
          }
          scores[j] = dot / Math.sqrt(d);
        }
        const any = visible.some((x) => x);
        const w = new Float64Array(S);
        let max = -Infinity;
        for (let j = 0; j < S; j++) if (!any || visible[j]) max = Math.max(max, scores[j]);
        let sum = 0;
        for (let j = 0; j < S; j++) {
          w[j] = !any ? 1 : visible[j] ? Math.exp(scores[j] - max) : 0;
          sum += w[j];
        }
        for (let t = 0; t < d; t++) {
          let acc = 0;
          for (let j = 0; j < S; j++) acc += w[j] * v[((bi * nkv + m) * S + j) * d + t];
          out[((bi * s + i) * nh + n) * d + t] = acc / sum;
        }
      }
    }
  }
  return out;
}

/** silu(g) ⊙ u. */
export function siluGate64(g: ArrayLike<number>, u: ArrayLike<number>) {
  return Float64Array.from(g, (x, i) => x / (1 + Math.exp(-x)) * u[i]);
}
