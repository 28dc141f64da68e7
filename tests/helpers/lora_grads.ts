// Shared by the QLoRA gradient tests: a seeded LoRA adapter whose A and B are both nonzero (so
// every gradient path carries signal) and the comparison of two runs' LoRA gradients.

import assert from "node:assert/strict";
import { readChatGLMConfig } from "../../core/models/chatglm/config.ts";
import { linearModules } from "../../core/models/chatglm/params.ts";
import { initLoraAdapter, type LoraAdapter } from "../../core/adapters/lora_weights.ts";
import { parseLoraConfig } from "../../core/adapters/peft_config.ts";
import { createRng } from "../../base/random.ts";

/** A seeded r 4 adapter of the model at `dir` on `targets`, B drawn in ±0.1 (peft starts it at 0). */
export async function seededLoraAdapter(
  dir: string,
  targets: string[],
  seed: number,
): Promise<LoraAdapter> {
  const config = await readChatGLMConfig(dir);
  const rng = createRng(seed);
  const adapter = initLoraAdapter(
    parseLoraConfig(
      { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: targets },
      "test adapter",
    ),
    { linearModules: linearModules(config), name: dir },
    () => rng.next(),
  );
  for (const m of adapter.modules.values()) {
    for (let i = 0; i < m.b.length; i++) m.b[i] = (rng.next() - 0.5) * 0.2;
  }
  return adapter;
}

/** Same trainable tensors, each within relative 1e-4 (f32 sums in another order), none all zero. */
export function assertSameGrads(
  what: string,
  got: Map<string, Float32Array>,
  want: Map<string, Float32Array>,
): void {
  assert.deepEqual([...got.keys()], [...want.keys()], `${what}: trainable tensors`);
  let nonzero = 0;
  for (const [name, w] of want) {
    const g = got.get(name)!;
    let maxW = 0, maxD = 0;
    for (let i = 0; i < w.length; i++) {
      maxW = Math.max(maxW, Math.abs(w[i]));
      maxD = Math.max(maxD, Math.abs(g[i] - w[i]));
    }
    if (maxW > 0) nonzero++;
    assert.ok(maxD <= 1e-4 * maxW + 1e-7, `${what}: ${name} max diff ${maxD} (max ${maxW})`);
  }
  assert.equal(nonzero, want.size, `${what}: every LoRA gradient is nonzero`);
}
