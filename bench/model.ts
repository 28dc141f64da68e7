/**
 * ChatGLM model throughput: prefill and decode tokens/s for the tiny fixture model and a "small"
 * random model (hidden 1024, 8 layers, 16 heads, vocab 32000), f32 and f16 weights, with each
 * step's time split into GPU time (kernels, net of one measured GPU round trip) and host
 * overhead (recording the step, the round trip, reading logits back).
 *
 * Run alone: `deno run --allow-all bench/model.ts`.
 */

import {
  type ChatGLMConfig,
  type ChatGLMModel,
  getGpu,
  type Gpu,
  loadChatGLM as loadModel,
  randomChatGLM,
  type StepProfile,
} from "../core/mod.ts";
import { smallConfig } from "./small_model.ts";

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;

/** A prompt of `n` ids ending in [gMASK] <sop>. */
function prompt(config: ChatGLMConfig, n: number): number[] {
  const ids = Array.from({ length: n - 2 }, (_, i) => 5 + ((i * 7919) % 1000));
  return [...ids, config.gmaskTokenId, config.bosTokenId];
}

interface Row {
  model: string;
  dtype: string;
  phase: string;
  tokens: number;
  tokPerS: number;
  msPerStep: number;
  gpuMs: number;
  hostMs: number;
  dispatches: number;
}

async function roundTripMs(gpu: Gpu): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    gpu.device.queue.submit([]);
    await gpu.device.queue.onSubmittedWorkDone();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[2];
}

async function measure(
  name: string,
  model: ChatGLMModel,
  promptLen: number,
  decodeSteps: number,
  rtt: number,
): Promise<Row[]> {
  const ids = prompt(model.config, promptLen);
  const run = async () => {
    const cache = model.createCache(1, promptLen + decodeSteps + 1);
    try {
      let t = performance.now();
      await model.prefill([ids], cache);
      const prefillMs = performance.now() - t;
      t = performance.now();
      for (let i = 0; i < decodeSteps; i++) await model.decodeStep([5 + i], cache);
      return { prefillMs, decodeMs: performance.now() - t };
    } finally {
      cache.free();
    }
  };
  await run(); // warm-up: compiles every pipeline
  const wall = await run();
  // A second, profiled run splits each step into GPU time and the rest.
  const profiles: StepProfile[] = [];
  model.profiler = (p) => profiles.push(p);
  await run();
  model.profiler = null;
  const prefill = profiles.slice(0, profiles.length - decodeSteps);
  const decode = profiles.slice(profiles.length - decodeSteps);

  const row = (phase: string, wallMs: number, ps: StepProfile[], tokens: number): Row => {
    const mean = (f: (p: StepProfile) => number) => ps.reduce((a, p) => a + f(p), 0) / ps.length;
    return {
      model: name,
      dtype: model.dtype,
      phase,
      tokens,
      tokPerS: (tokens / wallMs) * 1000,
      msPerStep: wallMs / ps.length,
      gpuMs: mean((p) => Math.max(0, p.gpuMs - rtt)),
      hostMs: mean((p) => p.recordMs + p.readMs),
      dispatches: ps[0].dispatches,
    };
  };
  return [
    row(`prefill ${promptLen}`, wall.prefillMs, prefill, promptLen),
    row(`decode ×${decodeSteps}`, wall.decodeMs, decode, decodeSteps),
  ];
}

function table(rows: Row[], rtt: number): string {
  const head = [
    "model",
    "weights",
    "phase",
    "tok/s",
    "ms/step",
    "GPU ms",
    "host ms",
    "host %",
    "dispatches",
  ];
  const body = rows.map((r) => [
    r.model,
    r.dtype,
    r.phase,
    r.tokPerS.toFixed(1),
    r.msPerStep.toFixed(1),
    r.gpuMs.toFixed(1),
    r.hostMs.toFixed(1),
    `${((r.hostMs / (r.hostMs + r.gpuMs)) * 100).toFixed(0)}%`,
    String(r.dispatches),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  return [
    line(head),
    ...body.map(line),
    `tok/s and ms/step: unprofiled run. Split per step from a profiled run: GPU ms = submit → ` +
    `work done minus one GPU round trip (${rtt.toFixed(1)} ms); host ms = recording + uploads + ` +
    "logits readback (one round trip). Batch 1.",
  ].join("\n");
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(
    `\n## ChatGLM model (bench/model.ts) — ${gpu.adapterInfo.description} (${gpu.backend})`,
  );
  const rtt = await roundTripMs(gpu);
  const rows: Row[] = [];
  for (const dtype of ["f32", "f16"] as const) {
    const tiny = await loadModel(TINY_DIR, { dtype, log: () => {}, progressBar: false });
    try {
      rows.push(...await measure("tiny", tiny, 40, 16, rtt));
    } finally {
      tiny.dispose();
    }
  }
  const small = smallConfig();
  for (const dtype of ["f32", "f16"] as const) {
    const model = randomChatGLM(gpu, small, { dtype });
    try {
      rows.push(...await measure("small", model, 64, 8, rtt));
    } finally {
      model.dispose();
    }
  }
  console.log(table(rows, rtt));
}

if (import.meta.main) await bench();
