// Fine-tuning examples (§13 and chatglm6b-tiny §8): ids, labels, truncation.
import assert from "node:assert/strict";
import { buildInstructionContext, buildTrainExample, IGNORE_INDEX } from "../data/prompt/mod.ts";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/tokenizer/mod.ts";

const FIX = new URL("./fixtures/chatglm-tokenizer/", import.meta.url);
const tok = await loadTokenizer(FIX.pathname);
const cases = Deno.readTextFileSync(new URL("train_examples.jsonl", FIX)).split("\n")
  .filter((l) => l.trim()).map((l) => JSON.parse(l));

Deno.test("train_examples.jsonl: context, prompt/target/input ids, seq_len, labels", () => {
  assert.ok(cases.length >= 12);
  let truncated = 0;
  for (const c of cases) {
    assert.equal(buildInstructionContext(c), c.context, `${c.id}: context`);
    const ex = buildTrainExample(tok, c);
    assert.deepEqual(ex.promptIds, c.prompt_ids, `${c.id}: prompt_ids`);
    assert.deepEqual(ex.targetIds, c.target_ids, `${c.id}: target_ids`);
    assert.deepEqual(ex.inputIds, c.input_ids, `${c.id}: input_ids`);
    assert.equal(ex.seqLen, c.seq_len, `${c.id}: seq_len`);
    const labels = [
      ...Array(c.seq_len - 1).fill(IGNORE_INDEX),
      ...c.input_ids.slice(c.seq_len - 1),
    ];
    assert.deepEqual(ex.labels, labels, `${c.id}: labels`);
    assert.equal(ex.labels[ex.seqLen - 1], tok.sopId);
    if (c.prompt_ids.length === 512) truncated++;
  }
  assert.ok(truncated > 0, "the fixtures include a truncated prompt");
});

Deno.test("buildTrainExample: maxSeqLength cuts the target, never the specials or <eop>", () => {
  const r = {
    instruction: "头痛发热怎么办？",
    output: "建议多喝水，注意休息，体温超过38.5℃可以服用退烧药。",
  };
  const full = buildTrainExample(tok, r);
  const cap = full.promptIds.length + 5;
  const ex = buildTrainExample(tok, r, { maxSeqLength: cap });
  assert.equal(ex.inputIds.length, cap);
  assert.deepEqual(ex.targetIds, full.targetIds.slice(0, 4));
  assert.equal(ex.inputIds.at(-1), tok.eopId);
  assert.deepEqual(ex.promptIds, full.promptIds);
  // a cap smaller than the prompt: the prompt text is cut, [gMASK] <sop> <eop> stay
  const tiny = buildTrainExample(tok, r, { maxSeqLength: 6 });
  assert.equal(tiny.inputIds.length, 6);
  assert.deepEqual(tiny.inputIds.slice(-3), [tok.gmaskId, tok.sopId, tok.eopId]);
  assert.deepEqual(tiny.targetIds, []);
  assert.equal(tiny.labels.filter((l) => l !== IGNORE_INDEX).length, 2);
  // a cap that fits changes nothing
  assert.deepEqual(buildTrainExample(tok, r, { maxSeqLength: 10000 }), full);
  assert.throws(() => buildTrainExample(tok, r, { maxSeqLength: 2 }), /maxSeqLength/);
  // smaller source/target limits
  const small = buildTrainExample(tok, r, { maxSourceLength: 8, maxTargetLength: 3 });
  assert.equal(small.promptIds.length, 8);
  assert.deepEqual(small.promptIds.slice(-2), [tok.gmaskId, tok.sopId]);
  assert.deepEqual(small.targetIds, full.targetIds.slice(0, 3));
});
