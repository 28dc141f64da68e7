// Byte-fallback tokens and UTF-8 (issue 19): the streaming decoder never shows U+FFFD for bytes
// that may still complete a character and drops them when the answer is cut; the sampler's
// `validUtf8` option masks byte tokens that cannot continue valid UTF-8. The engine is driven by
// a scripted decoder (logits chosen by the test), so no GPU is needed.
import assert from "node:assert/strict";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { createRng } from "../base/random.ts";
import { createTextStream } from "../serve/engine/text_stream.ts";
import { chooseToken, maskInvalidUtf8 } from "../serve/engine/sampling.ts";
import { byteTokens, pendingChar } from "../serve/engine/utf8_tokens.ts";
import { buildEngine } from "../serve/engine/engine.ts";
import type { Decoder } from "../serve/engine/decoder.ts";
import { createApp } from "../serve/http/app.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const tok = await loadTokenizer(DIR);
const bytes = byteTokens(tok.textVocabSize, tok.sp.model.byteIds, tok.numImageTokens);
const B = (b: number) => bytes.idOf[b];
// 𠀀 (U+20000) has no piece in the vocabulary: it is spelled F0 A0 80 80.
const RARE = [B(0xf0), B(0xa0), B(0x80), B(0x80)];
const HEAD = tok.encode("头痛", { special: false });
const TAIL = tok.encode("好", { special: false });

Deno.test("the fixture spells a rare character in byte tokens", () => {
  assert.deepEqual(tok.encode("𠀀", { special: false }).slice(-4), RARE);
  assert.ok(RARE.every((id) => id >= 0));
});

Deno.test("pendingChar: a valid unfinished character at the end, nothing else", () => {
  const p = (...b: number[]) => pendingChar([...HEAD, ...b.map(B)], bytes.byteOf);
  assert.deepEqual(p(0xf0), { count: 1, next: [0x90, 0xbf] });
  assert.deepEqual(p(0xf0, 0xa0), { count: 2, next: [0x80, 0xbf] });
  assert.deepEqual(p(0xf0, 0xa0, 0x80), { count: 3, next: [0x80, 0xbf] });
  assert.equal(p(0xf0, 0xa0, 0x80, 0x80), null, "complete");
  assert.deepEqual(p(0xe5), { count: 1, next: [0x80, 0xbf] });
  assert.deepEqual(p(0xed), { count: 1, next: [0x80, 0x9f] }, "no surrogates");
  assert.equal(p(0xf0, 0x80), null, "overlong: can never complete");
  assert.equal(p(0x80), null, "a stray continuation byte");
  assert.equal(p(0xff), null);
  assert.equal(p(0x41), null, "ASCII byte");
  assert.equal(pendingChar(HEAD, bytes.byteOf), null);
});

function stream(stop?: string[]) {
  return createTextStream({
    decode: (ids) => tok.decode(ids),
    postProcess: (t) => t,
    stop,
    byteOf: bytes.byteOf,
  });
}

Deno.test("text stream: bytes of a character are never shown as U+FFFD while it is spelled", () => {
  const s = stream();
  const deltas: string[] = [];
  for (const id of [...HEAD, ...RARE, ...TAIL, ...RARE]) deltas.push(s.push(id).delta);
  deltas.push(s.finish());
  assert.ok(deltas.every((d) => !d.includes("\ufffd")), JSON.stringify(deltas));
  const all = [...HEAD, ...RARE, ...TAIL, ...RARE];
  assert.equal(deltas.join(""), tok.decode(all));
  assert.match(deltas.join(""), /^头痛𠀀 ?好𠀀$/);
});

Deno.test("text stream: an answer cut inside a character ends without a broken one", () => {
  for (let cut = 1; cut < 4; cut++) {
    const s = stream();
    let text = "";
    for (const id of [...HEAD, ...RARE.slice(0, cut)]) text += s.push(id).delta;
    text += s.finish();
    assert.equal(text, "头痛", `cut after ${cut} of 4 bytes`);
  }
  // Bytes that can never complete (a stray continuation byte followed by text) are invalid UTF-8:
  // they show as U+FFFD once decided, as SentencePiece decodes them.
  const s = stream();
  let text = "";
  for (const id of [...HEAD, B(0x80), ...TAIL]) text += s.push(id).delta;
  text += s.finish();
  assert.equal(text, tok.decode([...HEAD, B(0x80), ...TAIL]));
  assert.match(text, /^头痛\ufffd ?好$/);
});

Deno.test("validUtf8 masks byte tokens that cannot continue valid UTF-8", () => {
  const V = tok.textVocabSize;
  const row = (best: number[]) => {
    const r = new Float32Array(V);
    best.forEach((id, i) => r[id] = 10 - i);
    return r;
  };
  // No character open: a stray continuation byte is the model's favourite, the next one wins.
  const stray = row([B(0x80), TAIL[0]]);
  assert.equal(chooseToken(stray.slice(), V, {}, HEAD, createRng(1), bytes), B(0x80));
  assert.equal(
    chooseToken(stray.slice(), V, { validUtf8: true }, HEAD, createRng(1), bytes),
    TAIL[0],
  );
  // F0 open: only 90–BF may follow; plain text, <eop> and 0x80 are masked.
  const open = [...HEAD, B(0xf0)];
  const afterLead = row([tok.eopId, TAIL[0], B(0x80), B(0xa0)]);
  assert.equal(
    chooseToken(afterLead.slice(), V, { validUtf8: true }, open, createRng(1), bytes),
    B(0xa0),
  );
  // Sampling draws only among allowed ids.
  for (let seed = 0; seed < 20; seed++) {
    const id = chooseToken(
      afterLead.slice(),
      V,
      { validUtf8: true, temperature: 5 },
      open,
      createRng(seed),
      bytes,
    );
    const b = bytes.byteOf[id];
    assert.ok(b >= 0x90 && b <= 0xbf, `seed ${seed}: id ${id}`);
  }
  // A vocabulary without the needed bytes: the row is left as it is.
  const none = { byteOf: bytes.byteOf, idOf: new Int32Array(256).fill(-1) };
  const r = afterLead.slice();
  maskInvalidUtf8(r, V, none, open);
  assert.deepEqual(r, afterLead);
});

/** A decoder whose logits pick the next id of a script (one script for every slot). */
function scriptedDecoder(script: number[], vocab: number): Decoder {
  const step = new Map<number, number>();
  const logits = (slot: number) => {
    const i = step.get(slot) ?? 0;
    step.set(slot, i + 1);
    const row = new Float32Array(vocab);
    row[script[Math.min(i, script.length - 1)]] = 10;
    // A stray continuation byte as runner-up everywhere: validUtf8 must never pick it.
    return row;
  };
  return {
    vocabSize: vocab,
    maxContext: 256,
    slots: 2,
    prefill: (slot) => Promise.resolve(logits(slot)),
    decode: (steps) => {
      const out = new Float32Array(steps.length * vocab);
      steps.forEach((s, k) => out.set(logits(s.slot), k * vocab));
      return Promise.resolve(out);
    },
    release: (slot) => void step.delete(slot),
    idle: () => {},
    close: () => {},
  };
}

Deno.test("engine + HTTP: max_tokens cutting a character gives no U+FFFD", async () => {
  const script = [...HEAD, ...RARE, tok.eopId];
  const engine = buildEngine({
    decoder: scriptedDecoder(script, tok.textVocabSize),
    tokenizer: tok,
  });
  try {
    const app = createApp(engine);
    for (let maxTokens = HEAD.length + 1; maxTokens <= script.length; maxTokens++) {
      for (const stream of [false, true]) {
        const res = await app.request("/v1/chat/completions", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            messages: [{ role: "user", content: "?" }],
            max_tokens: maxTokens,
            temperature: 0,
            stream,
          }),
        });
        const raw = await res.text();
        assert.ok(!raw.includes("\\ufffd") && !raw.includes("\ufffd"), `${maxTokens}: ${raw}`);
        const want = maxTokens >= HEAD.length + 4 ? "头痛𠀀" : "头痛";
        if (!stream) assert.equal(JSON.parse(raw).choices[0].message.content, want);
        else {
          const text = raw.split("\n\n").filter((e) => e.startsWith("data: {"))
            .map((e) => JSON.parse(e.slice(6)).choices[0].delta.content ?? "").join("");
          assert.equal(text, want, `streamed, max_tokens ${maxTokens}`);
        }
      }
    }
  } finally {
    await engine.close();
  }
});
