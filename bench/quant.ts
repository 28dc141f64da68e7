/**
 * int8/int4 weights (ChatGLM-6B's own format, core/quant), measured in one run:
 *
 * 1. Speed, M = 1 (decode) at ChatGLM-6B's layer shapes (qkv 4096×12288, h→4h 4096×16384,
 *    4h→h 16384×4096): our int8 and int4 kernels against our f16-weight kernel (WebGPU; issue 17's
 *    targets: int4 ≥ 2.5×, int8 ≥ 1.6×), and ONNX Runtime's com.microsoft MatMulNBits (int4, int8)
 *    against ORT's f32 MatMul (target: int4 ≥ 2.5×).
 *    ORT's int4 target is measured on the export default, int8 activations (`accuracy_level` 4);
 *    f32 activations are shown beside it.
 * 2. Quality: the demo model's held-out perplexity with f16 weights, int8, int4 per row and int4 group-wise (32), with
 *    quantized embeddings, and the ONNX exports with f32 and int8 activations, with the share of
 *    positions whose next-token argmax agrees with WebGPU's for the same weights.
 *
 * 3. `--input-grad` only: QLoRA's input gradient (dx = dy · W through the frozen int8/int4
 *    weight, `quantInputGrad`) at the LoRA step's M = 128 rows (batch 1 × 128): the tiled kernel
 *    (up to 8 rows of dy per invocation, each packed word read once per tile) against the one-row
 *    kernel (`rows: 1`, the weight read once per row), in the same run, alternating.
 *
 * `deno task bench quant [--speed | --quality | --input-grad] [--quick]` (needs --allow-ffi for
 * ORT). `--quick`: one layer shape.
 */

import {
  DEMO_MODEL_DIR,
  encodeOnnxModel,
  exportChatGLMToOnnx,
  exportMergedModel,
  f32ToF16,
  getGpu,
  type Gpu,
  loadChatGLM as loadModel,
  MS_DOMAIN,
  type OnnxGraph,
  quantInputGrad,
  quantizeF16,
  type QuantizeOption,
  releaseTensor,
  storedBytes,
  type Tensor,
  toMatMulNBits,
  uploadQuantWeight,
  uploadTensor,
} from "../core/mod.ts";
import { buildDataset, loadChatGLMTokenizer as loadTokenizer, loadConfig } from "../data/mod.ts";
import {
  exampleNll,
  fromChatGLMModel,
  type LogitsModel,
  perplexityOf,
  readHeldout,
} from "../eval/mod.ts";
import { DEMO_DATA_CONFIG } from "../train/mod.ts";
import { fillRandom, linearSeconds, opSeconds } from "./linear_timing.ts";
import { loadOnnxModel } from "../serve/mod.ts";

const LAYERS: [string, number, number][] = [
  ["qkv 4096x12288", 4096, 12288],
  ["h→4h 4096x16384", 4096, 16384],
  ["4h→h 16384x4096", 16384, 4096],
];

// deno-lint-ignore no-explicit-any
type Ort = any;

async function timeOrt(ort: Ort, graph: OnnxGraph, K: number, budget: number): Promise<number> {
  const opsets = graph.nodes.some((n) => n.domain === MS_DOMAIN) ? { [MS_DOMAIN]: 1 } : undefined;
  const model = await encodeOnnxModel(graph, { opset: 17, opsets });
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
  });
  try {
    const a = new ort.Tensor("float32", fillRandom(K, 7), [1, K]);
    const run = async (reps: number) => {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) await session.run({ A: a });
      return (performance.now() - t0) / 1000;
    };
    await run(2);
    const once = await run(1);
    const reps = Math.max(3, Math.min(200, Math.round(budget / Math.max(once, 1e-5))));
    await new Promise((r) => setTimeout(r, 100));
    return (await run(reps)) / reps;
  } finally {
    await session.release?.();
  }
}

function f32Graph(K: number, N: number, b: Float32Array): OnnxGraph {
  return {
    name: "matmul",
    nodes: [{ op: "MatMul", inputs: ["A", "B"], outputs: ["C"] }],
    initializers: [{
      name: "B",
      dtype: "float32",
      dims: [K, N],
      data: new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
    }],
    inputs: [{ name: "A", dtype: "float32", shape: [1, K] }],
    outputs: [{ name: "C", dtype: "float32", shape: [1, N] }],
  };
}

function nbitsGraph(
  K: number,
  N: number,
  m: ReturnType<typeof quantizeF16>,
  accuracyLevel: 0 | 4,
): OnnxGraph {
  const p = toMatMulNBits(m);
  return {
    name: "matmul_nbits",
    nodes: [{
      op: "MatMulNBits",
      domain: MS_DOMAIN,
      inputs: ["A", "B", "S"],
      outputs: ["C"],
      attributes: {
        K: { type: "int", value: K },
        N: { type: "int", value: N },
        bits: { type: "int", value: m.bits },
        block_size: { type: "int", value: p.blockSize },
        accuracy_level: { type: "int", value: accuracyLevel },
      },
    }],
    initializers: [
      { name: "B", dtype: "uint8", dims: [N, p.kBlocks, (p.blockSize * m.bits) / 8], data: p.b },
      {
        name: "S",
        dtype: "float32",
        dims: [N * p.kBlocks],
        data: new Uint8Array(p.scales.buffer, p.scales.byteOffset, p.scales.byteLength),
      },
    ],
    inputs: [{ name: "A", dtype: "float32", shape: [1, K] }],
    outputs: [{ name: "C", dtype: "float32", shape: [1, N] }],
  };
}

const pad = (s: string, n: number) => s.padStart(n);
const ms = (s: number) => (s * 1000).toFixed(2);

async function speed(gpu: Gpu, ort: Ort | string, quick: boolean): Promise<string[]> {
  const misses: string[] = [];
  console.log(
    `M = 1, ms per call — ${gpu.adapterInfo.description} (${gpu.backend}${
      gpu.isSoftware ? ", software" : ""
    }); ORT = onnxruntime-node CPU; ratios = baseline time / this time (higher is better)`,
  );
  if (typeof ort === "string") console.log(ort);
  console.log(
    `${"layer".padEnd(18)}${pad("f16w", 8)}${pad("int8", 8)}${pad("int4", 8)}${pad("i8/f16", 8)}${
      pad("i4/f16", 8)
    }${pad("ORT f32", 9)}${pad("i4", 8)}${pad("i4 a8", 8)}${pad("i8 a8", 8)}${pad("i4/f32", 8)}${
      pad("i4a8/f32", 10)
    }${pad("i8a8/f32", 10)}`,
  );
  const budget = quick ? 0.15 : 0.4;
  for (const [label, K, N] of quick ? LAYERS.slice(0, 1) : LAYERS) {
    const w = fillRandom(N * K, N + K);
    const w16bits = f32ToF16(w);
    const x = uploadTensor(gpu, fillRandom(K, 3), [1, K]);
    // All three weights resident, timed in alternating rounds and the best kept: the machine is
    // shared, and a burst of other load must not land on one contender only.
    const ours: Record<string, Tensor> = { f16: uploadTensor(gpu, w16bits, [N, K], "f16") };
    const ortTimes: Record<string, number> = {};
    for (const bits of [8, 4] as const) {
      const m = quantizeF16(w16bits, N, K, bits);
      ours[bits] = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { label });
      if (typeof ort !== "string") {
        // int8 weights with f32 activations have no fast ORT kernel (measured ~30× slower).
        if (bits === 4) ortTimes["4"] = await timeOrt(ort, nbitsGraph(K, N, m, 0), K, budget);
        ortTimes[`${bits}a8`] = await timeOrt(ort, nbitsGraph(K, N, m, 4), K, budget);
      }
    }
    const times: Record<string, number> = {};
    for (let round = 0; round < 3; round++) {
      for (const [key, w] of Object.entries(ours)) {
        const t = await linearSeconds(gpu, x, w, budget);
        times[key] = Math.min(times[key] ?? Infinity, t);
      }
    }
    const tF16 = times.f16;
    for (const w of Object.values(ours)) releaseTensor(w);
    releaseTensor(x);
    let tOrt = NaN;
    if (typeof ort !== "string") {
      // ORT's MatMul takes B as [K, N].
      const b = new Float32Array(K * N);
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) b[k * N + n] = w[n * K + k];
      tOrt = await timeOrt(ort, f32Graph(K, N, b), K, budget);
    }
    const r8 = tF16 / times[8], r4 = tF16 / times[4];
    const o4 = tOrt / ortTimes["4"], o4a = tOrt / ortTimes["4a8"], o8a = tOrt / ortTimes["8a8"];
    console.log(
      `${label.padEnd(18)}${pad(ms(tF16), 8)}${pad(ms(times[8]), 8)}${pad(ms(times[4]), 8)}${
        pad(r8.toFixed(2), 8)
      }${pad(r4.toFixed(2), 8)}${pad(ms(tOrt), 9)}${pad(ms(ortTimes["4"]), 8)}${
        pad(ms(ortTimes["4a8"]), 8)
      }${pad(ms(ortTimes["8a8"]), 8)}${pad(o4.toFixed(2), 8)}${pad(o4a.toFixed(2), 10)}${
        pad(o8a.toFixed(2), 10)
      }`,
    );
    if (r4 < 2.5) misses.push(`${label}: WebGPU int4/f16 ${r4.toFixed(2)} < 2.5`);
    if (r8 < 1.6) misses.push(`${label}: WebGPU int8/f16 ${r8.toFixed(2)} < 1.6`);
    if (!(o4a >= 2.5)) {
      misses.push(
        `${label}: ORT MatMulNBits int4 (int8 activations) / f32 ${o4a.toFixed(2)} < 2.5`,
      );
    }
  }
  return misses;
}

/**
 * QLoRA's dx = dy · W at M = 128: the tiled input gradient against the one-row kernel (same run,
 * alternating rounds, best of each), int4 and int8, per layer shape (W [N, K]: dy [M, N] → [M, K]).
 */
async function inputGrad(gpu: Gpu, quick: boolean): Promise<void> {
  const M = 128;
  console.log(
    `\nQLoRA input gradient dx = dy · W, M = ${M}, ms per call — ${gpu.adapterInfo.description}; ` +
      "ratio = one-row kernel / tiled (higher is better)",
  );
  console.log(
    `${"layer".padEnd(18)}${pad("bits", 6)}${pad("1 row", 10)}${pad("tiled", 10)}${
      pad("ratio", 8)
    }`,
  );
  const budget = quick ? 0.5 : 1.5;
  for (const [label, K, N] of quick ? LAYERS.slice(0, 1) : LAYERS) {
    const w16bits = f32ToF16(fillRandom(N * K, N + K));
    const dy = uploadTensor(gpu, fillRandom(M * N, 5), [M, N]);
    for (const bits of [4, 8] as const) {
      const m = quantizeF16(w16bits, N, K, bits);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { label });
      const times = { one: Infinity, tiled: Infinity };
      for (let round = 0; round < 2; round++) {
        for (const key of ["one", "tiled"] as const) {
          const rows = key === "one" ? { rows: 1 as const } : {};
          const t = await opSeconds(
            gpu,
            (rec) => quantInputGrad(rec, w, dy, undefined, rows),
            budget,
          );
          times[key] = Math.min(times[key], t);
        }
      }
      releaseTensor(w);
      console.log(
        `${label.padEnd(18)}${pad(`int${bits}`, 6)}${pad(ms(times.one), 10)}${
          pad(ms(times.tiled), 10)
        }${pad((times.one / times.tiled).toFixed(2), 8)}`,
      );
    }
    releaseTensor(dy);
  }
}

/** `lm` whose forward also records each position's argmax (to compare two models' runs). */
function recordingArgmax(lm: LogitsModel, out: number[]): LogitsModel {
  return {
    vocabSize: lm.vocabSize,
    padId: lm.padId,
    forward: async (ids) => {
      const logits = await lm.forward(ids);
      const V = lm.vocabSize;
      for (let off = 0; off < logits.length; off += V) {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[off + v] > logits[off + best]) best = v;
        out.push(best);
      }
      return logits;
    },
  };
}

function agreement(a: number[], b: number[]): number {
  if (a.length !== b.length || a.length === 0) return NaN;
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

async function quality(): Promise<string[]> {
  const tmp = await Deno.makeTempDir({ prefix: "bench-quant-" });
  const misses: string[] = [];
  try {
    const { config } = await loadConfig(DEMO_DATA_CONFIG);
    const tokens = config.tokens ? { ...config.tokens, tokenizer: DEMO_MODEL_DIR } : undefined;
    await buildDataset({ ...config, tokens }, {
      baseDir: DEMO_DATA_CONFIG.replace(/\/[^/]*$/, ""),
      out: `${tmp}/data`,
      progress: false,
    });
    const tokenizer = await loadTokenizer(DEMO_MODEL_DIR);
    const heldout = await readHeldout(`${tmp}/data`, { tokenizer });
    // The trained model for this split: the demo base (which never saw the new topics) with the
    // quick start's LoRA merged (f16), the LoRA trained on the new topics' training file; the
    // held-out split is the questions reworded (data/configs/demo.json), seen by neither.
    const model = `${tmp}/merged`;
    await exportMergedModel(DEMO_MODEL_DIR, `${DEMO_MODEL_DIR}/adapter`, model, { dtype: "F16" });
    console.log(
      `\nquality: the demo model (${DEMO_MODEL_DIR}) with its quick-start adapter merged, on ` +
        `the held-out split of ${DEMO_DATA_CONFIG} (${heldout.length} examples never trained ` +
        "on), token-level perplexity of the answers (WebGPU; ONNX Runtime where named)",
    );
    console.log(
      `${"weights".padEnd(42)}${pad("loss", 9)}${pad("ppl", 9)}${pad("vs f16", 9)}${
        pad("argmax = WebGPU", 17)
      }`,
    );
    const variants: [string, QuantizeOption | undefined][] = [
      ["f16", undefined],
      ["int8 (per row)", 8],
      ["int4 (per row, the original's)", 4],
      ["int4 group-wise (32)", { bits: 4, groupSize: 32 }],
      ["int4 group-wise (32) + embeddings", { bits: 4, groupSize: 32, embeddings: true }],
    ];
    let base = NaN;
    const ppl: Record<string, number> = {};
    const row = (name: string, score: { loss: number; perplexity: number }, agree?: number) => {
      if (Number.isNaN(base)) base = score.perplexity;
      ppl[name] = score.perplexity;
      console.log(
        `${name.padEnd(42)}${pad(score.loss.toFixed(4), 9)}${pad(score.perplexity.toFixed(3), 9)}${
          pad(`${((score.perplexity / base - 1) * 100).toFixed(2)}%`, 9)
        }${pad(agree === undefined ? "" : `${(agree * 100).toFixed(2)}%`, 17)}`,
      );
    };
    // Next-token argmax per position of the WebGPU runs the ONNX ones are compared with.
    const webgpuArgmax: Record<string, number[]> = {};
    for (const [name, quantize] of variants) {
      const lm = await loadModel(model, {
        dtype: "f16",
        quantize,
        log: () => {},
        progressBar: false,
      });
      try {
        const argmax: number[] = [];
        webgpuArgmax[name] = argmax;
        row(
          name,
          perplexityOf(await exampleNll(recordingArgmax(fromChatGLMModel(lm), argmax), heldout)),
        );
      } finally {
        lm.dispose();
      }
    }
    // ONNX Runtime: f32 activations (exact) and int8 ones (its fast path, the export default).
    const onnxRuns: [string, QuantizeOption, "f32" | "int8", string][] = [
      ["int4 g32", { bits: 4, groupSize: 32 }, "f32", "int4 group-wise (32)"],
      ["int4 g32", { bits: 4, groupSize: 32 }, "int8", "int4 group-wise (32)"],
      ["int4 per row", 4, "int8", "int4 (per row, the original's)"],
      ["int8 per row", 8, "int8", "int8 (per row)"],
    ];
    for (const [label, quantize, accuracy, same] of onnxRuns) {
      const dir = `${tmp}/onnx-${label.replaceAll(" ", "-")}-${accuracy}`;
      await exportChatGLMToOnnx(model, dir, { quantize, quantAccuracy: accuracy });
      const onnx = await loadOnnxModel(dir, { modelDir: model });
      try {
        const lm = {
          vocabSize: onnx.config.vocabSize,
          padId: onnx.config.padTokenId,
          forward: (ids: number[][]) => onnx.forward(ids),
        };
        const argmax: number[] = [];
        const score = perplexityOf(await exampleNll(recordingArgmax(lm, argmax), heldout));
        row(`ONNX ${label}, ${accuracy} activations`, score, agreement(argmax, webgpuArgmax[same]));
      } finally {
        onnx.dispose();
      }
    }
    if (ppl["int8 (per row)"] > base * 1.01) misses.push("int8 perplexity more than +1% over f16");
    if (ppl["int4 group-wise (32)"] > base * 1.05) {
      misses.push("int4 group-wise perplexity more than +5% over f16");
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  return misses;
}

export async function bench(
  options: { quick?: boolean; part?: "speed" | "quality" | "input-grad" | "all" } = {},
): Promise<void> {
  const quick = options.quick ?? Deno.args.includes("--quick");
  const part = options.part ??
    (Deno.args.includes("--speed")
      ? "speed"
      : Deno.args.includes("--quality")
      ? "quality"
      : Deno.args.includes("--input-grad")
      ? "input-grad"
      : "all");
  const gpu = await getGpu();
  if (part === "input-grad") return await inputGrad(gpu, quick);
  let ort: Ort | string;
  try {
    ort = await import("npm:onnxruntime-node@1.30.0");
  } catch (err) {
    ort = `onnxruntime-node unavailable: ${(err as Error).message.split("\n")[0]}`;
  }
  const misses = [
    ...(part === "quality" ? [] : await speed(gpu, ort, quick)),
    ...(part === "speed" ? [] : await quality()),
  ];
  console.log(misses.length ? `\ntargets missed:\n  ${misses.join("\n  ")}` : "\nall targets met");
}

if (import.meta.main) await bench();
