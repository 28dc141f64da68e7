// The GPU sampler's UTF-8 mask (core/kernels/sampling, `utf8`) and the advance kernel's UTF-8
// state against the host sampler (serve/engine/sampling.ts `chooseToken` with `validUtf8`): the
// same ids for the same logits, histories and seeded draws, over single-byte-token vocabularies.
import assert from "node:assert/strict";
import {
  beginCapture,
  beginRecording,
  endCapture,
  getGpu,
  replayCapture,
  submit,
} from "../core/gpu/mod.ts";
import { readTensor, releaseTensor, uploadTensor } from "../core/tensor/mod.ts";
import {
  advanceDecode,
  packSamplingRows,
  sampleTokens,
  type SamplingRow,
  utf8IdTable,
  utf8State,
} from "../core/kernels/mod.ts";
import { chooseToken, type SamplerSettings } from "../serve/engine/sampling.ts";
import { byteTokens, pendingChar } from "../serve/engine/utf8_tokens.ts";
import { createRng } from "../base/random.ts";

/** Byte b is id 3 + b, except the bytes in `missing`. */
function table(V: number, missing: (b: number) => boolean = () => false) {
  return byteTokens(V, Array.from({ length: 256 }, (_, b) => missing(b) ? -1 : 3 + b));
}

/** Tails that leave every kind of state: open characters of 2–4 bytes, broken ones, none. */
const TAILS = [
  [],
  [0x41],
  [0xe5],
  [0xe5, 0x8c],
  [0xe5, 0x8c, 0xbb],
  [0xe0],
  [0xed],
  [0xf0],
  [0xf0, 0x90],
  [0xf0, 0x90, 0x80],
  [0xf4],
  [0xc3],
  [0x8c],
  [0xe5, 0x41],
  [0xe0, 0x80],
  [0xff],
  [0xc3, 0xa9, 0xe5],
];

interface Case {
  logits: Float32Array;
  settings: SamplerSettings;
  history: number[];
  seed: number;
}

function cases(V: number, n: number, seed: number): Case[] {
  const rng = createRng(seed);
  const pick = <T>(xs: T[]) => xs[rng.below(xs.length)];
  return Array.from({ length: n }, (_, r) => {
    // Byte tokens likely: most of the mass on them, some on text ids.
    const logits = Float32Array.from(
      { length: V },
      (_, i) => (rng.next() - 0.5) * 6 + (i >= 3 && i < 259 ? 2 : 0),
    );
    const tail = TAILS[r % TAILS.length];
    const history = [
      ...Array.from({ length: rng.below(6) }, () => 300 + rng.below(V - 300)),
      ...tail.map((b) => 3 + b),
    ];
    const sampled = r % 2 === 1;
    return {
      logits,
      history,
      seed: rng.nextU32(),
      settings: {
        temperature: sampled ? pick([0.5, 1, 1.5]) : 0,
        topK: pick([0, 0, 5, 40]),
        topP: pick([1, 0.9, 0.5]),
        repetitionPenalty: pick([1, 1.25, 2]),
        validUtf8: r % 7 !== 3,
      },
    };
  });
}

/** One sampling dispatch with the mask; the host's ids beside the GPU's. */
async function both(V: number, textVocab: number, bytes: ReturnType<typeof table>, cs: Case[]) {
  const gpu = await getGpu();
  const host = cs.map((c) =>
    chooseToken(c.logits.slice(), textVocab, c.settings, c.history, createRng(c.seed), bytes)
  );
  const rows: SamplingRow[] = cs.map((c) => ({
    ...c.settings,
    uniform: (c.settings.temperature ?? 0) > 0 ? createRng(c.seed).next() : 0,
    history: c.history,
  }));
  const packed = packSamplingRows(rows);
  const words = new Uint32Array(packed.settings.length + 256);
  words.set(packed.settings);
  words.set(utf8IdTable(bytes.idOf), packed.settings.length);
  const n = cs.length;
  const ring = new Int32Array(2 * n).fill(-7);
  cs.forEach((c, i) => ring[i] = utf8State(c.history, bytes.byteOf));
  const all = new Float32Array(n * V);
  cs.forEach((c, i) => all.set(c.logits, i * V));
  const logits = uploadTensor(gpu, all, [n, V]);
  const s = uploadTensor(gpu, words, [words.length]);
  const h = uploadTensor(gpu, packed.history, [packed.history.length]);
  const out = uploadTensor(gpu, ring, [ring.length]);
  const rec = beginRecording(gpu);
  sampleTokens(rec, logits, textVocab, s, h, {
    out,
    outOffset: n,
    utf8: { table: packed.settings.length, state: 0 },
  });
  await submit(rec);
  const got = [...(await readTensor(out) as Int32Array).subarray(n)];
  for (const t of [logits, s, h, out]) releaseTensor(t);
  return { host, gpu: got };
}

Deno.test("utf8State keeps the trailing byte tokens pendingChar looks at", () => {
  const bytes = table(600);
  for (const tail of TAILS) {
    const ids = [400, ...tail.map((b) => 3 + b)];
    const st = utf8State(ids, bytes.byteOf);
    const kept = tail.slice(-3);
    assert.equal(st & 3, kept.length, `tail ${tail}`);
    kept.forEach((b, j) => assert.equal((st >>> (8 * (kept.length - j))) & 0xff, b));
    // The open character as the host sees it depends only on those bytes.
    assert.deepEqual(
      pendingChar(kept.map((b) => 3 + b), bytes.byteOf),
      pendingChar(ids, bytes.byteOf),
    );
  }
  assert.equal(utf8State([3 + 0xe5, 999], table(600).byteOf), 0, "ids past the table end it");
});

Deno.test("GPU UTF-8 mask: ids equal the host's (greedy and sampled, every kind of open character)", async () => {
  const V = 600, textVocab = 590;
  let masked = 0;
  for (const seed of [1, 2, 3]) {
    const cs = cases(V, 68, seed);
    const bytes = table(V);
    const { host, gpu } = await both(V, textVocab, bytes, cs);
    assert.deepEqual(gpu, host, `seed ${seed}`);
    // The mask matters: without it the host would choose differently for many rows.
    masked += cs.filter((c, i) =>
      chooseToken(
        c.logits.slice(),
        textVocab,
        { ...c.settings, validUtf8: false },
        c.history,
        createRng(c.seed),
      ) !== host[i]
    ).length;
  }
  assert.ok(masked > 30, `only ${masked} rows changed by the mask`);
});

Deno.test("GPU UTF-8 mask: missing bytes, continuations past the text vocabulary", async () => {
  const V = 600;
  // No continuation bytes at all: an open character leaves the row alone (as the host).
  const noCont = table(V, (b) => b >= 0x80 && b <= 0xbf);
  const a = await both(V, 590, noCont, cases(V, 34, 9));
  assert.deepEqual(a.gpu, a.host);
  // Continuation bytes past textVocab (ids 131..194 ≥ 150): the same, as they cannot be chosen.
  const b = await both(V, 150, table(V), cases(V, 34, 10));
  assert.deepEqual(b.gpu, b.host);
  // Some bytes missing here and there.
  const c = await both(V, 590, table(V, (x) => x % 5 === 1), cases(V, 68, 11));
  assert.deepEqual(c.gpu, c.host);
});

Deno.test("decode group with the UTF-8 mask: steps replayed, states advanced on the GPU, ids equal the host loop's", async () => {
  const gpu = await getGpu();
  const V = 600, textVocab = 590, rows = 17, steps = 8, stride = 64;
  const bytes = table(V);
  const cs = cases(V, rows, 21);
  // The same logits every step; each step's choice changes the state (and penalty) of the next.
  const host = cs.map((c) => {
    const rng = createRng(c.seed);
    const seen = [...c.history];
    const out: number[] = [];
    for (let j = 0; j < steps; j++) {
      const id = chooseToken(c.logits.slice(), textVocab, c.settings, seen, rng, bytes);
      out.push(id);
      seen.push(id);
    }
    return out;
  });
  const draws = cs.map((c) => {
    const rng = createRng(c.seed);
    return Array.from({ length: steps }, () => (c.settings.temperature ?? 0) > 0 ? rng.next() : 0);
  });
  const first = packSamplingRows(
    cs.map((c, i) => ({ ...c.settings, uniform: draws[i][0], history: c.history })),
  );
  const settings = new Uint32Array(steps * rows * 8 + 256);
  for (let j = 0; j < steps; j++) {
    const p = packSamplingRows(cs.map((c, i) => ({ ...c.settings, uniform: draws[i][j] })));
    for (let i = 0; i < rows; i++) {
      p.settings[i * 8 + 5] = first.settings[i * 8 + 5];
      p.settings[i * 8 + 6] = first.settings[i * 8 + 6];
    }
    settings.set(p.settings.subarray(0, rows * 8), j * rows * 8);
  }
  settings.set(utf8IdTable(bytes.idOf), steps * rows * 8);
  const ringData = new Int32Array((steps + 1) * stride).fill(-7);
  cs.forEach((c, i) => ringData[i] = utf8State(c.history, bytes.byteOf));
  const all = new Float32Array(rows * V);
  cs.forEach((c, i) => all.set(c.logits, i * V));
  const logits = uploadTensor(gpu, all, [rows, V]);
  const s = uploadTensor(gpu, settings, [settings.length]);
  const h = uploadTensor(gpu, first.history, [first.history.length]);
  const ring = uploadTensor(gpu, ringData, [ringData.length]);
  const byteOf = uploadTensor(gpu, Int32Array.from(bytes.byteOf), [V], "i32");
  const counter = uploadTensor(gpu, new Uint32Array(1), [1]);
  const ids = uploadTensor(gpu, new Int32Array(rows), [rows]);
  const pos = uploadTensor(gpu, new Int32Array(rows * 2), [rows, 2, 1]);
  const info = uploadTensor(gpu, new Int32Array(rows * 2), [rows, 2]);
  const rec = beginRecording(gpu);
  beginCapture(rec);
  sampleTokens(rec, logits, textVocab, s, h, {
    out: ring,
    outOffset: stride,
    recent: { start: stride, count: 0, stride },
    step: { counter, steps, stride },
    utf8: { table: steps * rows * 8, state: 0 },
  });
  advanceDecode(rec, rows, {
    counter,
    ring,
    first: stride,
    stride,
    ids,
    bumps: [{ tensor: pos, stride: 2, offset: 1 }, { tensor: info, stride: 2, offset: 1 }],
    utf8: { byteOf, state: 0 },
  });
  const captured = endCapture(rec);
  for (let j = 1; j < steps; j++) replayCapture(captured);
  await submit(rec);
  const out = await readTensor(ring) as Int32Array;
  const got = cs.map((_, i) => Array.from({ length: steps }, (_, j) => out[(j + 1) * stride + i]));
  assert.deepEqual(got, host);
  // The states after the group: those of each row's whole sequence.
  cs.forEach((c, i) =>
    assert.equal(out[i] >>> 0, utf8State([...c.history, ...host[i]], bytes.byteOf), `row ${i}`)
  );
  // The group spells characters across steps: some rows chose byte tokens in a row.
  assert.ok(host.some((r) => r.filter((id) => id >= 3 && id < 259).length >= 3));
  for (const t of [logits, s, h, ring, byteOf, counter, ids, pos, info]) releaseTensor(t);
});
