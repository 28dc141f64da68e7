/**
 * What the QLoRA tests share: a seeded adapter with nonzero A and B, and the gradient comparison (ChatGLM: tests/qlora_grad.test.ts; the Llama family:
 * tests/llama_quant.test.ts): the same trainable tensors, each within a relative 1e-4 of its
 * largest value, every one of them nonzero.
 */
import assert from "node:assert/strict";
import { initLoraAdapter, type LoraAdapter } from "../../core/adapters/lora_weights.ts";
import { parseLoraConfig } from "../../core/adapters/peft_config.ts";
import { createRng } from "../../base/random.ts";
import { readChatGLMConfig } from "../../core/models/chatglm/config.ts";
import { linearModules as chatglmLinears } from "../../core/models/chatglm/params.ts";

export function assertSameGrads(
  what: string,
  got: Map<string, Float32Array>,
  want: Map<string, Float32Array>,
) {
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
    // f32 accumulation in a different order (packed kernel vs float matmul): relative 1e-4.
    assert.ok(maxD <= 1e-4 * maxW + 1e-7, `${what}: ${name} max diff ${maxD} (max ${maxW})`);
  }
  assert.equal(nonzero, want.size, `${what}: every LoRA gradient is nonzero`);
}

/** A seeded LoRA adapter (r 4, alpha 8) on `targets` with A and B both nonzero. */
export function seededAdapter(
  targets: string[],
  linearModules: Map<string, readonly [number, number]>,
  name: string,
  seed: number,
): LoraAdapter {
  const rng = createRng(seed);
  const adapter = initLoraAdapter(
    parseLoraConfig(
      { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: targets },
      "test adapter",
    ),
    { linearModules, name },
    () => rng.next(),
  );
  for (const m of adapter.modules.values()) {
    for (let i = 0; i < m.b.length; i++) m.b[i] = (rng.next() - 0.5) * 0.2;
  }
  return adapter;
}

/** {@link seededAdapter} for the ChatGLM model at `dir`. */
export async function seededLoraAdapter(
  dir: string,
  targets: string[],
  seed: number,
): Promise<LoraAdapter> {
  return seededAdapter(targets, chatglmLinears(await readChatGLMConfig(dir)), dir, seed);
}
