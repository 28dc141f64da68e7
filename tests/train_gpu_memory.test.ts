// The training summary's "peak GPU memory" is what the run holds resident (train/gpu_memory.ts):
// the base weights (as stored, and the copies kernels derive from them: packed textures, a
// transposed copy), the adapters, the gradients, the optimizer's state and the pool's peak of the
// rest; not the pool alone. Measured on LoRA, QLoRA (int4 base quantized at load: its packed
// weights and scales are textures outside the pool) and full fine-tuning runs of the tiny model.
import assert from "node:assert/strict";
import { buildTinyTrainData, TINY_MODEL, tinyTrainConfig } from "./helpers/tiny_training.ts";
import type { TrainConfig } from "../train/config.ts";
import type { GpuMemory } from "../train/gpu_memory.ts";
import { train } from "../train/train.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { getGpu } from "../core/gpu/mod.ts";
import { poolStats } from "../core/tensor/mod.ts";

const dataDir = await buildTinyTrainData("train-gpu-memory", 6);

/** Bytes of the tiny model's base parameters as f32 (each tensor once). */
async function baseBytes(): Promise<number> {
  const model = await loadModel(TINY_MODEL, {
    log: () => {},
    progressBar: false,
    dtype: "f32",
    trainable: true,
  });
  try {
    return [...new Set(model.parameters().values())].reduce((n, t) => n + t.byteLength, 0);
  } finally {
    model.dispose();
  }
}

/** Two steps; the summary's memory, its printed line and the trainable value count. */
async function run(extra: Partial<TrainConfig>) {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-memory-" });
  const lines: string[] = [];
  try {
    const r = await train(
      tinyTrainConfig(dataDir, out, { maxSteps: 2, evalSteps: 0, saveSteps: 2, ...extra }),
      {
        log: (line: string) => lines.push(line),
        progressStream: { writeSync: (b: Uint8Array) => b.length },
      },
    );
    const m = r.summary.gpuMemory!;
    assert.ok(m, "the summary has the resident memory");
    const values = Number(
      /(\d[\d,]*) trainable values/.exec(lines.join("\n"))![1].replaceAll(",", ""),
    );
    assert.ok(values > 0);
    // Parts add up; the pool's own peak is less (the optimizer's state is not pooled).
    assert.equal(m.total, m.weights + m.adapters + m.gradients + m.optimizer + m.temporaries);
    assert.ok(m.total > poolStats(await getGpu()).peakBytesInUse);
    // One f32 gradient per trainable value (pool size classes: ≤ 25% or 256 B more each);
    // AdamW's m and v two more, plus a few scratch words.
    assert.ok(m.gradients >= values * 4 && m.gradients <= values * 5 + 256 * 256);
    assert.ok(m.optimizer >= values * 8 && m.optimizer <= values * 8 + 4096);
    assert.ok(m.temporaries > 0, "the step's activations and temporaries");
    const summary = lines.find((l) => l.startsWith("training summary"))!;
    assert.match(
      summary,
      /peak GPU memory\s+\S+ \S*B resident: weights \S+ \S*B \+ adapters .* \+ optimizer .* at their peak/,
    );
    return { m, values };
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

function assertAdapter(m: GpuMemory, values: number) {
  // LoRA A and B in f32, each rounded up to the pool's size class.
  assert.ok(m.adapters >= values * 4 && m.adapters <= values * 5 + 256 * 64, `${m.adapters}`);
  assert.ok(m.adapters < m.weights / 10, "the adapter is small against the base");
}

Deno.test("training summary: peak GPU memory counts what is resident (LoRA and QLoRA)", async () => {
  const base = await baseBytes();
  const lora = await run({});
  // At least the f32 storage (the derived copies come on top).
  assert.ok(lora.m.weights >= base, `weights ${lora.m.weights} < ${base}`);
  assertAdapter(lora.m, lora.values);
  const qlora = await run({ quantize: "4" });
  assertAdapter(qlora.m, qlora.values);
  assert.equal(qlora.values, lora.values, "the same adapter");
  // The block linears int4 instead of f32: less held, and more than the f32 parameters left.
  assert.ok(qlora.m.weights < lora.m.weights, `${qlora.m.weights} ≥ ${lora.m.weights}`);
  assert.ok(qlora.m.weights > base / 8, `${qlora.m.weights}`);
});

Deno.test("training summary: peak GPU memory counts what is resident (full fine-tuning)", async () => {
  const base = await baseBytes();
  const { m, values } = await run({ full: true });
  assert.equal(values * 4, base, "every base parameter is trained");
  assert.equal(m.adapters, 0, "full fine-tuning trains the weights themselves");
  assert.ok(m.weights >= base, `weights ${m.weights} < ${base}`);
});
