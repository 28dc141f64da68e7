// `deno task train --dry-run --quantize 4` plans the real ChatGLM-6B config (bundled, no checkpoint
// needed) with an int4 base: the case (batch 1, length 512, LoRA r 8 on query_key_value,
// recompute) fits in 6 GiB; without --quantize the same plan does not.

import assert from "node:assert/strict";
import { loadTrainConfig } from "../train/config.ts";
import { dryRunReport } from "../train/dry_run.ts";
import { withBaseQuantization } from "../train/quantize.ts";
import { baseQuantizationOf, parseLoraConfig } from "../core/adapters/peft_config.ts";

const ARGS = [
  "--preset",
  "chatglm-lora-medical",
  "--dry-run",
  "--recompute",
  "--batch-size",
  "1",
  "--max-length",
  "512",
];

function gib(report: string, row: string): number {
  const m = new RegExp(`${row}\\s+([\\d.]+) (GiB|MiB)`).exec(report);
  assert.ok(m, `no "${row}" row in:\n${report}`);
  return Number(m[1]) / (m[2] === "MiB" ? 1024 : 1);
}

Deno.test("train --dry-run --quantize 4: ChatGLM-6B, batch 1 × 512, LoRA r 8 qkv, recompute ≤ 6 GiB", async () => {
  const q = await dryRunReport((await loadTrainConfig([...ARGS, "--quantize", "4"])).config, null);
  assert.match(q, /ChatGLM-6B \(bundled config\)/);
  assert.match(q, /int4, per-row scales, others f16/);
  assert.match(q, /LoRA r 8 on query_key_value \(28 modules\)/);
  const total = gib(q, "total with recompute");
  assert.ok(total <= 6, `QLoRA plan ${total} GiB`);
  const base = gib(q, "base weights");
  assert.ok(base > 3 && base < 4, `int4 base ${base} GiB`);

  const f16 = await dryRunReport((await loadTrainConfig(ARGS)).config, null);
  assert.ok(gib(f16, "total with recompute") > 12, "the f16 base alone is ~12.5 GiB");

  const g = await dryRunReport(
    (await loadTrainConfig([...ARGS, "--quantize", "4,group=32"])).config,
    null,
  );
  assert.match(g, /int4, group size 32/);
  assert.ok(gib(g, "base weights") > base, "group scales cost memory");
});

Deno.test("adapter config records an int8/int4 base and nothing for a float one", () => {
  const raw = { r: 8, medglm_base_quantization: { bits: 8, group_size: null } };
  const q4 = withBaseQuantization(raw, { bits: 4, groupSize: 32, embeddings: false });
  assert.deepEqual(q4.medglm_base_quantization, { bits: 4, group_size: 32 });
  assert.deepEqual(baseQuantizationOf({ raw: q4 }), { bits: 4, groupSize: 32 });
  const float = withBaseQuantization(raw, null);
  assert.ok(!("medglm_base_quantization" in float), "a stale record is removed");
  assert.equal(baseQuantizationOf({ raw: float }), undefined);
  assert.equal(raw.medglm_base_quantization.bits, 8, "the input is not changed");
  assert.throws(
    () =>
      parseLoraConfig({
        peft_type: "LORA",
        r: 8,
        target_modules: ["query_key_value"],
        medglm_base_quantization: { bits: 3 },
      }, "x/adapter_config.json"),
    /x\/adapter_config.json: medglm_base_quantization must be null or/,
  );
});
