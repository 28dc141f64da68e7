// The continuous-batching scheduler over a scripted decoder (no GPU): who decodes in which step,
// the prefill budget, slots reused, aborts while queued or live, the NaN rule, decoder errors.

import assert from "node:assert/strict";
import type { Decoder } from "../serve/engine/decoder.ts";
import { createRng } from "../base/random.ts";
import { createScheduler, type SequenceRequest } from "../serve/engine/scheduler.ts";
import type { FinishReason } from "../serve/engine/types.ts";

const V = 16;
const END = 15;

interface Log {
  /** "P" per prefill, "D<n>" per decode step of n sequences, in order. */
  events: string[];
  prefills: { slot: number; ids: number[] }[];
  steps: { slot: number; id: number }[][];
  released: number[];
  idles: number;
}

/**
 * Logits that make greedy choose (last id + 1) mod 10 for every slot, so each sequence's tokens
 * are predictable; `nanAt` returns a NaN row for that step index.
 */
function scriptedDecoder(
  slots: number,
  opts: { nanAt?: number; failAt?: number; batchedPrefill?: boolean } = {},
) {
  const log: Log = { events: [], prefills: [], steps: [], released: [], idles: 0 };
  const row = (last: number) => {
    const r = new Float32Array(V);
    r[(last + 1) % 10] = 1;
    return r;
  };
  const decoder: Decoder = {
    vocabSize: V,
    maxContext: 64,
    slots,
    async prefill(slot, ids) {
      await Promise.resolve();
      log.prefills.push({ slot, ids });
      log.events.push("P");
      return row(ids[ids.length - 1]);
    },
    prefillMany: opts.batchedPrefill
      ? async (entries) => {
        await Promise.resolve();
        log.events.push(`M${entries.length}`);
        const out = new Float32Array(entries.length * V);
        entries.forEach((e, i) => {
          log.prefills.push(e);
          out.set(row(e.ids[e.ids.length - 1]), i * V);
        });
        return out;
      }
      : undefined,
    async decode(steps) {
      await new Promise((r) => setTimeout(r, 1));
      const index = log.steps.length;
      log.steps.push(steps);
      log.events.push(`D${steps.length}`);
      if (index === opts.failAt) throw new Error("device lost");
      const out = new Float32Array(steps.length * V);
      steps.forEach((s, i) => out.set(row(s.id), i * V));
      if (index === opts.nanAt) out[0] = NaN;
      return out;
    },
    release: (slot) => void log.released.push(slot),
    idle: () => void log.idles++,
    close() {},
  };
  return { decoder, log };
}

function request(
  promptIds: number[],
  maxNewTokens: number,
  extra: Partial<SequenceRequest> = {},
): { req: SequenceRequest; done: Promise<{ tokens: number[]; reason: FinishReason }> } {
  const tokens: number[] = [];
  let resolve!: (v: { tokens: number[]; reason: FinishReason }) => void;
  let reject!: (e: unknown) => void;
  const done = new Promise<{ tokens: number[]; reason: FinishReason }>((a, b) => {
    resolve = a;
    reject = b;
  });
  const req: SequenceRequest = {
    promptIds,
    settings: { temperature: 0 },
    rng: createRng(1),
    maxNewTokens,
    onToken(id) {
      tokens.push(id);
      return false;
    },
    onEnd(reason, error) {
      if (error) reject(error);
      else resolve({ tokens, reason });
    },
    ...extra,
  };
  return { req, done };
}

Deno.test("scheduler: a late request joins the running batch at the next step", async () => {
  const { decoder, log } = scriptedDecoder(4);
  const s = createScheduler(decoder, { textVocab: V, endId: END });
  const a = request([1, 2], 6);
  s.submit(a.req);
  await new Promise((r) => setTimeout(r, 5));
  const b = request([7], 3);
  s.submit(b.req);
  const [ra, rb] = await Promise.all([a.done, b.done]);
  assert.deepEqual(ra, { tokens: [3, 4, 5, 6, 7, 8], reason: "length" });
  assert.deepEqual(rb, { tokens: [8, 9, 0], reason: "length" });
  // Some step carried both sequences; steps before b arrived carried only a.
  assert.ok(log.steps.some((st) => st.length === 2), JSON.stringify(log.steps));
  assert.equal(log.steps[0].length, 1);
  assert.deepEqual(log.released.sort(), [0, 1]);
  assert.deepEqual(s.stats(), { active: 0, queued: 0, tokensGenerated: 9 });
  await s.close();
});

Deno.test("scheduler: <eop> stops and frees the slot for a queued request", async () => {
  const { decoder, log } = scriptedDecoder(1);
  const s = createScheduler(decoder, { textVocab: V, endId: 4 });
  const a = request([1], 10); // 2, 3, 4 = end
  const b = request([5], 2);
  s.submit(a.req);
  s.submit(b.req);
  assert.equal(s.stats().queued + s.stats().active, 2);
  assert.deepEqual(await a.done, { tokens: [2, 3, 4], reason: "stop" });
  assert.deepEqual(await b.done, { tokens: [6, 7], reason: "length" });
  assert.deepEqual(log.prefills.map((p) => p.slot), [0, 0], "the one slot was reused");
  await s.close();
});

Deno.test("scheduler: a stop reported by onToken ends the sequence", async () => {
  const { decoder } = scriptedDecoder(2);
  const s = createScheduler(decoder, { textVocab: V, endId: END });
  const tokens: number[] = [];
  const r = request([1], 20, {
    onToken(id) {
      tokens.push(id);
      return id === 5;
    },
  });
  s.submit(r.req);
  assert.equal((await r.done).reason, "stop");
  assert.deepEqual(tokens, [2, 3, 4, 5]);
  await s.close();
});

Deno.test("scheduler: the prefill budget lets streaming sequences step between admissions", async () => {
  const { decoder, log } = scriptedDecoder(8);
  const s = createScheduler(decoder, { textVocab: V, endId: END, prefillBudget: 4 });
  const first = request([1, 1, 1], 20);
  s.submit(first.req);
  await new Promise((r) => setTimeout(r, 5));
  const late = [0, 1, 2].map(() => request([2, 2, 2], 2));
  for (const l of late) s.submit(l.req);
  await Promise.all([first.done, ...late.map((l) => l.done)]);
  // Each late prompt (3 tokens) fills the 4-token budget alone: a decode step of the streaming
  // sequence runs between two admissions, never two prefills back to back.
  const order = log.events.join(" ");
  assert.equal(log.prefills.length, 4);
  assert.ok(!/P P/.test(order), order);
  // (each late request needs one decode step after its prefill, so it has left by the next one)
  assert.match(order, /^P (D1 )+P D2 P D2 P D2 D1/, order);
  await s.close();
});

Deno.test("scheduler: aborts free queued and live sequences at once", async () => {
  const { decoder, log } = scriptedDecoder(1);
  const s = createScheduler(decoder, { textVocab: V, endId: END });
  const liveAc = new AbortController();
  const queuedAc = new AbortController();
  const live = request([1], 1000, { signal: liveAc.signal });
  const queued = request([2], 5, { signal: queuedAc.signal });
  s.submit(live.req);
  s.submit(queued.req);
  await new Promise((r) => setTimeout(r, 10));
  queuedAc.abort();
  assert.deepEqual((await queued.done).tokens, []);
  assert.equal((await queued.done).reason, "abort");
  liveAc.abort();
  assert.equal((await live.done).reason, "abort");
  // The slot comes back and the decoder may free its cache.
  const t0 = Date.now();
  while (log.released.length === 0 || s.stats().active !== 0) {
    if (Date.now() - t0 > 2000) throw new Error("slot not released");
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.ok(log.idles > 0);
  assert.equal(log.prefills.length, 1, "the aborted queued request never took a slot");
  await s.close();
});

Deno.test("scheduler: NaN logits choose id 5 (ChatGLM's rule); decoder errors reach the caller", async () => {
  {
    const { decoder } = scriptedDecoder(2, { nanAt: 0 });
    const s = createScheduler(decoder, { textVocab: V, endId: END });
    const r = request([1], 3);
    s.submit(r.req);
    assert.deepEqual((await r.done).tokens, [2, 5, 6]);
    await s.close();
  }
  {
    const { decoder, log } = scriptedDecoder(2, { failAt: 1 });
    const s = createScheduler(decoder, { textVocab: V, endId: END });
    const r = request([1], 10);
    s.submit(r.req);
    await assert.rejects(r.done, /device lost/);
    assert.deepEqual(log.released, [0]);
    // The loop survives: the next request is served.
    const next = request([3], 2);
    s.submit(next.req);
    assert.deepEqual((await next.done).tokens, [4, 5]);
    await s.close();
  }
});

Deno.test("scheduler: close ends waiting and live sequences with abort", async () => {
  const { decoder } = scriptedDecoder(1);
  const s = createScheduler(decoder, { textVocab: V, endId: END });
  const a = request([1], 1000);
  const b = request([2], 1000);
  s.submit(a.req);
  s.submit(b.req);
  await new Promise((r) => setTimeout(r, 5));
  await s.close();
  assert.equal((await a.done).reason, "abort");
  assert.equal((await b.done).reason, "abort");
  assert.throws(() => s.submit(request([1], 1).req), /closed/);
});

Deno.test("scheduler: prompts of similar length prefill together, a short one apart", async () => {
  const { decoder, log } = scriptedDecoder(4, { batchedPrefill: true });
  const s = createScheduler(decoder, { textVocab: V, endId: END });
  const ids = (n: number, last: number) => [...new Array(n - 1).fill(0), last];
  const runs = [request(ids(12, 1), 2), request(ids(1, 3), 2), request(ids(10, 5), 2)];
  for (const r of runs) s.submit(r.req);
  const got = await Promise.all(runs.map((r) => r.done));
  assert.deepEqual(got.map((g) => g.tokens), [[2, 3], [4, 5], [6, 7]]);
  // 12 and 10 tokens pad to 24 (≤ 1.5 × 22): together; the 1-token prompt would pad to 12.
  assert.equal(log.events.slice(0, 2).join(" "), "M2 P");
  assert.deepEqual(log.prefills.map((p) => p.ids.length), [12, 10, 1]);
  await s.close();
});
