// qkv split + rotary (ChatGLM 2D and plain 1D) + KV-cache append, and attention over the cache
// with explicit, compact (left pads + context) and no masks, vs the f64 reference.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import {
  f16BitsToF32,
  f16Round,
  readFloat32,
  readTensor,
  releaseTensor,
  uploadTensor,
} from "../core/tensor/mod.ts";
import {
  attention,
  ATTENTION_KERNEL_ENV,
  attentionSlots,
  qkvAttentionSlots,
  qkvRotary,
  qkvRotarySlots,
  rotary,
  rotaryInvFreq,
} from "../core/kernels/mod.ts";
import { maskedAttention64 } from "./reference/backward.ts";
import { createRng } from "../base/random.ts";
import {
  attentionRef,
  randomArray,
  randomInts,
  relError,
  rotateHeadRef,
} from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();

Deno.test("rotary inv_freq is f16-rounded for 2d (the ChatGLM table, fixture README §3.2)", () => {
  assert.deepEqual(
    [...rotaryInvFreq(8, 10000, true)],
    [1.0, 0.0999755859375, 0.01000213623046875, 0.0010004043579101562],
  );
  const real = "3c00 3a00 3880 36bf 350f 3397 31b1 3044 2e66 2ccd 2b33 2966 280c 2612 248d 22d4 " +
    "211f 1fae 1dc2 1c51 1a7a 18db 1749 1576 1419 1225 109b 0ee9 0d2e 0bc5 09d4 085f";
  assert.deepEqual(
    [...rotaryInvFreq(64, 10000, true)],
    real.split(" ").map((h) => f16BitsToF32(parseInt(h, 16))),
  );
});

/** Builds qkv [b, s, heads·3d] interleaved per head and returns per-(b, head, token) q, k, v. */
function splitRef(qkv: Float32Array, s: number, heads: number, d: number) {
  const get = (bi: number, si: number, n: number, which: number) => {
    const base = (bi * s + si) * 3 * heads * d + n * 3 * d + which * d;
    return Array.from(qkv.subarray(base, base + d));
  };
  return get;
}

Deno.test("qkvRotary 2d: split, rotate q and k, append to the cache at an offset", async () => {
  for (
    const [b, s, heads, d, past, cap] of [[2, 5, 3, 16, 3, 11], [1, 1, 2, 8, 6, 7], [
      3,
      7,
      1,
      4,
      0,
      7,
    ]]
  ) {
    const qkv = randomArray(b * s * heads * 3 * d, b * 7 + s, -2, 2);
    const pos = randomInts(b * 2 * s, heads + d, 0, 2050);
    const kInit = randomArray(b * heads * cap * d, 5);
    const vInit = randomArray(b * heads * cap * d, 6);
    const kc = uploadTensor(gpu, kInit, [b, heads, cap, d]);
    const vc = uploadTensor(gpu, vInit, [b, heads, cap, d]);
    const rec = beginRecording(gpu);
    const q = qkvRotary(
      rec,
      uploadTensor(gpu, qkv, [b, s, heads * 3 * d]),
      uploadTensor(gpu, pos, [b, 2, s]),
      kc,
      vc,
      { heads, past, mode: "2d" },
    );
    await submit(rec);
    const [gq, gk, gv] = [await readFloat32(q), await readFloat32(kc), await readFloat32(vc)];
    const get = splitRef(qkv, s, heads, d);
    const wantQ = new Float32Array(b * heads * s * d);
    const wantK = Float32Array.from(kInit);
    const wantV = Float32Array.from(vInit);
    for (let bi = 0; bi < b; bi++) {
      for (let n = 0; n < heads; n++) {
        for (let si = 0; si < s; si++) {
          const p0 = pos[(bi * 2) * s + si];
          const p1 = pos[(bi * 2 + 1) * s + si];
          wantQ.set(
            rotateHeadRef(get(bi, si, n, 0), "2d", p0, p1, f16Round),
            ((bi * heads + n) * s + si) * d,
          );
          const ci = ((bi * heads + n) * cap + past + si) * d;
          wantK.set(rotateHeadRef(get(bi, si, n, 1), "2d", p0, p1, f16Round), ci);
          wantV.set(get(bi, si, n, 2), ci);
        }
      }
    }
    assert.ok(relError(gq, wantQ) < 1e-5, `q ${relError(gq, wantQ)}`);
    assert.ok(relError(gk, wantK) < 1e-5, `k ${relError(gk, wantK)}`);
    assert.deepEqual([...gv], [...wantV]);
  }
});

Deno.test("qkvRotary 1d and none, blocked layout; rotary 1d on [b, s, heads, d]", async () => {
  const [b, s, heads, d] = [2, 3, 2, 6];
  const qkv = randomArray(b * s * 3 * heads * d, 3);
  const pos = randomInts(b * s, 4, 0, 300);
  const kc = uploadTensor(gpu, new Float32Array(b * heads * s * d), [b, heads, s, d]);
  const vc = uploadTensor(gpu, new Float32Array(b * heads * s * d), [b, heads, s, d]);
  const rec = beginRecording(gpu);
  const tq = uploadTensor(gpu, qkv, [b, s, 3 * heads * d]);
  const tpos = uploadTensor(gpu, pos, [b, s]);
  const q1 = qkvRotary(rec, tq, tpos, kc, vc, { heads, past: 0, mode: "1d", layout: "blocked" });
  const q0 = qkvRotary(rec, tq, null, kc, vc, { heads, past: 0, mode: "none", layout: "blocked" });
  // x [b, s, heads, d] = the q part of the blocked qkv
  const x = new Float32Array(b * s * heads * d);
  for (let t = 0; t < b * s; t++) {
    x.set(qkv.subarray(t * 3 * heads * d, t * 3 * heads * d + heads * d), t * heads * d);
  }
  const r1 = rotary(rec, uploadTensor(gpu, x, [b, s, heads, d]), tpos, { mode: "1d" });
  await submit(rec);
  const [g1, g0, gr] = [await readFloat32(q1), await readFloat32(q0), await readFloat32(r1)];
  for (let bi = 0; bi < b; bi++) {
    for (let n = 0; n < heads; n++) {
      for (let si = 0; si < s; si++) {
        const src = Array.from(qkv.subarray((bi * s + si) * 3 * heads * d + n * d).subarray(0, d));
        const at = ((bi * heads + n) * s + si) * d;
        const want = rotateHeadRef(src, "1d", pos[bi * s + si], 0, f16Round);
        assert.ok(relError(g1.subarray(at, at + d), want) < 1e-5);
        assert.deepEqual([...g0.subarray(at, at + d)], [...new Float32Array(src)]);
        const rat = ((bi * s + si) * heads + n) * d;
        assert.ok(relError(gr.subarray(rat, rat + d), want) < 1e-5);
      }
    }
  }
});

Deno.test("rotary: positions past the angle table give NaN, not wrong numbers", async () => {
  const rec = beginRecording(gpu);
  const y = rotary(
    rec,
    uploadTensor(gpu, randomArray(8, 1), [1, 1, 1, 8]),
    uploadTensor(gpu, new Int32Array([5, 40]), [1, 2, 1]),
    { mode: "2d", maxPosition: 32 },
  );
  await submit(rec);
  const got = await readFloat32(y);
  assert.ok(got.subarray(0, 4).every(Number.isFinite));
  assert.ok(got.subarray(4).every(Number.isNaN));
});

/** The ChatGLM compact rule: query at cache position i sees key j. */
function compactMasked(pad: number, ctx: number, i: number, j: number): boolean {
  return i < pad || j < pad || (j - pad >= ctx && j > i);
}

Deno.test("attention: compact and explicit masks agree with the reference; pad rows uniform", async () => {
  for (
    const [b, heads, s, S, cap, d, c] of [
      [2, 3, 5, 5, 9, 16, 2], // prefill
      [3, 2, 1, 9, 12, 8, 3], // decode step
      [1, 1, 3, 300, 300, 5, 1], // more keys than the workgroup
      [2, 2, 7, 10, 10, 12, 28],
    ]
  ) {
    const past = S - s;
    const q = randomArray(b * heads * s * d, S + 1, -3, 3);
    const k = randomArray(b * heads * cap * d, S + 2, -3, 3);
    const v = randomArray(b * heads * cap * d, S + 3, -3, 3);
    const info = new Int32Array(b * 2);
    for (let bi = 0; bi < b; bi++) {
      info[bi * 2] = Math.min(bi * 2, S - 1); // left pads (row 0 unpadded)
      info[bi * 2 + 1] = Math.max(0, Math.floor((S - info[bi * 2]) / 2)); // context length
    }
    const explicit = new Int32Array(b * s * S);
    for (let bi = 0; bi < b; bi++) {
      for (let qi = 0; qi < s; qi++) {
        for (let j = 0; j < S; j++) {
          explicit[(bi * s + qi) * S + j] =
            compactMasked(info[bi * 2], info[bi * 2 + 1], past + qi, j) ? 1 : 0;
        }
      }
    }
    const tq = uploadTensor(gpu, q, [b, heads, s, d]);
    const tk = uploadTensor(gpu, k, [b, heads, cap, d]);
    const tv = uploadTensor(gpu, v, [b, heads, cap, d]);
    const rec = beginRecording(gpu);
    const o1 = attention(rec, tq, tk, tv, {
      keys: S,
      layerScale: c,
      maskInfo: uploadTensor(gpu, info, [b, 2]),
    });
    const o2 = attention(rec, tq, tk, tv, {
      keys: S,
      layerScale: c,
      mask: uploadTensor(gpu, explicit, [b, s, S]),
    });
    const o3 = attention(rec, tq, tk, tv, { keys: S, layerScale: c });
    await submit(rec);
    const [g1, g2, g3] = [await readFloat32(o1), await readFloat32(o2), await readFloat32(o3)];
    assert.deepEqual(o1.shape, [b, s, heads * d]);
    for (let bi = 0; bi < b; bi++) {
      const kb = (x: Float32Array) => x.subarray(bi * heads * cap * d, (bi + 1) * heads * cap * d);
      // the reference reads [heads, S, d]: compact the cache rows
      const cut = (x: Float32Array) => {
        const out = new Float32Array(heads * S * d);
        for (let n = 0; n < heads; n++) {
          out.set(kb(x).subarray(n * cap * d, n * cap * d + S * d), n * S * d);
        }
        return out;
      };
      const qb = q.subarray(bi * heads * s * d, (bi + 1) * heads * s * d);
      const pad = info[bi * 2], ctx = info[bi * 2 + 1];
      const want = attentionRef(
        qb,
        cut(k),
        cut(v),
        heads,
        s,
        S,
        d,
        (i, j) => compactMasked(pad, ctx, past + i, j),
        c,
      );
      const wantAll = attentionRef(qb, cut(k), cut(v), heads, s, S, d, () => false, c);
      const sl = (x: Float32Array) => x.subarray(bi * s * heads * d, (bi + 1) * s * heads * d);
      assert.ok(relError(sl(g1), want) < 1e-5, `compact b=${bi}: ${relError(sl(g1), want)}`);
      assert.ok(relError(sl(g2), want) < 1e-5, `explicit b=${bi}`);
      assert.ok(relError(sl(g3), wantAll) < 1e-5, `unmasked b=${bi}`);
      assert.ok(sl(g1).every(Number.isFinite));
    }
  }
});

Deno.test("attention: argument errors name the operand", () => {
  const rec = beginRecording(gpu);
  const q = uploadTensor(gpu, new Float32Array(16), [1, 1, 2, 8]);
  const kc = uploadTensor(gpu, new Float32Array(32), [1, 1, 4, 8]);
  assert.throws(() => attention(rec, q, kc, kc, { keys: 5 }), /keys 5/);
  assert.throws(
    () =>
      attention(rec, q, kc, kc, { keys: 3, mask: uploadTensor(gpu, new Int32Array(4), [1, 2, 2]) }),
    /mask has shape/,
  );
  return submit(rec);
});

Deno.test("zero-length edges: no queries, no batch rows", async () => {
  const rec = beginRecording(gpu);
  const kc = uploadTensor(gpu, new Float32Array(2 * 4 * 8), [1, 2, 4, 8]);
  const vc = uploadTensor(gpu, new Float32Array(2 * 4 * 8), [1, 2, 4, 8]);
  const q = qkvRotary(
    rec,
    uploadTensor(gpu, new Float32Array(0), [1, 0, 48]),
    uploadTensor(gpu, new Int32Array(0), [1, 2, 0]),
    kc,
    vc,
    { heads: 2, past: 4, mode: "2d" },
  );
  assert.deepEqual(q.shape, [1, 2, 0, 8]);
  const o = attention(rec, q, kc, vc, { keys: 4 });
  assert.deepEqual(o.shape, [1, 0, 16]);
  const empty = uploadTensor(gpu, new Float32Array(0), [0, 2, 1, 8]);
  const kc0 = uploadTensor(gpu, new Float32Array(0), [0, 2, 4, 8]);
  assert.deepEqual(attention(rec, empty, kc0, kc0, { keys: 3 }).shape, [0, 1, 16]);
  await submit(rec);
  assert.equal((await readFloat32(o)).length, 0);
});

Deno.test("attention designs (workgroup, rows): odd shapes, past > 0, pad rows, every mask kind", async () => {
  // Every mask kind on the main shapes; the others (each kind and head dim compiles its own
  // pipelines, ~0.5 s each uncached) take the compact mask and one more.
  const all = ["compact", "explicit u32", "explicit random", "none"];
  for (
    const [[b, heads, s, S, cap, d, c, maskValue], kinds] of [
      [[3, 3, 13, 13, 16, 32, 2, -10000], all], // prefill, s not a multiple of 4 or 8
      [[3, 2, 1, 300, 301, 64, 3, -10000], ["compact", "none"]], // decode after 299 keys
      [[3, 2, 37, 300, 300, 32, 28, -10000], all], // chunked prefill: past 263
      [[3, 2, 7, 10, 12, 7, 1, -10000], all], // odd head dim: scalar loads
      [[3, 1, 6, 9, 9, 5, 2, -1], ["compact", "explicit random"]], // mask value near the scores
      [[3, 1, 9, 11, 11, 128, 1, -10000], ["compact"]], // largest vec4 head dim of the rows design
    ] as [number[], string[]][]
  ) {
    const shape = [b, heads, s, S, cap, d];
    const q = randomArray(b * heads * s * d, s + d, -3, 3);
    const k = randomArray(b * heads * cap * d, S + d, -3, 3);
    const v = randomArray(b * heads * cap * d, cap + d, -3, 3);
    // Row 0: plain causal (context 0); row 1: pads past the first queries' positions when
    // past > 0 (pad rows: fully masked), a context; row 2: nothing but pads (every row masked).
    const info = Int32Array.from([0, 0, Math.min(S - 1, S - s + 2), Math.ceil(S / 3), S + 1, 2]);
    const compactRule = (bi: number, i: number, j: number) =>
      compactMasked(info[bi * 2], info[bi * 2 + 1], i, j);
    const random = randomInts(b * s * S, S + 7, 0, 4); // 1 in 4 masked …
    for (let j = 0; j < S; j++) random[(b * s - 1) * S + j] = 1; // … and one row fully masked
    const randomRule = (bi: number, i: number, j: number) =>
      random[(bi * s + i - (S - s)) * S + j] !== 0;
    const explicit = new Uint32Array(b * s * S);
    for (let bi = 0; bi < b; bi++) {
      for (let qi = 0; qi < s; qi++) {
        for (let j = 0; j < S; j++) {
          explicit[(bi * s + qi) * S + j] = compactRule(bi, S - s + qi, j) ? 7 : 0;
        }
      }
    }
    const tq = uploadTensor(gpu, q, [b, heads, s, d]);
    const tk = uploadTensor(gpu, k, [b, heads, cap, d]);
    const tv = uploadTensor(gpu, v, [b, heads, cap, d]);
    const cases = [
      { name: "compact", rule: compactRule, mask: { maskInfo: uploadTensor(gpu, info, [b, 2]) } },
      {
        name: "explicit u32",
        rule: compactRule,
        mask: { mask: uploadTensor(gpu, explicit, [b, s, S]) },
      },
      {
        name: "explicit random",
        rule: randomRule,
        mask: { mask: uploadTensor(gpu, random, [b, s, S]) },
      },
      { name: "none", rule: () => false, mask: {} },
    ].filter((t) => kinds.includes(t.name));
    for (const kernel of ["workgroup", "rows"] as const) {
      const rec = beginRecording(gpu);
      const outs = cases.map((t) =>
        attention(rec, tq, tk, tv, { keys: S, layerScale: c, maskValue, kernel, ...t.mask })
      );
      await submit(rec);
      for (const [x, t] of cases.entries()) {
        const got = await readFloat32(outs[x]);
        const want = maskedAttention64(q, k, v, shape, t.rule, c, maskValue);
        const e = relError(got, want);
        assert.ok(e < 1e-5, `${kernel} ${t.name} [${shape}] c=${c} mv=${maskValue}: ${e}`);
      }
    }
  }
});

Deno.test("attention rows design: more keys than workgroup memory holds; head dims it cannot take", async () => {
  const [b, heads, s, S, d] = [1, 2, 3, 4100, 4];
  const q = randomArray(b * heads * s * d, 1, -3, 3);
  const k = randomArray(b * heads * S * d, 2, -3, 3);
  const v = randomArray(b * heads * S * d, 3, -3, 3);
  const tq = uploadTensor(gpu, q, [b, heads, s, d]);
  const tk = uploadTensor(gpu, k, [b, heads, S, d]);
  const tv = uploadTensor(gpu, v, [b, heads, S, d]);
  const rec = beginRecording(gpu);
  const o = attention(rec, tq, tk, tv, { keys: S, kernel: "rows" });
  assert.throws(
    () => attention(rec, tq, tk, tv, { keys: S, kernel: "workgroup" }),
    /4096 supported/,
  );
  // The environment variable picks the design of calls without `kernel`.
  try {
    Deno.env.set(ATTENTION_KERNEL_ENV, "workgroup");
    assert.throws(() => attention(rec, tq, tk, tv, { keys: S }), /4096 supported/);
    Deno.env.set(ATTENTION_KERNEL_ENV, "fastest");
    assert.throws(() => attention(rec, tq, tk, tv, { keys: S }), /MEDGLM_ATTENTION_KERNEL=fastest/);
  } finally {
    Deno.env.delete(ATTENTION_KERNEL_ENV);
  }
  // d = 33 (scalar, over 32) and 132 (vec4, over 128) do not fit the rows design: "auto" takes
  // the workgroup design, "rows" says why it cannot.
  const outs = [];
  for (const dd of [33, 132]) {
    const q2 = randomArray(2 * dd, dd, -3, 3), k2 = randomArray(5 * dd, dd + 1, -3, 3);
    const [tq2, tk2] = [uploadTensor(gpu, q2, [1, 1, 2, dd]), uploadTensor(gpu, k2, [1, 1, 5, dd])];
    assert.throws(() => attention(rec, tq2, tk2, tk2, { keys: 5, kernel: "rows" }), /rows design/);
    outs.push({ dd, q2, k2, o: attention(rec, tq2, tk2, tk2, { keys: 5 }) });
  }
  await submit(rec);
  const want = maskedAttention64(q, k, v, [b, heads, s, S, S, d], () => false, 1, -10000);
  assert.ok(relError(await readFloat32(o), want) < 1e-5);
  for (const { dd, q2, k2, o } of outs) {
    const want2 = maskedAttention64(q2, k2, k2, [1, 1, 2, 5, 5, dd], () => false, 1, -10000);
    assert.ok(relError(await readFloat32(o), want2) < 1e-5, `d=${dd}`);
  }
});

rowDesignTest(
  "qkvAttentionSlots equals qkvRotarySlots then attentionSlots (output and caches)",
  async () => {
    for (const [b, heads, d, cap, slots, seed] of [[1, 4, 32, 64, 2, 1], [3, 2, 8, 300, 4, 2]]) {
      const rng = createRng(seed);
      const rand = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
      const qkv = uploadTensor(gpu, rand(b * 3 * heads * d), [b, 1, 3 * heads * d]);
      // Rows in distinct slots at different lengths (one past 256 keys: the next score size).
      const info = Int32Array.from(
        { length: b * 2 },
        (_, i) => i % 2 === 0 ? (i / 2 + 1) % slots : [5, 0, 270][(i - 1) / 2],
      );
      const pos = Int32Array.from({ length: b * 2 }, (_, i) => i % 2 === 0 ? 3 + i : 1 + i);
      const infoT = uploadTensor(gpu, info, [b, 2], "i32");
      const posT = uploadTensor(gpu, pos, [b, 2, 1], "i32");
      const maxKeys = Math.max(...info.filter((_, i) => i % 2 === 1)) + 1;
      // The same earlier keys and values in both caches.
      const k = rand(slots * heads * cap * d), v = rand(slots * heads * cap * d);
      const shape = [slots, heads, cap, d];
      const caches = [0, 1].map(() => ({
        k: uploadTensor(gpu, k, shape),
        v: uploadTensor(gpu, v, shape),
      }));
      const o = { heads, layout: "interleaved" as const, maxPosition: 64, maxKeys, layerScale: 3 };
      const rec = beginRecording(gpu);
      const q = qkvRotarySlots(rec, qkv, posT, caches[0].k, caches[0].v, infoT, o);
      const want = attentionSlots(rec, q, caches[0].k, caches[0].v, infoT, o);
      const before = rec.dispatches;
      const got = qkvAttentionSlots(rec, qkv, posT, caches[1].k, caches[1].v, infoT, o);
      assert.equal(rec.dispatches - before, 1, "one dispatch");
      await submit(rec);
      const e = relError(await readTensor(got), await readTensor(want));
      assert.ok(e < 1e-6, `[${b}, ${heads}, ${d}]: ${e}`);
      for (const which of ["k", "v"] as const) {
        assert.deepEqual(await readTensor(caches[1][which]), await readTensor(caches[0][which]));
      }
      for (const t of [qkv, infoT, posT, q, want, got, ...caches.flatMap((c) => [c.k, c.v])]) {
        releaseTensor(t);
      }
    }
  },
);
