/**
 * The "small" ChatGLM config the benchmarks share (hidden 1024, 8 layers, 16 heads, vocab 32000):
 * big enough that matmuls dominate, small enough for a software adapter.
 *
 * Run alone it is the f32-versus-f16-weights A/B of that model (issue #20: f16 must be at least as
 * fast as f32 in every phase on software adapters): prefill and decode tokens/s with each weight
 * dtype, the contenders alternating over rounds and each keeping its best, and the f16 ÷ f32
 * ratios. `--baseline REF` also times the kernels of git ref REF (its core/ and base/, as in
 * bench/matmul.ts) in the same rounds.
 *
 * `deno run -A bench/small_model.ts [--prompt 64] [--decode 8] [--rounds 3] [--baseline REF]`
 */
import { parseArgs } from "node:util";
import { type ChatGLMConfig, getGpu, parseChatGLMConfig, randomChatGLM } from "../core/mod.ts";
import { loadBaseline } from "./matmul.ts";

export function smallConfig(maxSequenceLength = 512): ChatGLMConfig {
  return parseChatGLMConfig(smallConfigJson(maxSequenceLength), "small config");
}

/** The config.json of the small model (also parsed by a baseline's own parser). */
export const smallConfigJson = (maxSequenceLength: number): Record<string, unknown> => ({
  architectures: ["ChatGLMModel"],
  model_type: "chatglm",
  hidden_size: 1024,
  num_attention_heads: 16,
  num_layers: 8,
  inner_hidden_size: 4096,
  vocab_size: 32000,
  layernorm_epsilon: 1e-5,
  max_sequence_length: maxSequenceLength,
  position_encoding_2d: true,
  bos_token_id: 31004,
  eos_token_id: 31005,
  mask_token_id: 31000,
  gmask_token_id: 31001,
  pad_token_id: 3,
});

/** The parts of a core member the A/B needs (this checkout's, or a baseline's). */
interface ModelCore {
  getGpu: typeof getGpu;
  parseChatGLMConfig: typeof parseChatGLMConfig;
  randomChatGLM: typeof randomChatGLM;
}

type Model = ReturnType<typeof randomChatGLM>;

/** Prefill and decode seconds of one generation (batch 1) on a warm model. */
async function generate(model: Model, ids: number[], decode: number) {
  const cache = model.createCache(1, ids.length + decode + 1);
  try {
    let t = performance.now();
    await model.prefill([ids], cache);
    const prefill = (performance.now() - t) / 1000;
    t = performance.now();
    for (let i = 0; i < decode; i++) await model.decodeStep([5 + i], cache);
    return { prefill, decode: (performance.now() - t) / 1000 };
  } finally {
    cache.free();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      prompt: { type: "string", default: "64" },
      decode: { type: "string", default: "8" },
      rounds: { type: "string", default: "3" },
      baseline: { type: "string" },
    },
  });
  const count = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`bench/small_model.ts: --${flag} must be a positive integer, got "${v}"`);
    }
    return n;
  };
  const promptLen = count("prompt", values.prompt!);
  const decode = count("decode", values.decode!);
  const rounds = count("rounds", values.rounds!);
  const base = values.baseline ? await loadBaseline(values.baseline) : null;
  const cores: { name: string; core: ModelCore; gpu: Awaited<ReturnType<typeof getGpu>> }[] = [
    { name: "ours", core: { getGpu, parseChatGLMConfig, randomChatGLM }, gpu: await getGpu() },
  ];
  if (base) {
    cores.push({
      name: `base ${base.ref}`,
      core: base.core as unknown as ModelCore,
      gpu: base.gpu,
    });
  }
  console.log(
    `small ChatGLM (h1024, 8 layers), prompt ${promptLen}, ${decode} decode steps, best of ${rounds}` +
      ` alternating rounds — ${cores[0].gpu.adapterInfo.description} (${cores[0].gpu.backend})`,
  );
  const results = new Map<string, { prefill: number; decode: number }>();
  try {
    for (const dtype of ["f32", "f16"] as const) {
      const models = cores.map(({ core, gpu }) => {
        const config = core.parseChatGLMConfig(smallConfigJson(512), "small config");
        return core.randomChatGLM(gpu, config, { dtype }) as Model;
      });
      const ids = [
        ...Array.from({ length: promptLen - 2 }, (_, i) => 5 + ((i * 7919) % 1000)),
        31001,
        31004,
      ];
      try {
        for (const m of models) await generate(m, ids, decode); // warm-up: compile, packing
        for (let r = 0; r < rounds; r++) {
          for (const [i, m] of models.entries()) {
            const t = await generate(m, ids, decode);
            const key = `${cores[i].name} ${dtype}`;
            const best = results.get(key) ?? { prefill: Infinity, decode: Infinity };
            results.set(key, {
              prefill: Math.min(best.prefill, t.prefill),
              decode: Math.min(best.decode, t.decode),
            });
          }
        }
      } finally {
        models.forEach((m) => m.dispose());
      }
    }
  } finally {
    if (base) await Deno.remove(base.dir, { recursive: true });
  }
  console.log(
    `${"kernels".padEnd(22)}${"prefill tok/s".padStart(15)}${"decode tok/s".padStart(14)}`,
  );
  for (const { name } of cores) {
    for (const dtype of ["f32", "f16"]) {
      const t = results.get(`${name} ${dtype}`)!;
      console.log(
        `${`${name} ${dtype}`.padEnd(22)}${(promptLen / t.prefill).toFixed(1).padStart(15)}${
          (decode / t.decode).toFixed(2).padStart(14)
        }`,
      );
    }
    const a = results.get(`${name} f32`)!;
    const b = results.get(`${name} f16`)!;
    console.log(
      `${`${name} f16 ÷ f32`.padEnd(22)}${(a.prefill / b.prefill).toFixed(2).padStart(15)}${
        (a.decode / b.decode).toFixed(2).padStart(14)
      }`,
    );
  }
}

if (import.meta.main) await main();
