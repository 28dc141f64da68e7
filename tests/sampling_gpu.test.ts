// The GPU sampler (core/kernels/sampling) against the host sampler (serve/engine/sampling.ts):
// the same ids for the same logits, settings and seeded draws; greedy exact; the UTF-8 mask and
// the advance kernel's UTF-8 state included.
import assert from "node:assert/strict";
import {
  beginCapture,
  beginRecording,
  endCapture,
  getGpu,
  replayCapture,
  submit,
} from "../core/gpu/mod.ts";
import { readTensor, releaseTensor, type Tensor, uploadTensor } from "../core/tensor/mod.ts";
import {
  advanceDecode,
  packSamplingRows,
  sampleTokens,
  type SamplingRow,
  utf8IdTable,
  utf8State,
} from "../core/kernels/mod.ts";
import { argmax, chooseToken, type SamplerSettings } from "../serve/engine/sampling.ts";
import { type ByteTokens, byteTokens, pendingChar } from "../serve/engine/utf8_tokens.ts";
import { createRng } from "../base/random.ts";

interface Case {
  logits: Float32Array;
  settings: SamplerSettings;
  history: number[];
  seed: number;
}

/**
 * Runs `cases` (rows of `V` logits) through the GPU sampler; the host's ids beside them. With the
 * vocabulary's single-byte tokens `bytes`, rows whose settings ask for `validUtf8` are masked (each
 * row's trailing bytes from its history, as a decode group passes them).
 */
async function both(V: number, textVocab: number, cases: Case[], bytes?: ByteTokens) {
  const gpu = await getGpu();
  const host = cases.map((c) =>
    chooseToken(c.logits.slice(), textVocab, c.settings, c.history, createRng(c.seed), bytes)
  );
  const rows: SamplingRow[] = cases.map((c) => ({
    ...c.settings,
    // The host draws once per sampled step; the GPU takes that draw as input.
    uniform: (c.settings.temperature ?? 0) > 0 ? createRng(c.seed).next() : 0,
    history: c.history,
  }));
  const { settings, history } = packSamplingRows(rows);
  const n = cases.length;
  const all = new Float32Array(n * V);
  cases.forEach((c, i) => all.set(c.logits, i * V));
  const logits = uploadTensor(gpu, all, [n, V]);
  // With the mask: its byte ids after the settings, the rows' states in front of their ids.
  const words = bytes ? Uint32Array.from([...settings, ...utf8IdTable(bytes.idOf)]) : settings;
  const s = uploadTensor(gpu, words, [words.length]);
  const h = uploadTensor(gpu, history, [history.length]);
  const ring = bytes
    ? uploadTensor(
      gpu,
      Int32Array.from([
        ...cases.map((c) => utf8State(c.history, bytes.byteOf)),
        ...cases.map(() => -7),
      ]),
      [2 * n],
    )
    : undefined;
  const rec = beginRecording(gpu);
  const ids = sampleTokens(
    rec,
    logits,
    textVocab,
    s,
    h,
    ring ? { out: ring, outOffset: n, utf8: { table: settings.length, state: 0 } } : {},
  );
  await submit(rec);
  const out = [...(await readTensor(ids) as Int32Array).subarray(ring ? n : 0)];
  for (const t of [logits, s, h, ids]) releaseTensor(t);
  return { host, gpu: out };
}

function randomCases(n: number, V: number, seed: number, greedy: boolean): Case[] {
  const rng = createRng(seed);
  const normal = () => {
    const a = rng.next() || 1e-12;
    return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * rng.next());
  };
  const pick = <T>(xs: T[]) => xs[rng.below(xs.length)];
  return Array.from({ length: n }, (_, r) => {
    const scale = pick([1, 3, 6]);
    const logits = Float32Array.from({ length: V }, () => normal() * scale);
    // Some exact ties, to check the lower-id-first order.
    if (r % 3 === 0) { for (let i = 0; i < 8; i++) logits[rng.below(V)] = logits[0]; }
    const history = Array.from({ length: rng.below(40) }, () => rng.below(V));
    return {
      logits,
      history,
      seed: rng.nextU32(),
      settings: {
        temperature: greedy ? 0 : pick([0.3, 0.7, 0.95, 1.5]),
        topK: pick([0, 0, 1, 5, 40]),
        topP: pick([1, 1, 0.9, 0.7, 0.3]),
        repetitionPenalty: pick([1, 1.25, 1.5, 2, 1.1]),
      },
    };
  });
}

Deno.test("GPU greedy ids equal the host's (penalties, ties, non-text ids)", async () => {
  for (const [V, textVocab, seed] of [[300, 300, 1], [2048, 2000, 2], [5000, 4990, 3]]) {
    const { host, gpu } = await both(V, textVocab, randomCases(64, V, seed, true));
    assert.deepEqual(gpu, host, `V=${V}`);
  }
});

Deno.test("GPU sampled ids equal the host's for the same seeded draws", async () => {
  let rows = 0;
  let notGreedy = 0;
  for (const [V, textVocab, seed] of [[300, 290, 11], [1000, 1000, 12], [2048, 2000, 13]]) {
    for (let batch = 0; batch < 4; batch++) {
      const cases = randomCases(64, V, seed * 100 + batch, false);
      const { host, gpu } = await both(V, textVocab, cases);
      const diff = host.flatMap((id, i) => id === gpu[i] ? [] : [{ i, host: id, gpu: gpu[i] }]);
      assert.deepEqual(diff, [], `V=${V} batch ${batch}`);
      rows += cases.length;
      // The draws matter: many sampled ids are not the row's argmax.
      notGreedy += host.filter((id, i) => id !== argmax(cases[i].logits, textVocab)).length;
    }
  }
  assert.equal(rows, 768);
  assert.ok(notGreedy > 200, `only ${notGreedy} sampled ids differ from the argmax`);
});

Deno.test("GPU sampler writes into a ring at an offset and checks its arguments", async () => {
  const gpu = await getGpu();
  const logits = uploadTensor(gpu, new Float32Array([0, 5, 1, 9, 2, 0]), [2, 3]);
  const { settings, history } = packSamplingRows([{}, {}]);
  const s = uploadTensor(gpu, settings, [settings.length]);
  const h = uploadTensor(gpu, history, [history.length]);
  const ring = uploadTensor(gpu, new Int32Array([7, 7, 7, 7, 7]), [5]);
  const rec = beginRecording(gpu);
  sampleTokens(rec, logits, 3, s, h, { out: ring, outOffset: 2 });
  assert.throws(() => sampleTokens(rec, logits, 3, s, h, { out: ring, outOffset: 4 }), /fit/);
  await submit(rec);
  assert.deepEqual([...(await readTensor(ring))], [7, 7, 1, 0, 7]);
  // NaN or ±Infinity anywhere in a row: id 5, as the scheduler does on the host.
  const bad = uploadTensor(gpu, Float32Array.from({ length: 16 }, (_, i) => i === 9 ? NaN : i), [
    2,
    8,
  ]);
  const s2 = uploadTensor(gpu, packSamplingRows([{}, {}]).settings, [16]);
  const rec2 = beginRecording(gpu);
  const badIds = sampleTokens(rec2, bad, 8, s2, h);
  await submit(rec2);
  assert.deepEqual([...(await readTensor(badIds))], [7, 5]);
  for (const t of [bad, s2, badIds]) releaseTensor(t);
  assert.throws(() => packSamplingRows([{ repetitionPenalty: 0 }]), /row 0: repetition penalty/);
  assert.throws(() => packSamplingRows([{ uniform: 1 }]), /uniform/);
  for (const t of [logits, s, h, ring]) releaseTensor(t);
});

Deno.test("GPU sampled ids equal the host's on a 130k vocabulary (flat and peaked rows)", async () => {
  // The real ChatGLM-6B vocabulary: the serial walk this replaces gave up after ~60 candidates
  // here; the threshold search covers every candidate.
  const V = 130528, textVocab = 130000;
  const rng = createRng(77);
  const cases: Case[] = [
    { temperature: 0.95, topP: 0.7 },
    { temperature: 1.5 },
    { temperature: 0.8, topK: 40, topP: 0.9, repetitionPenalty: 1.25 },
    { temperature: 0.95, topP: 0.7 },
    { temperature: 0, repetitionPenalty: 1.5 },
  ].map((settings, r) => {
    // Rows 0–2 flat (every id a candidate), rows 3–4 peaked.
    const scale = r < 3 ? 0.05 : 6;
    const logits = Float32Array.from({ length: V }, () => (rng.next() - 0.5) * 2 * scale);
    return {
      logits,
      settings,
      history: Array.from({ length: 30 }, () => rng.below(textVocab)),
      seed: 500 + r,
    };
  });
  const { host, gpu } = await both(V, textVocab, cases);
  assert.deepEqual(gpu, host);
});

/**
 * A decode group's sampling and advance as `decodeGroupOf` records them: step 0 captured (ids
 * into ring rows 1.., UTF-8 states in row 0 when masked), replayed for the other steps.
 */
function groupSteps(
  rec: ReturnType<typeof beginRecording>,
  t: Record<"logits" | "s" | "h" | "ring" | "counter" | "ids" | "pos" | "info", Tensor> & {
    textVocab: number;
  },
  o: { rows: number; steps: number; stride: number; utf8?: { table: number; byteOf: Tensor } },
) {
  const { rows, steps, stride } = o;
  beginCapture(rec);
  sampleTokens(rec, t.logits, t.textVocab, t.s, t.h, {
    out: t.ring,
    outOffset: stride,
    recent: { start: stride, count: 0, stride },
    step: { counter: t.counter, steps, stride },
    ...(o.utf8 ? { utf8: { table: o.utf8.table, state: 0 } } : {}),
  });
  advanceDecode(rec, rows, {
    counter: t.counter,
    ring: t.ring,
    first: stride,
    stride,
    ids: t.ids,
    bumps: [{ tensor: t.pos, stride: 2, offset: 1 }, { tensor: t.info, stride: 2, offset: 1 }],
    ...(o.utf8 ? { utf8: { byteOf: o.utf8.byteOf, state: 0 } } : {}),
  });
  const captured = endCapture(rec);
  for (let j = 1; j < steps; j++) replayCapture(captured);
  return captured;
}

Deno.test("decode group steps: the step counter picks each step's settings and ring row, replayed", async () => {
  const gpu = await getGpu();
  // Two rows, three steps, the same logits each step: step 0 greedy; step 1 a penalty so strong
  // that step 0's id (a recent id in the ring) loses; step 2 samples with a draw.
  const V = 6, rows = 2, steps = 3, stride = 64;
  const logits = uploadTensor(
    gpu,
    new Float32Array([1, 5, 4, 0, 2, 3, 9, 1, 2, 8, 0, 7]),
    [rows, V],
  );
  const step = (s: number): SamplingRow[] =>
    s === 0
      ? [{}, {}]
      : s === 1
      ? [{ repetitionPenalty: 100 }, { repetitionPenalty: 100 }]
      : [{ temperature: 1, uniform: 0.99 }, { temperature: 1, uniform: 0 }];
  const packed = [0, 1, 2].map((s) => packSamplingRows(step(s)).settings);
  const settings = new Uint32Array(packed.flatMap((p) => [...p]));
  const s = uploadTensor(gpu, settings, [settings.length]);
  const h = uploadTensor(gpu, new Int32Array(1), [1]);
  const ring = uploadTensor(gpu, new Int32Array((steps + 1) * stride).fill(-7), [
    (steps + 1) * stride,
  ]);
  const counter = uploadTensor(gpu, new Uint32Array(1), [1]);
  const ids = uploadTensor(gpu, new Int32Array([0, 0]), [rows]);
  const pos = uploadTensor(gpu, new Int32Array([3, 1, 4, 1]), [rows, 2, 1]);
  const info = uploadTensor(gpu, new Int32Array([0, 10, 1, 20]), [rows, 2]);
  const rec = beginRecording(gpu);
  const captured = groupSteps(rec, { logits, textVocab: V, s, h, ring, counter, ids, pos, info }, {
    rows,
    steps,
    stride,
  });
  assert.equal(captured.dispatches, 2);
  assert.equal(rec.dispatches, 6);
  await submit(rec);
  const out = await readTensor(ring) as Int32Array;
  const at = (j: number) => [...out.subarray((j + 1) * stride, (j + 1) * stride + rows)];
  // Step 0: argmax (1, 0). Step 1: those divided by 100: the next best (2, 3). Step 2: the
  // penalty is off again; row 0 draws 0.99 (the last candidates), row 1 draws 0 (its argmax).
  assert.deepEqual(at(0), [1, 0]);
  assert.deepEqual(at(1), [2, 3]);
  const host = chooseToken(
    new Float32Array([1, 5, 4, 0, 2, 3]),
    V,
    { temperature: 1 },
    [],
    { next: () => 0.99 } as unknown as ReturnType<typeof createRng>,
  );
  assert.deepEqual(at(2), [host, 0]);
  assert.deepEqual([...(await readTensor(ids))], at(2), "the next step's ids are the last ones");
  assert.deepEqual([...(await readTensor(pos))], [3, 4, 4, 4], "block positions +3");
  assert.deepEqual([...(await readTensor(info))], [0, 13, 1, 23], "lengths +3");
  assert.deepEqual([...(await readTensor(counter))], [3]);
  for (const t of [logits, s, h, ring, counter, ids, pos, info]) releaseTensor(t);
});

// The UTF-8 mask (`utf8`): single-byte-token vocabularies, every kind of open character.

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

function utf8Cases(V: number, n: number, seed: number): Case[] {
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
    const cs = utf8Cases(V, 68, seed);
    const bytes = table(V);
    const { host, gpu } = await both(V, textVocab, cs, bytes);
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
  const a = await both(V, 590, utf8Cases(V, 34, 9), noCont);
  assert.deepEqual(a.gpu, a.host);
  // Continuation bytes past textVocab (ids 131..194 ≥ 150): the same, as they cannot be chosen.
  const b = await both(V, 150, utf8Cases(V, 34, 10), table(V));
  assert.deepEqual(b.gpu, b.host);
  // Some bytes missing here and there.
  const c = await both(V, 590, utf8Cases(V, 68, 11), table(V, (x) => x % 5 === 1));
  assert.deepEqual(c.gpu, c.host);
});

Deno.test("decode group with the UTF-8 mask: steps replayed, states advanced on the GPU, ids equal the host loop's", async () => {
  const gpu = await getGpu();
  const V = 600, textVocab = 590, rows = 17, steps = 8, stride = 64;
  const bytes = table(V);
  const cs = utf8Cases(V, rows, 21);
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
  groupSteps(rec, { logits, textVocab, s, h, ring, counter, ids, pos, info }, {
    rows,
    steps,
    stride,
    utf8: { table: steps * rows * 8, byteOf },
  });
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
