// The byte-level BPE trainer (data/tokenizer/bytelevel/train.ts): the tokenizer.json it writes is
// read the same by @huggingface/tokenizers (the file format is right) and by ours, round-trips
// text, compresses the texts it learned from, and refuses a vocabulary smaller than the bytes.
import assert from "node:assert/strict";
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { createByteLevelTokenizer, trainByteLevelBpe } from "../data/tokenizer/bytelevel/mod.ts";
import { QWEN3_TOKENIZER_JSON } from "./helpers/qwen3_tokenizer.ts";

const SAMPLES = new URL("../data/samples/medical_qa.json", import.meta.url);
const real = QWEN3_TOKENIZER_JSON as Record<string, unknown>;
const pipeline = {
  normalizer: real.normalizer,
  pre_tokenizer: real.pre_tokenizer,
  post_processor: real.post_processor,
  decoder: real.decoder,
};

Deno.test("trainByteLevelBpe: a tokenizer.json both implementations read alike", async () => {
  const rows = JSON.parse(await Deno.readTextFile(SAMPLES)) as {
    instruction: string;
    output: string;
  }[];
  const texts = rows.flatMap((r) => [r.instruction, r.output]);
  const json = trainByteLevelBpe(texts, {
    vocabSize: 800,
    pipeline,
    addedTokens: [{ content: "<|im_start|>", special: true }, {
      content: "<|im_end|>",
      special: true,
    }],
  });
  const vocab = (json.model as { vocab: Record<string, number> }).vocab;
  assert.equal(Object.keys(vocab).length, 800);
  const ours = createByteLevelTokenizer(json, { eos_token: "<|im_end|>" });
  assert.equal(ours.size, 802);
  assert.equal(ours.eosId, 801);
  // deno-lint-ignore no-explicit-any
  const hf = new HfTokenizer(json as any, {} as any);
  let bytes = 0, tokens = 0;
  const probes = [...texts.slice(0, 60), "<|im_start|>user\n没见过的词：Zyxwv 123\n<|im_end|>"];
  for (const t of probes) {
    const ids = ours.encode(t);
    assert.deepEqual(ids, hf.encode(t, { add_special_tokens: false }).ids, t);
    assert.equal(ours.decode(ids), t);
    bytes += new TextEncoder().encode(t).length;
    tokens += ids.length;
  }
  // learned from these texts: far fewer tokens than bytes (one per byte before any merge)
  assert.ok(tokens * 2 < bytes, `${tokens} tokens for ${bytes} bytes`);
  // deterministic
  assert.deepEqual(trainByteLevelBpe(texts, { vocabSize: 800, pipeline }).model, json.model);
  assert.throws(() => trainByteLevelBpe(texts, { vocabSize: 100, pipeline }), /vocabSize/);
});
