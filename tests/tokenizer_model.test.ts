// The SentencePiece model reader: what it refuses and how it says so; loading from a directory.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createTokenizer,
  loadChatGLMTokenizer as loadTokenizer,
  parseSentencePieceModel,
  SentencePieceModelError,
} from "../data/tokenizer/mod.ts";
import { readFields } from "../data/tokenizer/sentencepiece/protobuf.ts";
import { concatArrays as concat } from "../core/io/concat.ts";

const FIX = new URL("./fixtures/chatglm-tokenizer/", import.meta.url).pathname;
const MODEL = Deno.readFileSync(join(FIX, "ice_text.model"));
const UNIGRAM = Deno.readFileSync(join(FIX, "variants/unigram/ice_text.model"));

// --- a tiny protobuf writer, to build variants of the fixture model -------------------------
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
function lenField(field: number, bytes: Uint8Array): Uint8Array {
  return Uint8Array.from([...varint(field * 8 + 2), ...varint(bytes.length), ...bytes]);
}
function varintField(field: number, v: number): Uint8Array {
  return Uint8Array.from([...varint(field * 8), ...varint(v)]);
}
/** Rewrites top-level fields of a ModelProto: `edit(field, bytes)` returns replacement bytes. */
function rewrite(
  model: Uint8Array,
  edit: (field: number, bytes: Uint8Array, index: number) => Uint8Array | null,
  extra: Uint8Array[] = [],
): Uint8Array {
  const parts: Uint8Array[] = [];
  let i = 0;
  for (const f of readFields(model, "test")) {
    const b = edit(f.field, f.bytes, i++);
    if (b) parts.push(lenField(f.field, b));
  }
  return concat([...parts, ...extra]);
}
const appendTo = (target: number, add: Uint8Array) => (field: number, bytes: Uint8Array) =>
  field === target ? concat([bytes, add]) : bytes;

function refuses(bytes: Uint8Array, source: string, re: RegExp) {
  assert.throws(
    () => parseSentencePieceModel(bytes, source),
    (e: unknown) => {
      assert.ok(e instanceof SentencePieceModelError, `expected SentencePieceModelError: ${e}`);
      assert.ok(e.message.includes(source), `message names the file: ${e.message}`);
      assert.match(e.message, re);
      return true;
    },
  );
}

Deno.test("model: both fixture models parse with the declared types and specs", () => {
  const bpe = parseSentencePieceModel(MODEL, "ice_text.model");
  assert.equal(bpe.modelType, "bpe");
  assert.equal(bpe.normalizer.name, "nmt_nfkc");
  assert.ok(bpe.normalizer.charsmap.length > 0);
  assert.equal(bpe.byteFallback, true);
  assert.equal(bpe.unkSurface, " \u2047 ");
  const uni = parseSentencePieceModel(UNIGRAM, "unigram.model");
  assert.equal(uni.modelType, "unigram");
  assert.equal(uni.normalizer.name, "identity");
  assert.equal(uni.normalizer.charsmap.length, 0);
  assert.equal(uni.normalizer.removeExtraWhitespaces, false);
  // the vocab.tsv dumps agree with what we read
  for (const [m, tsv] of [[bpe, "vocab.tsv"], [uni, "variants/unigram/vocab.tsv"]] as const) {
    const rows = Deno.readTextFileSync(join(FIX, tsv)).trim().split("\n").slice(1);
    assert.equal(rows.length, m.pieces.length);
    const names = ["", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"];
    rows.forEach((row, i) => {
      const [id, type, score, piece] = row.split("\t");
      assert.equal(Number(id), i);
      assert.equal(names[m.types[i]], type, `${tsv} row ${i}`);
      assert.equal(m.pieces[i], JSON.parse(piece), `${tsv} row ${i}`);
      assert.ok(Math.abs(m.scores[i] - Number(score)) <= 1e-6 * Math.max(1, Math.abs(m.scores[i])));
    });
  }
});

Deno.test("model: empty, garbage and truncated files are refused, naming the file", () => {
  refuses(new Uint8Array(0), "empty.model", /empty/);
  refuses(new TextEncoder().encode("this is not a model at all"), "text.model", /model/);
  // seeded random bytes: never a valid model, always a SentencePieceModelError
  let seed = 12345;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
  for (let k = 0; k < 50; k++) {
    const junk = Uint8Array.from({ length: 10 + 40 * k }, rnd);
    refuses(junk, `random-${k}.model`, /./);
  }
  for (const cut of [1, 10, 1000, MODEL.length / 2, MODEL.length - 1]) {
    refuses(MODEL.subarray(0, Math.floor(cut)), `cut-${cut}.model`, /truncated|corrupt|missing/);
  }
  // cut exactly after the pieces (a field boundary): the specs are missing
  const piecesOnly = rewrite(MODEL, (f, b) => (f === 1 ? b : null));
  refuses(piecesOnly, "pieces-only.model", /missing trainer_spec/);
});

Deno.test("model: unsupported model types and options are refused", () => {
  refuses(rewrite(MODEL, appendTo(2, varintField(3, 3))), "word.model", /WORD/);
  refuses(rewrite(MODEL, appendTo(2, varintField(3, 4))), "char.model", /CHAR/);
  refuses(
    rewrite(MODEL, appendTo(2, varintField(24, 1))),
    "suffix.model",
    /treat_whitespace_as_suffix/,
  );
  const denorm = lenField(
    5,
    concat([
      lenField(1, new TextEncoder().encode("x")),
      lenField(2, new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0])),
    ]),
  );
  refuses(rewrite(MODEL, (_f, b) => b, [denorm]), "denorm.model", /denormalizer/);
  // an empty denormalizer spec is fine
  const emptyDenorm = lenField(5, lenField(1, new TextEncoder().encode("identity")));
  assert.equal(
    parseSentencePieceModel(rewrite(MODEL, (_f, b) => b, [emptyDenorm])).modelType,
    "bpe",
  );
  // UNUSED piece in a BPE model (piece 10 gets type 5)
  refuses(
    rewrite(MODEL, (f, b, i) => (f === 1 && i === 10 ? concat([b, varintField(3, 5)]) : b)),
    "unused.model",
    /UNUSED/,
  );
  // duplicate piece: piece 6 renamed to piece 5's string
  const dup = rewrite(MODEL, (f, b, i) => {
    if (f !== 1 || i !== 6) return b;
    return concat([b, lenField(1, new TextEncoder().encode("需要"))]);
  });
  refuses(dup, "dup.model", /duplicate piece/);
  // byte fallback without all byte pieces: drop the last piece (<0xFF>)
  let count = 0;
  for (const f of readFields(MODEL, "t")) if (f.field === 1) count++;
  refuses(
    rewrite(MODEL, (f, b, i) => (f === 1 && i === count - 1 ? null : b)),
    "nobytes.model",
    /<0xFF>/,
  );
});

Deno.test("loadTokenizer: reads a model directory; missing files are named", async () => {
  const tok = await loadTokenizer(FIX);
  assert.deepEqual(tok.encode(""), [tok.gmaskId, tok.sopId]);
  const tiny = await loadTokenizer(new URL("./fixtures/chatglm6b-tiny/", import.meta.url).pathname);
  assert.deepEqual(tiny.encode("你好"), tok.encode("你好"));

  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadTokenizer(dir), (e: Error) => {
      assert.match(e.message, /ice_text\.model/);
      assert.ok(e.message.includes(dir));
      return true;
    });
    // vocab_file and num_image_tokens come from tokenizer_config.json
    await Deno.writeFile(join(dir, "renamed.model"), MODEL);
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ vocab_file: "renamed.model", num_image_tokens: 20000 }),
    );
    const off = await loadTokenizer(dir);
    assert.equal(off.numImageTokens, 20000);
    assert.equal(off.gmaskId, tok.gmaskId + 20000);
    assert.equal((await loadTokenizer(dir, { numImageTokens: 0 })).numImageTokens, 0);
    // a corrupt model file is named in the error
    await Deno.writeFile(join(dir, "renamed.model"), MODEL.subarray(0, 5000));
    await assert.rejects(loadTokenizer(dir), (e: Error) => {
      assert.ok(e.message.includes(join(dir, "renamed.model")), e.message);
      return true;
    });
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), "{not json");
    await assert.rejects(loadTokenizer(dir), /tokenizer_config\.json: not valid JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizer: id range errors, maxLength truncation keeps the specials", () => {
  const tok = createTokenizer(MODEL, { source: "ice_text.model" });
  assert.throws(() => tok.decode([5, tok.textVocabSize]), /ice_text\.model: id 2000 at index 1/);
  assert.throws(() => tok.decode([-1]), /id -1/);
  assert.throws(() => tok.idToPiece(1.5), /1\.5/);
  const text = "Instruction: 头痛发热怎么办？\nAnswer: ";
  const full = tok.encode(text, { special: false });
  assert.ok(full.length > 10);
  assert.deepEqual(tok.encode(text, { maxLength: 10 }), [
    ...full.slice(0, 8),
    tok.gmaskId,
    tok.sopId,
  ]);
  assert.deepEqual(tok.encode(text, { special: false, maxLength: 10 }), full.slice(0, 10));
  assert.deepEqual(tok.encode(text, { maxLength: 2 }), [tok.gmaskId, tok.sopId]);
  assert.throws(() => tok.encode(text, { maxLength: 1 }), /maxLength/);
  // special strings registered in transformers are split out; [gMASK] typed in text is not
  assert.deepEqual(tok.encode("<sop>", { special: false }), [tok.sopId]);
  assert.ok(!tok.encode("[gMASK]", { special: false }).includes(tok.gmaskId));
});
