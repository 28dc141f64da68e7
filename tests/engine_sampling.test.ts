import assert from "node:assert/strict";
import { applyRepetitionPenalty, argmax, chooseToken } from "../serve/engine/sampling.ts";
import { createRng } from "../base/random.ts";
import { createTextStream } from "../serve/engine/text_stream.ts";

Deno.test("argmax takes the first index on ties and honours the limit", () => {
  assert.deepEqual(argmax([1, 3, 3, 2]), 1);
  assert.deepEqual(argmax([1, 3, 9, 2], 2), 1);
});

Deno.test("greedy never picks a non-text id", () => {
  const row = new Float32Array([0.1, 0.5, 0.2, 9, 9]);
  assert.deepEqual(chooseToken(row, 3, {}, [], createRng(1)), 1);
});

Deno.test("repetition penalty divides positive and multiplies negative logits", () => {
  const row = new Float32Array([2, -2, 1]);
  applyRepetitionPenalty(row, [0, 1, 1], 2);
  assert.deepEqual([...row], [1, -4, 1]);
  assert.throws(() =>
    chooseToken(new Float32Array(3), 3, { repetitionPenalty: 0 }, [], createRng(1))
  );
});

Deno.test("seeded sampling is reproducible and follows the distribution", () => {
  const logits = new Float32Array([0, Math.log(3), -100, 5]);
  const draw = (seed: number) => {
    const rng = createRng(seed);
    return Array.from(
      { length: 4000 },
      () => chooseToken(logits.slice(), 3, { temperature: 1 }, [], rng),
    );
  };
  assert.deepEqual(draw(7), draw(7));
  const counts = [0, 0, 0];
  for (const t of draw(7)) counts[t]++;
  assert.deepEqual(counts[2], 0);
  const ratio = counts[1] / counts[0];
  assert.ok(ratio > 2.6 && ratio < 3.4, `expected about 3:1, got ${counts}`);
});

Deno.test("top-k and top-p cut the tail", () => {
  const logits = new Float32Array([3, 2, 1, 0]);
  const rng = createRng(3);
  for (let i = 0; i < 300; i++) {
    assert.deepEqual(chooseToken(logits.slice(), 4, { temperature: 1, topK: 1 }, [], rng), 0);
    const t = chooseToken(logits.slice(), 4, { temperature: 1, topP: 0.7 }, [], rng);
    assert.ok(t === 0 || t === 1, `top-p 0.7 should keep ids 0 and 1 only, got ${t}`);
  }
});

// A toy vocabulary: id i decodes to PIECES[i]; byte-like pieces build a multi-byte character.
const PIECES = ["你", "好", ",", "世", "界", "\uFFFD", "E", "N", "D", " "];
const decode = (ids: number[]) => {
  let s = ids.map((i) => PIECES[i]).join("");
  // ids 5,5 stand for the two halves of one character: only complete when both arrived.
  s = s.replace(/\uFFFD\uFFFD/g, "🙂");
  return s;
};
const punct = (s: string) => s.trim().replace(/([\u4e00-\u9fff]),/g, "$1，");

Deno.test("text deltas are append-only and concatenate to the post-processed answer", () => {
  const ids = [0, 1, 2, 3, 4, 5, 5, 9, 0];
  const stream = createTextStream({ decode, postProcess: punct });
  let out = "";
  for (const id of ids) {
    const { delta } = stream.push(id);
    assert.ok(!delta.includes("\uFFFD"), "a partial character was emitted");
    out += delta;
  }
  out += stream.finish();
  assert.deepEqual(out, punct(decode(ids)));
  assert.deepEqual(out, "你好，世界🙂 你");
});

Deno.test("a stop string ends the answer before it, even when split over tokens", () => {
  const stream = createTextStream({ decode, postProcess: (s) => s, stop: ["END"] });
  let out = "";
  let stopped = false;
  for (const id of [0, 1, 6, 7, 8, 3]) {
    const r = stream.push(id);
    out += r.delta;
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  assert.ok(stopped);
  assert.deepEqual(out, "你好");
  assert.deepEqual(stream.finish(), "");
});
