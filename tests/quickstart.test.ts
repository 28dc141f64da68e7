// The README's quick start shows fine-tuning working: the demo preset's LoRA, on topics the demo
// base never saw (data/configs/demo.json), lowers the eval loss on reworded questions of those
// topics by a clear margin, and that loss starts high (the base does not know the answers).
// Shortened to a few steps so that it runs in well under a minute on a CPU adapter.

import assert from "node:assert/strict";
import { loadConfig } from "../data/build/config.ts";
import { buildDataset } from "../data/build/pipeline.ts";
import { preset } from "../train/config.ts";
import { train } from "../train/train.ts";
import { DEMO_DATA_CONFIG } from "../train/loop/demo_paths.ts";
import {
  NEW_TOPICS_PATH,
  readBuildRecords,
  readSamples,
  recordKey,
  REWORDED_PATH,
} from "../demo/split.ts";

async function buildQuickStartData(out: string): Promise<void> {
  const { config } = await loadConfig(DEMO_DATA_CONFIG);
  await buildDataset(config, {
    baseDir: DEMO_DATA_CONFIG.replace(/\/[^/]*$/, ""),
    out,
    progress: false,
  });
}

Deno.test("quick start data: trains on the new topics, evaluates on reworded questions", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-quickstart-data-" });
  try {
    await buildQuickStartData(out);
    const fresh = await readSamples(NEW_TOPICS_PATH);
    const reworded = await readSamples(REWORDED_PATH);
    const train = await readBuildRecords(out, "train");
    const valid = await readBuildRecords(out, "valid");
    // The split by file puts the reworded file, and only it, on the validation side.
    assert.deepEqual(new Set(train.map(recordKey)), new Set(fresh.map(recordKey)));
    assert.deepEqual(new Set(valid.map(recordKey)), new Set(reworded.map(recordKey)));
    // Each reworded question keeps a new-topic answer and changes its wording.
    const byAnswer = new Map(fresh.map((s) => [s.output, s.instruction]));
    for (const r of reworded) {
      const original = byAnswer.get(r.output);
      assert.ok(original !== undefined, `reworded record with no new-topic answer: ${r.output}`);
      assert.notEqual(r.instruction, original, `not reworded: ${r.instruction}`);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("quick start, shortened: the LoRA lowers eval loss on the new topics clearly", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-quickstart-" });
  try {
    await buildQuickStartData(`${out}/data`);
    const lines: string[] = [];
    const r = await train({
      ...preset("demo"),
      data: `${out}/data`,
      outputDir: `${out}/run`,
      maxSteps: 20,
      evalSteps: 0,
    }, { log: (l) => lines.push(l), progressStream: { writeSync: (b: Uint8Array) => b.length } });
    assert.equal(r.steps, 20);
    const before = r.evals[0], after = r.evals[r.evals.length - 1];
    assert.equal(before.step, 0, "no eval before training");
    assert.equal(after.step, 20);
    // The base does not already know the new topics' answers …
    assert.ok(before.loss > 3, `eval loss before training only ${before.loss.toFixed(3)}`);
    // … and 20 of the quick start's 100 steps already take a clear part of that loss away.
    assert.ok(
      after.loss < before.loss - 1,
      `eval loss ${before.loss.toFixed(3)} → ${after.loss.toFixed(3)}: no clear fall`,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
