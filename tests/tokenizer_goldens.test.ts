// Every golden case of the ChatGLM tokenizer fixtures: pieces, normalization, ids, both decodes.
import assert from "node:assert/strict";
import {
  chatglmPre,
  createTokenizer,
  loadChatGLMTokenizer as loadTokenizer,
} from "../data/tokenizer/mod.ts";

const DIR = new URL("./fixtures/chatglm-tokenizer/", import.meta.url);

interface Case {
  id: string;
  tags: string[];
  text: string;
  preprocessed?: string;
  normalized?: string;
  pieces: string[];
  ids_no_special: number[];
  ids: number[];
  decoded: string;
  decoded_sp: string;
  decode_with_image_ids?: { ids: number[]; decoded: string; decoded_sp: string };
}

function readCases(rel: string): Case[] {
  return Deno.readTextFileSync(new URL(rel, DIR)).split("\n").filter((l) => l.trim()).map((l) =>
    JSON.parse(l)
  );
}

function checkCases(
  name: string,
  modelRel: string,
  casesRel: string,
  numImageTokens: number,
  minCases: number,
) {
  Deno.test(`tokenizer goldens: ${name}`, () => {
    const tok = createTokenizer(Deno.readFileSync(new URL(modelRel, DIR)), {
      numImageTokens,
      source: modelRel,
    });
    const cases = readCases(casesRel);
    assert.ok(cases.length >= minCases, `expected at least ${minCases} cases in ${casesRel}`);
    let checkedNormalized = 0;
    let checkedImage = 0;
    for (const c of cases) {
      const at = `${casesRel} ${c.id} ${JSON.stringify(c.text).slice(0, 60)}`;
      if (c.preprocessed !== undefined) {
        assert.equal(chatglmPre(c.text), c.preprocessed, `${at}: preprocessed`);
        assert.equal(tok.sp.normalize(c.preprocessed), c.normalized, `${at}: normalized`);
        checkedNormalized++;
      }
      assert.deepEqual(tok.tokenize(c.text), c.pieces, `${at}: pieces`);
      assert.deepEqual(
        tok.encode(c.text, { special: false }),
        c.ids_no_special,
        `${at}: ids_no_special`,
      );
      assert.deepEqual(tok.encode(c.text), c.ids, `${at}: ids`);
      assert.equal(tok.decode(c.ids), c.decoded, `${at}: decoded`);
      assert.equal(tok.decodeSp(c.ids), c.decoded_sp, `${at}: decoded_sp`);
      // pieces ↔ ids agree through the public lookups
      assert.deepEqual(c.pieces.map((p) => tok.pieceToId(p)), c.ids_no_special, `${at}: pieceToId`);
      assert.deepEqual(
        c.ids_no_special.map((id) => tok.idToPiece(id)),
        c.pieces,
        `${at}: idToPiece`,
      );
      if (c.decode_with_image_ids) {
        const d = c.decode_with_image_ids;
        assert.equal(tok.decode(d.ids), d.decoded, `${at}: decode_with_image_ids.decoded`);
        assert.equal(tok.decodeSp(d.ids), d.decoded_sp, `${at}: decode_with_image_ids.decoded_sp`);
        checkedImage++;
      }
    }
    assert.ok(checkedNormalized > 0);
    if (numImageTokens > 0) assert.equal(checkedImage, cases.length);
  });
}

checkCases("BPE main model (cases.jsonl)", "ice_text.model", "cases.jsonl", 0, 361);
checkCases(
  "UNIGRAM variant",
  "variants/unigram/ice_text.model",
  "variants/unigram/cases.jsonl",
  0,
  109,
);
checkCases(
  "image-token offset 20000",
  "ice_text.model",
  "variants/offset-20000/cases.jsonl",
  20000,
  5,
);

Deno.test("tokenizer goldens: special ids of the tiny model match special_tokens.json", async () => {
  const st = JSON.parse(Deno.readTextFileSync(new URL("special_tokens.json", DIR))).tiny_fixture;
  const tok = await loadTokenizer(new URL(".", DIR).pathname);
  assert.equal(tok.textVocabSize, st.text_vocab_size);
  assert.equal(tok.numImageTokens, st.num_image_tokens);
  assert.equal(tok.unkId, st["unk <unk>"]);
  assert.equal(tok.padId, st["pad <pad>"]);
  assert.equal(tok.maskId, st["mask [MASK]"]);
  assert.equal(tok.gmaskId, st["gmask [gMASK]"]);
  assert.equal(tok.sopId, st["bos <sop>"]);
  assert.equal(tok.eopId, st["eos <eop>"]);
  assert.equal(tok.endId, st["end </s>"]);
  assert.equal(tok.pieceToId("<|tab|>"), st["<|tab|>"]);
  assert.equal(tok.pieceToId("<|blank_80|>"), st["<|blank_80|>"]);
  assert.equal(tok.pieceToId("<0xFF>"), st["<0xFF>"]);
  assert.equal(tok.idToPiece(st["<n>"]), "<n>");
});

Deno.test("tokenizer goldens: offset tokenizer maps ids below the offset to <image_N>", () => {
  const tok = createTokenizer(Deno.readFileSync(new URL("ice_text.model", DIR)), {
    numImageTokens: 20000,
  });
  assert.equal(tok.textVocabSize, 22000);
  assert.equal(tok.idToPiece(7), "<image_7>");
  assert.equal(tok.gmaskId, 21657);
  assert.equal(tok.pieceToId("<sop>"), 21660);
  assert.throws(() => tok.decode([22000]), /22000/);
});

// Opt-in: the known outputs of the real ChatGLM-6B tokenizer (README §14), when a user points
// MEDGLM_REAL_TOKENIZER_DIR at a local copy of the real model directory.
const REAL_DIR = Deno.env.get("MEDGLM_REAL_TOKENIZER_DIR");
if (!REAL_DIR) {
  console.log(
    "tokenizer goldens: real-model check skipped (set MEDGLM_REAL_TOKENIZER_DIR to run it)",
  );
}
Deno.test({
  name: "tokenizer goldens: real chatglm-6b ice_text.model (opt-in)",
  ignore: !REAL_DIR,
  fn: async () => {
    const tok = await loadTokenizer(REAL_DIR!);
    assert.equal(tok.textVocabSize, 130344);
    assert.deepEqual(tok.encode("你好"), [5, 74874, 130001, 130004]);
    assert.deepEqual(
      tok.encode("def main():\n    print('hello world')\t# greeting"),
      [
        1616,
        594,
        125936,
        4,
        130011,
        2274,
        89,
        7283,
        398,
        125686,
        130008,
        61,
        25672,
        130001,
        130004,
      ],
    );
    const prompt =
      "[Round 0]\n问：你好\n答：你好👋！我是人工智能助手 ChatGLM-6B，很高兴见到你，欢迎问我任何问题。\n[Round 1]\n问：晚上睡不着应该怎么办\n答：";
    // deno-fmt-ignore
    const ids = [53, 6945, 5, 8, 42, 4, 64286, 12, 74874, 4, 67342, 12, 74874, 130328, 130247, 130233, 130227, 35, 65806, 68241, 75890, 14132, 5388, 340, 11, 21, 222, 6, 76693, 66877, 63852, 6, 66430, 68747, 102501, 63823, 4, 52, 6945, 5, 9, 42, 4, 64286, 12, 65450, 83400, 64213, 66846, 4, 67342, 12, 130001, 130004];
    assert.deepEqual(tok.encode(prompt), ids);
  },
});
