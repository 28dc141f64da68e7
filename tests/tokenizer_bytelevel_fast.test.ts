/**
 * The fast paths of the byte-level BPE (bench/tokenizer.ts measures them) against independent
 * references: the merge by rank-array scan (words up to 256 bytes) and by heap (longer words)
 * against @huggingface/tokenizers on mixed Chinese/English text with long CJK runs; the direct
 * UTF-8 → byte-id writer against TextEncoder on text with astral and lone surrogates.
 */
import assert from "node:assert/strict";
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import {
  bpeIds,
  bpeWordIds,
  createBpeModel,
  createByteLevelTokenizer,
} from "../data/tokenizer/bytelevel/mod.ts";
import { QWEN3_TOKENIZER_CONFIG, QWEN3_TOKENIZER_JSON } from "./helpers/qwen3_tokenizer.ts";

const ours = createByteLevelTokenizer(QWEN3_TOKENIZER_JSON, QWEN3_TOKENIZER_CONFIG);
// deno-lint-ignore no-explicit-any
const hf = new HfTokenizer(QWEN3_TOKENIZER_JSON as any, QWEN3_TOKENIZER_CONFIG as any);

/** Seeded LCG over an alphabet of medical words, Latin text, digits and punctuation. */
function randomTexts(count: number, seed: number, longRuns: boolean): string[] {
  const words = [
    "头痛",
    "发热",
    "高血压",
    "糖尿病",
    "幽门螺杆菌",
    "甲状腺结节",
    "龘",
    "𠮷",
    "😷",
    "patient",
    " fever",
    " 38.5",
    "℃",
    "，",
    "。",
    "\n",
    "  ",
    "don't",
    "COVID-19",
    "mmHg",
    "ibuprofen",
  ];
  let s = seed >>> 0;
  const rnd = (n: number) => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0, (s >>> 8) % n);
  return Array.from({ length: count }, () => {
    let t = "";
    const n = longRuns ? 150 + rnd(200) : 5 + rnd(60);
    for (let i = 0; i < n; i++) {
      t += longRuns && rnd(8) !== 0 ? words[rnd(7)] : words[rnd(words.length)];
    }
    return t;
  });
}

Deno.test("byte-level BPE: equal to @huggingface/tokenizers on mixed text, short and long words", () => {
  const long = randomTexts(60, 7, true);
  // the long texts hold pre-tokens past 256 bytes (the heap path), the short ones only short ones
  const maxWord = Math.max(
    ...long.flatMap((t) => ours.pretokenize(t).map((w) => new TextEncoder().encode(w).length)),
  );
  assert.ok(maxWord > 256, `longest pre-token ${maxWord} bytes`);
  for (const text of [...randomTexts(400, 3, false), ...long]) {
    assert.deepEqual(
      ours.encode(text),
      hf.encode(text, { add_special_tokens: false }).ids,
      JSON.stringify(text.slice(0, 60)),
    );
  }
});

Deno.test("byte-level BPE: text → byte ids equals TextEncoder's bytes, lone surrogates too", () => {
  const json = QWEN3_TOKENIZER_JSON as {
    model: { vocab: Record<string, number>; merges: unknown };
  };
  const model = createBpeModel(new Map(Object.entries(json.model.vocab)), json.model.merges, "q");
  const enc = new TextEncoder();
  const words = [
    "",
    "a",
    "héllo",
    "头痛发热",
    "𠮷野家😷",
    "x\ud800y",
    "\udc00",
    "\ud83d",
    "\ud83d\ud83d\ude37",
    "ß€\u07ff\u0800\uffff",
    ...randomTexts(50, 11, false),
  ];
  for (const w of words) {
    assert.deepEqual(bpeWordIds(model, w), bpeIds(model, enc.encode(w)), JSON.stringify(w));
  }
});
