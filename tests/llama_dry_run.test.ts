// `--dry-run` memory plans for the real Qwen2.5-7B-Instruct, Qwen3-8B and Meta-Llama-3-8B-Instruct
// configs (tests/fixtures/real-configs/: config.json only, no weights, no tokenizer): infer,
// serve and train print a plan whose parameter count is the published total (±1%) and whose
// int4 < int8 < f16, without reading anything but config.json.

import assert from "node:assert/strict";
import { dryRunPlans } from "../core/models/dry_run.ts";
import { readLlamaConfig } from "../core/models/llama/config.ts";
import { llamaPlanArch } from "../core/models/llama/memory_plan.ts";
import { assertPlanFits, planMemoryOf } from "../core/models/chatglm/memory_plan.ts";
import type { GpuLimits } from "../core/gpu/device.ts";
import { loadTrainConfig } from "../train/config.ts";
import { dryRunReport } from "../train/dry_run.ts";
import { trainMemoryPlan } from "../train/memory_plan.ts";
import { runScript as run } from "./helpers/cli.ts";

const REAL = new URL("./fixtures/real-configs", import.meta.url).pathname;

/** Each real config with its published parameter count. */
const MODELS = [
  { dir: "qwen2.5-7b-instruct", type: "qwen2", params: 7.62e9 },
  { dir: "qwen3-8b", type: "qwen3", params: 8.19e9 },
  { dir: "meta-llama-3-8b-instruct", type: "llama", params: 8.03e9 },
];

/** GiB figures of a table row of the inference dry run: weights, GPU after load, GPU peak, … */
function rowGiB(text: string, label: RegExp): number[] {
  const line = text.split("\n").find((l) => label.test(l.trim()));
  assert.ok(line, `no row ${label} in:\n${text}`);
  return [...line.matchAll(/([\d.]+) (GiB|MiB|KiB)/g)].map((m) =>
    Number(m[1]) / (m[2] === "GiB" ? 1 : m[2] === "MiB" ? 1024 : 1024 * 1024)
  );
}

/** The printed parameter count ("parameters 7,615,616,512 (7.62B)"). */
function printedParams(text: string): number {
  const m = /parameters ([\d,]+) \(/.exec(text);
  assert.ok(m, `no parameter count in:\n${text}`);
  return Number(m[1].replaceAll(",", ""));
}

/** A copy of the real config's directory: config.json only (nothing else to read). */
async function onlyConfig(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-real-config-" });
  await Deno.copyFile(`${REAL}/${name}/config.json`, `${dir}/config.json`);
  return dir;
}

for (const m of MODELS) {
  Deno.test(`${m.dir}: the real config parses as the published architecture`, async () => {
    const c = await readLlamaConfig(`${REAL}/${m.dir}`);
    assert.equal(c.modelType, m.type);
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.headDim, 128);
    assert.equal(c.quantization, null);
  });

  Deno.test(`${m.dir}: infer --dry-run prints the published size and int4 < int8 < f16`, async () => {
    const dir = await onlyConfig(m.dir);
    try {
      const r = await run("serve/infer_cli.ts", ["--model", dir, "--dry-run"]);
      assert.equal(r.code, 0, r.stderr);
      const count = printedParams(r.stdout);
      assert.ok(Math.abs(count / m.params - 1) <= 0.01, `${count} vs ${m.params}`);
      assert.match(r.stdout, /config\.json only/);
      const f16 = rowGiB(r.stdout, /^f16 /);
      const int8 = rowGiB(r.stdout, /^int8, per-row scales/);
      const int4 = rowGiB(r.stdout, /^int4, group size 128/);
      // weights, GPU after load, GPU peak, host peak, host peak on a software adapter
      assert.equal(f16.length, 5);
      for (const i of [0, 1, 2, 4]) {
        assert.ok(int4[i] < int8[i] && int8[i] < f16[i], `column ${i}: ${int4} / ${int8} / ${f16}`);
      }
      // f16 weights are 2 bytes per parameter; int8 ≈ 1 and int4 ≈ ½ per block weight.
      assert.ok(Math.abs(f16[0] * 2 ** 30 / (2 * count) - 1) < 1e-3, `f16 ${f16[0]} GiB`);
      assert.ok(int8[0] / f16[0] < 0.6 && int4[0] / f16[0] < 0.4, `${int8[0]}, ${int4[0]}`);
      // A hardware GPU's peak is above its after-load figure (KV cache and activations).
      assert.ok(f16[2] > f16[1]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("the dry-run plan adds up: weights from the parameter table, KV cache of nkv heads", async () => {
  const dir = `${REAL}/meta-llama-3-8b-instruct`;
  const r = await dryRunPlans(dir, { maxContext: 4096, batch: 2 });
  assert.equal(r.parameters, 8_030_261_248);
  const [f16, int8, int4] = r.rows;
  assert.equal(f16.hardware.weightsBytes, 2 * 8_030_261_248);
  // KV cache: 2 (k, v) × 32 layers × 2 rows × 4096 positions × 8 kv heads × 128 × f32.
  assert.equal(f16.hardware.kvCacheBytes, 2 * 32 * 2 * 4096 * 8 * 128 * 4);
  // int8: one byte per block weight and one f16 scale per row; embeddings and head stay f16.
  const h = 4096, inner = 14336, V = 128256, L = 32;
  const block = L * (2 * h * h + 2 * 1024 * h + 3 * inner * h);
  const rows = L * (3 * h + 2 * 1024 + 2 * inner); // output rows of the seven projections
  const floats = 2 * V * h + L * 2 * h + h;
  assert.equal(int8.hardware.weightsBytes, block + rows * 2 + floats * 2);
  // int4 group 128: half a byte per weight and one f16 scale per 128 inputs.
  assert.equal(int4.quant?.groupSize, 128);
  assert.equal(int4.hardware.weightsBytes, block / 2 + (block / 128) * 2 + floats * 2);
  // A plain load takes f16 (as ChatGLM-6B's, on a GPU with shader-f16): the f16 row; an f32
  // run adds its own row, last.
  assert.equal(r.rows.length, 3, "the default run is the f16 row");
  const f32Run = await dryRunPlans(dir, { dtype: "f32" });
  assert.equal(f32Run.rows.length, 4);
  assert.equal(f32Run.rows[3].label, "f32");
  assert.equal(f32Run.rows[3].hardware.weightsBytes, 4 * 8_030_261_248);
  // The software adapter holds everything in host memory.
  assert.ok(int4.software.hostPeakBytes > int4.hardware.gpuPeakBytes);
});

Deno.test("serve --dry-run plans the KV cache of --max-concurrent rows", async () => {
  const dir = await onlyConfig("qwen2.5-7b-instruct");
  try {
    const one = await run("serve/cli.ts", ["--model", dir, "--dry-run", "--max-concurrent", "1"]);
    const four = await run("serve/cli.ts", ["--model", dir, "--dry-run", "--max-concurrent", "4"]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(four.code, 0, four.stderr);
    assert.match(one.stdout, /batch 1;/);
    assert.match(four.stdout, /batch 4;/);
    assert.ok(rowGiB(four.stdout, /^f16 /)[2] > rowGiB(one.stdout, /^f16 /)[2]);
    assert.equal(printedParams(four.stdout), 7_615_616_512);
    // --quantize adds its own row and plans the run as asked.
    const q = await run("serve/cli.ts", ["--model", dir, "--dry-run", "--quantize", "4,group=32"]);
    assert.equal(q.code, 0, q.stderr);
    // serve loads the other weights f16 by default (every architecture), f32 with --dtype f32.
    assert.match(q.stdout, /the run as asked \(int4, group size 32\), on/);
    const q32 = await run("serve/cli.ts", [
      "--model",
      dir,
      "--dry-run",
      "--quantize",
      "4,group=32",
      "--dtype",
      "f32",
    ]);
    assert.equal(q32.code, 0, q32.stderr);
    assert.match(q32.stdout, /the run as asked \(int4, group size 32, other weights f32\)/);
    assert.ok(
      rowGiB(q.stdout, /^int4, group size 32/)[0] > rowGiB(q.stdout, /^int4, group size 128/)[0],
    );
    // A directory without config.json says what the dry run needs.
    const empty = await Deno.makeTempDir({ prefix: "medglm-empty-" });
    const bad = await run("serve/infer_cli.ts", ["--model", empty, "--dry-run"]);
    await Deno.remove(empty);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--dry-run: .*config\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const m of MODELS) {
  Deno.test(`${m.dir}: train --dry-run, LoRA r 8 on q/k/v/o, batch 1 × 512, recompute`, async () => {
    const dir = await onlyConfig(m.dir);
    try {
      const args = [
        "--model",
        dir,
        "--dry-run",
        "--preset",
        "medical-lora",
        "--batch-size",
        "1",
        "--grad-accumulation",
        "1",
        "--max-length",
        "512",
        "--recompute",
      ];
      const text = await dryRunReport((await loadTrainConfig(args)).config, null);
      // "8.03B params × 2 B (f16)"
      const billions = Number(/([\d.]+)B params × 2 B/.exec(text)?.[1]);
      assert.ok(Math.abs(billions * 1e9 / m.params - 1) <= 0.01, text);
      assert.match(text, /LoRA r 8 on q_proj, k_proj, v_proj, o_proj/);
      const totals = [/^f16 /, /^int8, per-row scales/, /^int4, group size 128/].map((re) => {
        const line = text.split("\n").find((l) => re.test(l.trim()));
        assert.ok(line, `${re} in:\n${text}`);
        const all = [...line.matchAll(/([\d.]+) (GiB|MiB)/g)];
        const last = all[all.length - 1];
        return Number(last[1]) * (last[2] === "GiB" ? 1024 : 1);
      });
      assert.ok(totals[2] < totals[1] && totals[1] < totals[0], `${totals}`);
      // Nothing of the bundled ChatGLM-6B plan for a Llama-family model.
      assert.doesNotMatch(text, /ChatGLM-6B \(bundled config\)/);
      // The same through the CLI, in a subprocess.
      const r = await run("train/cli.ts", args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /total with recompute/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("the training plan of a Llama config counts what the family keeps", async () => {
  const c = await readLlamaConfig(`${REAL}/qwen3-8b`);
  const plan = trainMemoryPlan({
    model: c,
    weightDtype: "f16",
    full: false,
    loraR: 8,
    targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
    batchSize: 1,
    seqLen: 512,
    recompute: true,
  });
  assert.equal(plan.baseParams, 8_190_735_360);
  // LoRA r 8: q, o (4096 → 4096), k, v (4096 → 1024) in 36 layers.
  assert.equal(plan.trainableParams, 36 * 8 * (2 * (4096 + 4096) + 2 * (4096 + 1024)));
  assert.equal(plan.targetedModules.length, 144);
  // Attention probabilities of one layer: 32 heads × 512² f32.
  assert.ok(
    plan.largest.some((t) =>
      t.name.startsWith("attention probs") && t.bytes === 32 * 512 * 512 * 4
    ),
  );
  // KV cache (reference) of 8 kv heads of 128.
  assert.equal(plan.kvCache.bytes, 2 * 36 * 512 * 1024 * 2);
  assert.throws(
    () => trainMemoryPlan({ ...plan.input, targetModules: ["query_key_value"] }),
    /match no linear module of the model \(its modules: q_proj, k_proj/,
  );
  const int4 = trainMemoryPlan({
    ...plan.input,
    model: { ...c, quantization: { bits: 4, groupSize: 128, embeddings: false } },
  });
  assert.ok(int4.totalWithRecompute < plan.totalWithRecompute / 2);
});

Deno.test("the real configs' weights and KV cache fit llvmpipe's bindings; only a full-context row does not", async () => {
  // llvmpipe's limits (the two the plan reads; the rest do not matter here).
  const limits = {
    maxStorageBufferBindingSize: 2 ** 27,
    maxBufferSize: 2 ** 31 - 1,
  } as unknown as GpuLimits;
  for (const m of MODELS) {
    const c = await readLlamaConfig(`${REAL}/${m.dir}`);
    const plan = planMemoryOf(llamaPlanArch(c), { dtype: "f16", maxContext: 4096, batch: 1 });
    // One row of 4096 positions of the MLP is over 128 MiB: a step refuses such an input itself,
    // so loadLlamaModel checks the other buffers only (a load for shorter inputs goes ahead).
    const rows = plan.bindings.filter((b) => b.perRow);
    assert.ok(rows.some((b) => b.bytes > 2 ** 27), m.dir);
    assert.throws(() => assertPlanFits(plan, limits), /MLP activations of one row/);
    assertPlanFits({ ...plan, bindings: plan.bindings.filter((b) => !b.perRow) }, limits);
  }
});
