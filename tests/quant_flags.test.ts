// --quantize everywhere a model loads: the flag's parser, its pass-through in infer, serve, bot,
// eval and export-onnx, the memory plan's sizes, and /v1/models saying what the weights are.
import assert from "node:assert/strict";
import { FlagError } from "../base/flags.ts";
import { parseQuantizeFlag } from "../core/quant/flag.ts";
import { parseInferFlags } from "../serve/infer_flags.ts";
import { parseServeFlags } from "../serve/http/flags.ts";
import { parseBotArgs } from "../bot/cli.ts";
import { parseEvalArgs } from "../eval/cli.ts";
import { exportOnnxMain } from "../serve/onnx/export_cli.ts";
import { parseChatGLMConfig } from "../core/models/chatglm/config.ts";
import { formatMemoryPlan, planMemory } from "../core/models/chatglm/memory_plan.ts";
import { createEngine } from "../serve/mod.ts";
import { createApp } from "../serve/http/app.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny-quantized/", import.meta.url).pathname;

Deno.test("--quantize parses bits, group size and embeddings; bad values name the flag", () => {
  assert.equal(parseQuantizeFlag(undefined), undefined);
  assert.deepEqual(parseQuantizeFlag("8"), { bits: 8, groupSize: null, embeddings: false });
  assert.deepEqual(parseQuantizeFlag("4,group=32,embeddings"), {
    bits: 4,
    groupSize: 32,
    embeddings: true,
  });
  for (const bad of ["3", "4,group=12", "4,group=x", "4,fast"]) {
    assert.throws(() => parseQuantizeFlag(bad), (e: Error) => {
      assert.ok(e instanceof FlagError);
      assert.match(e.message, /^--quantize: /);
      return true;
    });
  }
});

Deno.test("--quantize reaches infer, serve, bot and eval", () => {
  const want = { bits: 4, groupSize: null, embeddings: false };
  assert.deepEqual(parseInferFlags(["--quantize", "4"]).quantize, want);
  assert.deepEqual(parseServeFlags(["--quantize", "4"]).quantize, want);
  const bot = parseBotArgs(["--model", "m", "--quantize", "4"], { TELEGRAM_BOT_TOKEN: "t" });
  assert.equal(bot.engine.kind, "local");
  assert.deepEqual(bot.engine.kind === "local" ? bot.engine.quantize : null, want);
  assert.deepEqual(
    parseEvalArgs(["--model", "m", "--tasks", "heldout:x", "--quantize", "4"])?.quantize,
    want,
  );
  assert.throws(() => parseInferFlags(["--quantize", "5"]), /--quantize: bits must be 4 or 8/);
});

Deno.test("export-onnx refuses a bad --quantize with the flag named", async () => {
  let msg = "";
  const err = console.error;
  console.error = (m: string) => (msg += m);
  try {
    assert.equal(await exportOnnxMain(["--model", "m", "--out", "o", "--quantize", "2"]), 2);
  } finally {
    console.error = err;
  }
  assert.match(msg, /--quantize: bits must be 4 or 8/);
});

Deno.test("memory plan: ChatGLM-6B's weights in f16, int8 and int4 (embeddings too)", () => {
  const config = parseChatGLMConfig({
    hidden_size: 4096,
    num_attention_heads: 32,
    num_layers: 28,
    inner_hidden_size: 16384,
    vocab_size: 130528,
    position_encoding_2d: true,
    bos_token_id: 130004,
    eos_token_id: 130005,
    mask_token_id: 130000,
    gmask_token_id: 130001,
    pad_token_id: 3,
  });
  const base = { dtype: "f16" as const, maxContext: 2048, batch: 1 };
  const gib = (n: number) => n / 2 ** 30;
  const f16 = planMemory(config, base);
  const q8 = planMemory(config, {
    ...base,
    quant: { bits: 8, groupSize: null, embeddings: false },
    tiedHead: true,
  });
  const q4e = planMemory(config, {
    ...base,
    quant: { bits: 4, groupSize: null, embeddings: true },
    tiedHead: true,
  });
  assert.ok(gib(f16.weightsBytes) > 12 && gib(f16.weightsBytes) < 12.5, `${gib(f16.weightsBytes)}`);
  // 28 layers × 201M int8 weights + one f16 embedding table (tied head).
  assert.ok(gib(q8.weightsBytes) > 6 && gib(q8.weightsBytes) < 6.5, `${gib(q8.weightsBytes)}`);
  assert.ok(gib(q4e.weightsBytes) > 2.8 && gib(q4e.weightsBytes) < 3.1, `${gib(q4e.weightsBytes)}`);
  assert.match(
    formatMemoryPlan(q4e),
    /int4, per-row scales, embeddings quantized, other weights f16/,
  );
});

Deno.test("/v1/models says which backend runs and what the weights are", async () => {
  const engine = await createEngine({
    model: `${FIX}int4`,
    backend: "webgpu",
    log: () => {},
    progressBar: false,
  });
  try {
    const app = createApp(engine);
    const body = await (await app.request("/v1/models")).json();
    const card = body.data[0];
    assert.equal(card.medglm.backend, "webgpu");
    assert.match(
      card.medglm.weights,
      /^int4, per-row scales \(other weights f(16|32)\), 0\.\d+ GiB$/,
    );
  } finally {
    await engine.close?.();
  }
});
