// The engine over a byte-level tokenizer (the real Qwen3 tokenizer) with a scripted decoder: the
// prompt is the model's chat template, `<|im_end|>` and generation_config's eos ids stop, a
// Chinese answer whose characters are split across tokens streams without U+FFFD, and the
// validUtf8 mask works on multi-byte tokens.
import assert from "node:assert/strict";
import { createByteLevelTokenizer } from "../data/tokenizer/mod.ts";
import { createRng } from "../base/random.ts";
import { buildEngine, type LocalEngine } from "../serve/engine/engine.ts";
import type { Decoder } from "../serve/engine/decoder.ts";
import { chooseToken } from "../serve/engine/sampling.ts";
import { byteTokensOf, pendingBytes } from "../serve/engine/utf8_tokens.ts";
import { createTextStream } from "../serve/engine/text_stream.ts";
import { createApp } from "../serve/http/app.ts";
import {
  QWEN3_TOKENIZER_CONFIG,
  QWEN3_TOKENIZER_FIXTURES,
  QWEN3_TOKENIZER_JSON,
} from "./helpers/qwen3_tokenizer.ts";

const IM_END = 151645;
const ENDOFTEXT = 151643;
// As loadTokenizer builds it from a Qwen3 directory whose generation_config lists both ends.
const tok = createByteLevelTokenizer(QWEN3_TOKENIZER_JSON, QWEN3_TOKENIZER_CONFIG, "qwen3", {
  endOfTurnIds: [IM_END, ENDOFTEXT],
});
const V = tok.vocabSize;
const bytes = byteTokensOf(tok);
const cases = (await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}chat_template.jsonl`))
  .split("\n").filter((l) => l).map((l) => JSON.parse(l));

/** Token id of an exact byte string, if the vocabulary has one. */
const byBytes = new Map<string, number>();
for (let id = 0; id < V; id++) {
  const b = tok.tokenBytes(id);
  if (b && !byBytes.has(b.join(","))) byBytes.set(b.join(","), id);
}
const idOfBytes = (b: number[]) => byBytes.get(b.join(","));
const utf8 = (s: string) => [...new TextEncoder().encode(s)];
const single = (s: string) => utf8(s).map((b) => idOfBytes([b])!);

/**
 * An answer spelled the hard ways: a character over two tokens (2 + 1 bytes), one byte per
 * token, a token holding a space and the lead byte of the next character, an emoji in four
 * single bytes, and ordinary tokens in between.
 */
function hardScript(): { ids: number[]; text: string } {
  const ids: number[] = [];
  let text = "";
  const add = (part: number[], s: string) => {
    ids.push(...part);
    text += s;
  };
  const tou = utf8("头");
  const head = idOfBytes(tou.slice(0, 2));
  assert.ok(head !== undefined, "the vocabulary has the first two bytes of 头 as one token");
  add([head, idOfBytes([tou[2]])!], "头");
  add(single("痛"), "痛");
  add(tok.encode("可能与睡眠不足有关，"), "可能与睡眠不足有关，");
  // A token that ends inside a character: a space and the lead byte of 建 (E5).
  const jian = utf8("建");
  const spaceLead = idOfBytes([0x20, jian[0]]);
  assert.ok(spaceLead !== undefined, "the vocabulary has space + E5 as one token");
  add([spaceLead, ...jian.slice(1).map((b) => idOfBytes([b])!)], " 建");
  add(tok.encode("议规律作息"), "议规律作息");
  add(single("😀"), "😀");
  add(tok.encode("。"), "。");
  return { ids, text };
}

/** A decoder whose logits pick the next id of a script (each slot from its start). */
function scriptedDecoder(script: number[]): Decoder {
  const step = new Map<number, number>();
  const logits = (slot: number) => {
    const i = step.get(slot) ?? 0;
    step.set(slot, i + 1);
    const row = new Float32Array(V);
    row[script[Math.min(i, script.length - 1)]] = 10;
    return row;
  };
  return {
    vocabSize: V,
    maxContext: 4096,
    slots: 2,
    prefill: (slot) => Promise.resolve(logits(slot)),
    decode: (steps) => {
      const out = new Float32Array(steps.length * V);
      steps.forEach((s, k) => out.set(logits(s.slot), k * V));
      return Promise.resolve(out);
    },
    release: (slot) => void step.delete(slot),
    idle: () => {},
    close: () => {},
  };
}

async function collect(engine: LocalEngine, maxNewTokens?: number) {
  const deltas: string[] = [];
  let finish;
  let usage;
  for await (
    const d of engine.generate({
      messages: [{ role: "user", content: "最近总是头痛，是怎么回事？" }],
      temperature: 0,
      maxNewTokens,
    })
  ) {
    deltas.push(d.text);
    if (d.finishReason) {
      finish = d.finishReason;
      usage = d.usage;
    }
  }
  return { deltas, finish, usage };
}

Deno.test("byte-level answer: characters split across tokens never show U+FFFD; <|im_end|> stops", async () => {
  const { ids, text } = hardScript();
  assert.equal(tok.decode(ids), text);
  // Junk after the end: never generated.
  const engine = buildEngine({
    decoder: scriptedDecoder([...ids, IM_END, ...single("坏")]),
    tokenizer: tok,
  });
  try {
    const { deltas, finish, usage } = await collect(engine);
    assert.ok(deltas.every((d) => !d.includes("\ufffd")), JSON.stringify(deltas));
    assert.equal(deltas.join(""), text);
    assert.ok(deltas.length > 3, "streamed in pieces");
    assert.equal(finish, "stop");
    assert.equal(usage!.completionTokens, ids.length + 1);
  } finally {
    await engine.close();
  }
});

Deno.test("byte-level answer: generation_config's <|endoftext|> ends it too", async () => {
  const answer = tok.encode("多喝水。");
  const engine = buildEngine({
    decoder: scriptedDecoder([...answer, ENDOFTEXT, 100]),
    tokenizer: tok,
  });
  try {
    const { deltas, finish, usage } = await collect(engine);
    assert.equal(deltas.join(""), "多喝水。");
    assert.equal(finish, "stop");
    assert.equal(usage!.completionTokens, answer.length + 1);
  } finally {
    await engine.close();
  }
});

Deno.test("byte-level answer: max_tokens inside a character drops it, no U+FFFD", async () => {
  const { ids } = hardScript();
  const emoji = single("😀");
  const at = ids.findIndex((_, i) => emoji.every((e, k) => ids[i + k] === e));
  for (let cut = 1; cut < 4; cut++) {
    const engine = buildEngine({ decoder: scriptedDecoder(ids), tokenizer: tok });
    try {
      const { deltas, finish } = await collect(engine, at + cut);
      assert.equal(finish, "length");
      assert.equal(deltas.join(""), tok.decode(ids.slice(0, at)), `cut after ${cut} bytes`);
    } finally {
      await engine.close();
    }
  }
});

Deno.test("engine prompt: the model's chat template, equal to transformers' rendering", async () => {
  const engine = buildEngine({ decoder: scriptedDecoder([IM_END]), tokenizer: tok });
  const noThink = buildEngine({
    decoder: scriptedDecoder([IM_END]),
    tokenizer: tok,
    enableThinking: false,
  });
  try {
    for (const c of cases.filter((c) => c.add_generation_prompt)) {
      const e = c.enable_thinking === false ? noThink : engine;
      assert.deepEqual(e.encodeMessages(c.messages), c.ids, c.id);
      assert.equal(e.countPromptTokens(c.messages), c.ids.length, c.id);
    }
  } finally {
    await engine.close();
    await noThink.close();
  }
});

Deno.test("text stream over byte-level tokens: held while a character is open, dropped at the end", () => {
  const jian = utf8("建");
  const spaceLead = idOfBytes([0x20, jian[0]])!;
  const s = createTextStream({
    decode: (ids) => tok.decode(ids),
    postProcess: (t) => t,
    seqs: bytes.seqs,
  });
  const prefix = tok.encode("你好啊朋友们");
  let text = "";
  for (const id of [...prefix, spaceLead]) text += s.push(id).delta;
  assert.ok(pendingBytes(s.ids, bytes.seqs!), "E5 is open");
  text += s.finish();
  // The space before the unfinished character is text; the open byte is not shown.
  assert.equal(text, "你好啊朋友们 ");
});

/** The ids' bytes are valid UTF-8, an unfinished last character allowed (TextDecoder, fatal). */
function validSoFar(ids: number[]): boolean {
  const all = ids.flatMap((id) => [...(tok.tokenBytes(id) ?? [])]);
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(all), { stream: true });
    return true;
  } catch {
    return false;
  }
}

Deno.test("validUtf8 on byte-level tokens: an open character takes only its continuations", () => {
  assert.ok(bytes.seqs, "a byte-level vocabulary gets the multi-byte table");
  // A token of two continuation bytes: it completes a three-byte character opened by E5.
  const isCont = (b: number) => b >= 0x80 && b <= 0xbf;
  const [contKey, cont] = [...byBytes].find(([k]) => {
    const b = k.split(",").map(Number);
    return b.length === 2 && b.every(isCont);
  })!;
  const contBytes = contKey.split(",").map(Number);
  const lead = idOfBytes([0xe5])!;
  const ni = tok.encode("你")[0];
  const stray = idOfBytes([0x80])!;
  const seen = [...tok.encode("我"), lead];
  const row = () => {
    const r = new Float32Array(V);
    r[ni] = 10;
    r[IM_END] = 9;
    r[stray] = 8;
    r[cont] = 7;
    return r;
  };
  assert.equal(chooseToken(row(), V, {}, seen, createRng(1), bytes), ni, "unmasked: the favourite");
  // 0x80 continues E5 as well (E5 80..BF), and is the better of the two allowed.
  assert.equal(chooseToken(row(), V, { validUtf8: true }, seen, createRng(1), bytes), stray);
  for (let seed = 0; seed < 10; seed++) {
    const id = chooseToken(
      row(),
      V,
      { validUtf8: true, temperature: 3 },
      seen,
      createRng(seed),
      bytes,
    );
    assert.ok(validSoFar([...seen, id]), `seed ${seed}: ${id} ${tok.tokenBytes(id)}`);
  }
  // Nothing open: a leading continuation byte can never be valid, a whole character can.
  const r = new Float32Array(V);
  r[stray] = 10;
  r[ni] = 5;
  assert.equal(chooseToken(r, V, { validUtf8: true }, tok.encode("我"), createRng(1), bytes), ni);
  // One continuation byte in: the two-byte token has one too many, a single byte completes.
  const after = [...seen, idOfBytes([contBytes[0]])!];
  const last = idOfBytes([contBytes[1]])!;
  const r2 = new Float32Array(V);
  r2[cont] = 10;
  r2[last] = 5;
  assert.equal(chooseToken(r2, V, { validUtf8: true }, after, createRng(1), bytes), last);
  // After the character is complete the two-byte continuation token is invalid as well.
  const done = [...seen, cont];
  assert.equal(pendingBytes(done, bytes.seqs!), null);
  const r3 = new Float32Array(V);
  r3[cont] = 10;
  r3[ni] = 1;
  assert.equal(chooseToken(r3, V, { validUtf8: true }, done, createRng(1), bytes), ni);
});

Deno.test("validUtf8 mask agrees with a UTF-8 decoder on every token, in every open state", () => {
  const prefixes = [[], [0xe5], [0xe5, 0xa4], [0xe0], [0xed], [0xf0], [0xf0, 0x9f, 0x98], [0xf4]];
  // Replacement mode (fast: no exceptions): bytes are valid so far iff no U+FFFD comes out while
  // streaming (an unfinished end is held by the decoder, not replaced).
  const decoder = new TextDecoder("utf-8");
  const validSoFarBytes = (b: number[]) => {
    const ok = !decoder.decode(Uint8Array.from(b), { stream: true }).includes("\ufffd");
    decoder.decode(); // reset
    return ok;
  };
  let checked = 0;
  for (const prefix of prefixes) {
    const seen = [...tok.encode("好"), ...prefix.map((b) => idOfBytes([b])!)];
    const r = new Float32Array(V);
    chooseToken(r, V, { validUtf8: true }, seen, createRng(1), bytes);
    for (let id = 0; id < V; id++) {
      const b = tok.tokenBytes(id);
      // Tokens spelling U+FFFD itself (EF BF BD) would look invalid to this check.
      if (!b || b.join(",").includes("239,191,189")) continue;
      // Every id for the first two states; then only those that start outside ASCII (an ASCII
      // first byte after an open character is always invalid: checked above).
      if (prefix.length > 0 && prefix[0] !== 0xe5 && b[0] < 0x80) continue;
      const ok = validSoFarBytes([...prefix, ...b]);
      assert.equal(r[id] === 0, ok, `after ${prefix.map((x) => x.toString(16))}: id ${id} ${b}`);
      checked++;
    }
  }
  assert.ok(checked > 2 * 150000, `${checked}`);
});

Deno.test("byte-level answer through the HTTP API, streamed and not: no U+FFFD, <|im_end|> stops", async () => {
  const { ids, text } = hardScript();
  const engine = buildEngine({ decoder: scriptedDecoder([...ids, IM_END]), tokenizer: tok });
  try {
    const app = createApp(engine);
    for (const stream of [false, true]) {
      const res = await app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          messages: [{ role: "user", content: "头痛怎么办？" }],
          temperature: 0,
          stream,
        }),
      });
      const raw = await res.text();
      assert.ok(!raw.includes("\\ufffd") && !raw.includes("\ufffd"), raw);
      if (!stream) {
        const body = JSON.parse(raw);
        assert.equal(body.choices[0].message.content, text);
        assert.equal(body.choices[0].finish_reason, "stop");
      } else {
        const events = raw.split("\n\n").filter((e) => e.startsWith("data: {"))
          .map((e) => JSON.parse(e.slice(6)));
        assert.equal(events.map((e) => e.choices[0].delta.content ?? "").join(""), text);
        assert.ok(events.length > 3, "streamed in pieces");
      }
    }
  } finally {
    await engine.close();
  }
});
