// The token stage: examples, label masks, truncation, the binary shard format and its readers.
import assert from "node:assert/strict";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/tokenizer/mod.ts";
import { IGNORE_INDEX } from "../data/prompt/mod.ts";
import {
  bucketOrder,
  decodeTokenShard,
  encodeTokenShard,
  lengthHistogram,
  readTokenShard,
  resolveConfig,
  streamTokenShard,
  tokenizeRecord,
} from "../data/build/mod.ts";
import { createTally } from "../data/clean/mod.ts";
import type { CleanRecord } from "../data/clean/mod.ts";

const TOK_DIR = new URL("./fixtures/chatglm-tokenizer", import.meta.url).pathname;
const tok = await loadTokenizer(TOK_DIR);

function settings(tokens: Record<string, unknown> = {}) {
  return resolveConfig({
    name: "t",
    sources: [{ name: "s", paths: ["x"] }],
    tokens: { tokenizer: TOK_DIR, ...tokens },
  }, "/").tokens!;
}

function rec(instruction: string, output: string, input = ""): CleanRecord {
  return { instruction, input, output, source: "s", origin: "f.json:1", lang: "zh" };
}

Deno.test("tokens: examples equal the fine-tuning reference ids, labels masked on the prompt", async () => {
  const lines = (await Deno.readTextFile(`${TOK_DIR}/train_examples.jsonl`)).trim().split("\n");
  assert.ok(lines.length > 0);
  for (const line of lines) {
    const c = JSON.parse(line);
    const ex = tokenizeRecord(
      tok,
      rec(c.instruction, c.output, c.input),
      settings(),
      createTally(),
    );
    assert.ok(ex, c.id);
    assert.deepEqual(ex!.inputIds, c.input_ids, c.id);
    assert.equal(ex!.seqLen, c.seq_len, c.id);
    assert.equal(ex!.inputIds[ex!.inputIds.length - 1], tok.eopId, "<eop> appended");
    ex!.labels.forEach((l, i) => {
      if (i < ex!.seqLen - 1) assert.equal(l, IGNORE_INDEX, `${c.id} label ${i} masked`);
      else assert.equal(l, ex!.inputIds[i], `${c.id} label ${i}`);
    });
    const prompt = ex!.inputIds.slice(0, ex!.seqLen);
    assert.deepEqual(prompt.slice(-2), [tok.gmaskId, tok.sopId]);
  }
});

Deno.test("tokens: truncation keeps [gMASK] <sop> and <eop>; maxTokens drops with a warning", () => {
  const long = "头痛发热怎么办？".repeat(200);
  const t = settings({ maxSeqLength: 64 });
  const tally = createTally();
  const ex = tokenizeRecord(tok, rec(long, long), t, tally)!;
  assert.equal(ex.inputIds.length, 64);
  assert.deepEqual(ex.inputIds.slice(ex.seqLen - 2, ex.seqLen), [tok.gmaskId, tok.sopId]);
  assert.equal(ex.inputIds[63], tok.eopId);
  assert.equal(tally.counts.truncated, 1);
  const shortTarget = tokenizeRecord(tok, rec("问", long), settings({ maxSeqLength: 40 }), tally)!;
  assert.equal(shortTarget.inputIds.length, 40);
  assert.ok(shortTarget.seqLen < 20, "the target is cut before the prompt");
  const drop = createTally();
  assert.equal(tokenizeRecord(tok, rec(long, "好"), settings({ maxTokens: 100 }), drop), null);
  assert.equal(drop.counts["too-long"], 1);
  assert.equal(drop.warnings[0].file, "f.json");
  assert.equal(drop.warnings[0].line, 1);
});

function sample(n: number) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const ids = Array.from({ length: 3 + (i * 7) % 11 }, (_, k) => 100 + i * 13 + k);
    const seqLen = 2 + (i % 3);
    out.push({
      inputIds: ids,
      labels: ids.map((x, k) => (k < seqLen - 1 ? IGNORE_INDEX : x)),
      seqLen,
      recordIndex: n - 1 - i,
    });
  }
  return out;
}

Deno.test("token shard: round trip, compact labels, streaming equals in-memory", async () => {
  const exs = sample(50);
  const bytes = encodeTokenShard(exs);
  const shard = decodeTokenShard(bytes);
  assert.equal(shard.count, 50);
  assert.equal(shard.labelsStored, false, "labels derivable: not stored");
  assert.equal(shard.totalTokens, exs.reduce((n, e) => n + e.inputIds.length, 0));
  exs.forEach((e, i) => {
    const got = shard.example(i);
    assert.deepEqual([...got.inputIds], e.inputIds);
    assert.deepEqual([...got.labels], e.labels);
    assert.equal(got.seqLen, e.seqLen);
    assert.equal(got.recordIndex, e.recordIndex);
    assert.equal(shard.lengthOf(i), e.inputIds.length);
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/a.bin`, bytes);
    const streamed = [];
    for await (const ex of streamTokenShard(`${dir}/a.bin`, 16)) streamed.push(ex);
    assert.deepEqual(streamed, [...(await readTokenShard(`${dir}/a.bin`))]);
    await Deno.writeFile(`${dir}/b.bin`, bytes.subarray(0, bytes.length - 4));
    await assert.rejects(() => readTokenShard(`${dir}/b.bin`), /truncated or corrupt/);
    await assert.rejects(async () => {
      for await (const _ of streamTokenShard(`${dir}/b.bin`)) { /* drain */ }
    }, /truncated or corrupt/);
    await Deno.writeFile(`${dir}/c.bin`, new TextEncoder().encode("not a shard at all, clearly"));
    await assert.rejects(() => readTokenShard(`${dir}/c.bin`), /not a token shard/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token shard: labels that do not follow the prompt mask are stored explicitly", () => {
  const exs = sample(5);
  exs[2].labels[exs[2].labels.length - 1] = IGNORE_INDEX; // e.g. a masked <eop>
  const shard = decodeTokenShard(encodeTokenShard(exs));
  assert.equal(shard.labelsStored, true);
  exs.forEach((e, i) => assert.deepEqual([...shard.example(i).labels], e.labels));
});

Deno.test("bucketing and histogram", () => {
  assert.deepEqual(bucketOrder([5, 1, 3, 9, 2, 2], 3), [1, 2, 0, 4, 5, 3]);
  const h = lengthHistogram([1, 15, 16, 100, 5000]);
  assert.equal(h.find((b) => b.range === "<16")!.count, 2);
  assert.equal(h.find((b) => b.range === "16-31")!.count, 1);
  assert.equal(h.find((b) => b.range === "64-127")!.count, 1);
  assert.equal(h.find((b) => b.range === ">=2048")!.count, 1);
});
