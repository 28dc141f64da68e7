import assert from "node:assert/strict";
import {
  createByteLevelTokenizer,
  loadByteLevelTokenizer,
  toByteLevel,
  translatePattern,
} from "../data/tokenizer/bytelevel/mod.ts";
import {
  QWEN3_TOKENIZER_CONFIG,
  QWEN3_TOKENIZER_FIXTURES,
  QWEN3_TOKENIZER_JSON,
  qwen3TokenizerDir,
} from "./helpers/qwen3_tokenizer.ts";
import { compileChatTemplate } from "../data/prompt/mod.ts";

const readJsonl = async (name: string) =>
  (await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}${name}`)).split("\n").filter((l) => l)
    .map((l) => JSON.parse(l));

const tok = await loadByteLevelTokenizer(await qwen3TokenizerDir());

Deno.test("qwen3 tokenizer: every golden case encodes, pre-tokenizes and decodes exactly", async () => {
  const cases = await readJsonl("cases.jsonl");
  assert.ok(cases.length >= 289);
  for (const c of cases) {
    assert.deepEqual(tok.pretokenize(c.text), c.pretokens, `${c.id} pretokens`);
    assert.deepEqual(tok.tokenize(c.text), c.pieces, `${c.id} pieces`);
    assert.deepEqual(tok.encode(c.text), c.ids, `${c.id} ids`);
    assert.equal(tok.decode(c.ids), c.decoded, `${c.id} decoded`);
    assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, c.id);
  }
});

Deno.test("qwen3 tokenizer: decode-only cases (partial UTF-8, ids without a token)", async () => {
  for (const c of await readJsonl("decode_cases.jsonl")) {
    assert.equal(tok.decode(c.ids), c.decoded, `${c.id} ${c.label}`);
    assert.equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, c.id);
    c.pieces.forEach((p: string | null, i: number) => assert.equal(tok.idToPiece(c.ids[i]), p));
  }
});

Deno.test("qwen3 tokenizer: special token ids and sizes from the files", async () => {
  const info = JSON.parse(
    await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}tokenizer_info.json`),
  );
  assert.equal(tok.size, info.vocab_size_with_added);
  assert.equal(tok.addedTokens.length, info.added_tokens.length);
  assert.deepEqual(
    tok.addedTokens.map((t) => ({ id: t.id, content: t.content, special: t.special })),
    info.added_tokens,
  );
  assert.equal(tok.eosId, 151645);
  assert.equal(tok.padId, 151643);
  assert.equal(tok.bosId, null);
  assert.ok(tok.chatTemplate?.includes("<|im_start|>"));
});

Deno.test("pre-tokenizer: Oniguruma's \\s (U+0085 yes, U+FEFF no) and JavaScript's agree", () => {
  const re = translatePattern("\\s+(?!\\S)|\\s+|[^\\s]+");
  const split = (s: string) => s.match(re);
  assert.deepEqual(split("a\u0085b"), ["a", "\u0085", "b"]);
  assert.deepEqual(split("a\ufeffb"), ["a\ufeffb"]);
});

Deno.test("byte-level map: space, newline and a CJK character", () => {
  assert.equal(toByteLevel(" \n\t"), "ĠĊĉ");
  assert.equal(toByteLevel("头"), "å¤´");
});

Deno.test("tokenizer.json features it does not implement are refused by name", () => {
  const base = QWEN3_TOKENIZER_JSON as Record<string, unknown>;
  const model = base.model as Record<string, unknown>;
  const bad = (patch: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => createByteLevelTokenizer({ ...base, ...patch }, QWEN3_TOKENIZER_CONFIG, "x.json"),
      re,
    );
  bad({ model: { ...model, type: "WordPiece" } }, /x\.json: model\.type "WordPiece"/);
  bad({ model: { ...model, byte_fallback: true } }, /byte_fallback/);
  bad({ normalizer: { type: "Precompiled" } }, /normalizer type "Precompiled"/);
  bad({ pre_tokenizer: { type: "Metaspace" } }, /pre_tokenizer type "Metaspace"/);
  bad({ decoder: { type: "WordPiece" } }, /decoder type "WordPiece"/);
});

Deno.test("a TemplateProcessing post-processor adds its BOS (Llama 3 style) unless special: false", () => {
  const base = QWEN3_TOKENIZER_JSON as Record<string, unknown>;
  const t = createByteLevelTokenizer({
    ...base,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|endoftext|>", type_id: 0 } }, {
        Sequence: { id: "A", type_id: 0 },
      }],
    },
  });
  assert.deepEqual(t.encode("hi"), [151643, ...tok.encode("hi")]);
  assert.deepEqual(t.encode("hi", { special: false }), tok.encode("hi"));
});

Deno.test("loading a directory without tokenizer.json names the file", async () => {
  const d = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadByteLevelTokenizer(d), /tokenizer\.json: no such file/);
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});

Deno.test("qwen3 chat template: transformers' renderings and their ids, exactly", async () => {
  const template = compileChatTemplate(tok.chatTemplate!, "tokenizer_config.json");
  const cases = await readJsonl("chat_template.jsonl");
  assert.equal(cases.length, 5);
  for (const c of cases) {
    const text = template.render(c.messages, {
      addGenerationPrompt: c.add_generation_prompt,
      enableThinking: c.enable_thinking,
    });
    assert.equal(text, c.text, c.id);
    assert.deepEqual(tok.encode(text), c.ids, `${c.id} ids`);
  }
});

Deno.test("a chat template that does not parse is refused naming its file", () => {
  assert.throws(
    () => compileChatTemplate("{% for m in messages %}", "dir/tokenizer_config.json"),
    /dir\/tokenizer_config\.json: the chat template does not parse/,
  );
});
