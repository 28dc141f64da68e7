// The one tokenizer interface: loadTokenizer(dir) picks the kind by the files of the directory,
// and both kinds answer the common calls (ids, end-of-turn ids, bytes of a token) alike.
import assert from "node:assert/strict";
import {
  detectTokenizerKind,
  loadChatGLMTokenizer,
  loadTokenizer,
  type Tokenizer,
} from "../data/tokenizer/mod.ts";
import { QWEN3_TOKENIZER_CONFIG, QWEN3_TOKENIZER_JSON } from "./helpers/qwen3_tokenizer.ts";

const CHATGLM = new URL("./fixtures/chatglm-tokenizer/", import.meta.url).pathname;

/** A Qwen3 model directory: the real tokenizer files plus a generation_config.json. */
async function qwenDir(generationConfig?: unknown): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "medglm-tok-iface-" });
  await Deno.writeTextFile(`${d}/tokenizer.json`, JSON.stringify(QWEN3_TOKENIZER_JSON));
  await Deno.writeTextFile(`${d}/tokenizer_config.json`, JSON.stringify(QWEN3_TOKENIZER_CONFIG));
  if (generationConfig !== undefined) {
    await Deno.writeTextFile(`${d}/generation_config.json`, JSON.stringify(generationConfig));
  }
  return d;
}

/** Only the common interface: what a caller that knows no kind can do. */
function roundTrip(tok: Tokenizer, text: string): string {
  return tok.decode(tok.encode(text, { special: false }), { skipSpecialTokens: true });
}

Deno.test("loadTokenizer: ice_text.model → the ChatGLM tokenizer, with the common fields", async () => {
  assert.equal(await detectTokenizerKind(CHATGLM), "chatglm");
  const tok = await loadTokenizer(CHATGLM);
  assert.equal(tok.kind, "chatglm");
  if (tok.kind !== "chatglm") return;
  // The same tokenizer as ChatGLM's own loader, so every ChatGLM-specific call still works.
  const own = await loadChatGLMTokenizer(CHATGLM);
  assert.deepEqual(tok.encode("头痛怎么办？"), own.encode("头痛怎么办？"));
  assert.equal(tok.vocabSize, own.textVocabSize);
  assert.deepEqual(tok.endOfTurnIds, [own.eopId]);
  assert.equal(tok.eosId, own.eopId);
  assert.equal(tok.bosId, own.sopId);
  assert.equal(tok.padId, own.padId);
  assert.equal(tok.chatTemplate, null);
  assert.deepEqual(tok.encode("你好").slice(-2), [own.gmaskId, own.sopId], "special by default");
  // Byte-fallback pieces have their byte; word pieces are whole text.
  const e5 = own.sp.model.byteIds[0xe5] + own.numImageTokens;
  assert.deepEqual(tok.tokenBytes(e5), Uint8Array.of(0xe5));
  assert.equal(tok.tokenBytes(tok.encode("你好", { special: false })[0]), null);
  assert.equal(roundTrip(tok, "发烧39度怎么办"), "发烧39度怎么办");
});

Deno.test("loadTokenizer: tokenizer.json → byte-level BPE; generation_config's eos list ends turns", async () => {
  const d = await qwenDir({ eos_token_id: [151645, 151643], pad_token_id: 151643 });
  try {
    assert.equal(await detectTokenizerKind(d), "bytelevel-bpe");
    const tok = await loadTokenizer(d);
    assert.equal(tok.kind, "bytelevel-bpe");
    assert.equal(tok.vocabSize, 151669);
    assert.deepEqual(tok.endOfTurnIds, [151645, 151643]);
    assert.equal(tok.eosId, 151645);
    assert.equal(tok.padId, 151643);
    assert.equal(tok.bosId, null);
    assert.ok(tok.chatTemplate?.includes("<|im_start|>"));
    assert.deepEqual(tok.specialTokenText, { bos: null, eos: "<|im_end|>" });
    // Every vocabulary token is bytes (头 = E5 A4 B4); added tokens are whole text.
    const [tou] = tok.encode("头", { special: false });
    assert.deepEqual(tok.tokenBytes(tou), Uint8Array.of(0xe5, 0xa4, 0xb4));
    assert.equal(tok.tokenBytes(151645), null);
    assert.equal(tok.tokenBytes(151700), null, "an id without a token");
    assert.equal(roundTrip(tok, "发烧39度怎么办<|im_end|>"), "发烧39度怎么办");
    // Only the tokenizer_config's eos without a generation_config.
    const plain = await qwenDir();
    try {
      assert.deepEqual((await loadTokenizer(plain)).endOfTurnIds, [151645]);
    } finally {
      await Deno.remove(plain, { recursive: true });
    }
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});

Deno.test("loadTokenizer: a directory without tokenizer files, and bad eos ids, are named", async () => {
  const empty = await Deno.makeTempDir();
  try {
    await assert.rejects(loadTokenizer(empty), (e: Error) => {
      assert.ok(e.message.includes(empty), e.message);
      assert.match(e.message, /tokenizer\.json/);
      assert.match(e.message, /ice_text\.model/);
      return true;
    });
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
  for (const [eos, rule] of [["x", /eos_token_id must be a token id/], [999999, /999999/]]) {
    const d = await qwenDir({ eos_token_id: eos });
    try {
      await assert.rejects(loadTokenizer(d), (e: Error) => {
        assert.match(e.message, rule as RegExp);
        assert.ok(e.message.includes(d), e.message);
        return true;
      });
    } finally {
      await Deno.remove(d, { recursive: true });
    }
  }
});
