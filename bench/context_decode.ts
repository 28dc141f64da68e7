/**
 * Decode speed and peak memory of a model with its KV cache at a given context (the full-size
 * numbers of issue 17), one backend per process so that the peak resident memory (VmHWM; ORT's
 * arena and a software adapter's GPU buffers are host memory) is that run's alone:
 *
 *   deno run -A bench/context_decode.ts --backend webgpu|onnx --model DIR [--context 2048]
 *     [--tokens 4] [--quantize 4[,group=G][,embeddings]] [--profile PREFIX]
 *
 * `--model` is a model directory (webgpu) or an export directory of `deno task export-onnx`
 * (onnx). "At a context of C" means: a 4-token prompt (2 ids, [gMASK] <sop>) is prefilled for real,
 * then the cache is filled to C − tokens − 1 positions (the positions past the prompt hold the
 * prompt's keys/values repeated, not a real prefill: at full size a 2048-token prefill takes many
 * minutes on 2 cores), and `--tokens` greedy decode steps follow, each attending over every
 * cached position, the last at position C − 1. WebGPU allocates its cache for C positions up front (its positions past the
 * prompt hold zeros); the ONNX runner's cache buffer grows through its power-of-two capacities
 * as it is filled (C when C is one), as it would while decoding, before the first step.
 *
 * Prints one JSON line: the rate, each step's wall and process CPU seconds (a loaded machine
 * stretches the wall time, not the CPU time), the peak resident memory after load and at the end
 * (VmHWM), and the resident memory right after load (VmRSS). `--profile PREFIX` (onnx): ORT's
 * per-node profile is written to PREFIX_<date>.json and its time is summed per operator over the
 * decode steps (`opMs`, ms per step, largest first).
 */

import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import { getGpu, loadChatGLM, parseQuantizeFlag, type QuantizeOption } from "../core/mod.ts";
import { loadOnnxModel } from "../serve/mod.ts";
import { vmHwmBytes } from "./child_json.ts";

/** This process's resident memory now, in bytes (Linux VmRSS). */
function vmRssBytes(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * ORT's profile (the newest PREFIX_*.json) summed per operator over the last `steps` runs (the
 * decode steps), in ms per step, largest first.
 */
async function profileByOp(prefix: string, steps: number): Promise<Record<string, number>> {
  const slash = prefix.lastIndexOf("/");
  const dir = slash >= 0 ? prefix.slice(0, slash) || "/" : ".";
  const base = prefix.slice(slash + 1);
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(`${base}_`) && e.name.endsWith(".json")) files.push(`${dir}/${e.name}`);
  }
  if (!files.length) throw new Error(`--profile: ORT wrote no ${prefix}_*.json`);
  files.sort();
  const events = JSON.parse(await Deno.readTextFile(files[files.length - 1])) as {
    cat: string;
    name: string;
    ts: number;
    dur: number;
    args?: { op_name?: string };
  }[];
  const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
  const from = runs.length > steps ? runs[runs.length - steps].ts : 0;
  const sums: Record<string, number> = {};
  for (const e of events) {
    if (e.cat !== "Node" || !e.name.endsWith("_kernel_time") || e.ts < from) continue;
    const op = e.args?.op_name ?? "?";
    sums[op] = (sums[op] ?? 0) + e.dur / 1000 / steps;
  }
  return Object.fromEntries(
    Object.entries(sums).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Math.round(v * 10) / 10]),
  );
}

function argmax(v: Float32Array, from = 0, n = v.length): number {
  let best = from;
  for (let i = from + 1; i < from + n; i++) if (v[i] > v[best]) best = i;
  return best - from;
}

const { values } = parseArgs({
  options: {
    backend: { type: "string" },
    model: { type: "string" },
    context: { type: "string", default: "2048" },
    tokens: { type: "string", default: "4" },
    quantize: { type: "string" },
    profile: { type: "string" },
  },
});
const context = Number(values.context);
const tokens = Number(values.tokens);
if (!values.model || (values.backend !== "webgpu" && values.backend !== "onnx")) {
  throw new Error("usage: --backend webgpu|onnx --model DIR [--context C] [--tokens N]");
}
/** Two text ids, [gMASK] <sop>: a prompt's shape (the ids fit any vocabulary). */
const promptOf = (
  c: { gmaskTokenId: number; bosTokenId: number },
) => [5, 6, c.gmaskTokenId, c.bosTokenId];
const filled = context - tokens - 1; // positions cached before the first timed step
const started = performance.now();
let loadS: number, loadPeakRss: number, loadRss: number;
let opMs: Record<string, number> | null = null;
const stepS: number[] = [];
/** Process CPU seconds (user + system, all threads) per step: what a loaded machine cannot hide. */
const stepCpuS: number[] = [];
const cpuS = () => {
  const u = cpuUsage();
  return (u.user + u.system) / 1e6;
};
let description = "";

/** The timed decode steps (greedy from `first`'s logits): wall and CPU seconds of each. */
async function timeSteps(first: Float32Array, step: (id: number) => Promise<Float32Array>) {
  let last = first;
  for (let n = 0; n < tokens; n++) {
    const s = performance.now(), c = cpuS();
    last = await step(argmax(last));
    stepS.push((performance.now() - s) / 1000);
    stepCpuS.push(cpuS() - c);
  }
}

if (values.backend === "webgpu") {
  const gpu = await getGpu();
  const quantize = values.quantize
    ? parseQuantizeFlag(values.quantize) as QuantizeOption
    : undefined;
  const model = await loadChatGLM(values.model, {
    log: () => {},
    progressBar: false,
    gpu,
    quantize,
  });
  loadS = (performance.now() - started) / 1000;
  loadPeakRss = vmHwmBytes();
  loadRss = vmRssBytes();
  const prompt = promptOf(model.config);
  const cache = model.createCache(1, context);
  const first = await model.prefill([prompt], cache);
  // Positions prompt.length .. filled-1 stay zero: the timed steps attend over `filled` positions.
  cache.length = filled;
  await timeSteps(first, (id) => model.decodeStep([id], cache));
  description = `webgpu, ${gpu.adapterInfo.description || "GPU"}`;
  cache.free();
  model.dispose();
} else {
  const model = await loadOnnxModel(values.model, {
    maxContext: context,
    profilePrefix: values.profile,
  });
  loadS = (performance.now() - started) / 1000;
  loadPeakRss = vmHwmBytes();
  loadRss = vmRssBytes();
  const cfg = model.config;
  if (!("gmaskTokenId" in cfg)) {
    throw new Error(
      `context_decode: ${values.model} is not a ChatGLM-6B export (this bench's prompt and positions are ChatGLM's)`,
    );
  }
  // The runner's own lockstep cache: the real prompt prefilled, its keys/values repeated up to
  // `filled` positions (written, so every page of the buffer is resident and read for real: a
  // zero-filled buffer that was never written reads the kernel's one zero page), then its length
  // set to `filled`.
  const cache = model.createCache(1, context);
  const prompt = promptOf(cfg);
  const first = await model.prefill([prompt], cache);
  // The buffer grows through every doubling as decoding would (its peak is part of the measure).
  const kv = cache.kv!;
  for (let at = prompt.length; at < filled; at += prompt.length) {
    const n = Math.min(prompt.length, filled - at);
    kv.reserve(at + n, context);
    kv.copyRow(0, 0, n, kv, 0, at);
  }
  kv.reserve(filled + 1, context);
  cache.length = filled;
  await timeSteps(first, (id) => model.decodeStep([id], cache));
  cache.free();
  description = `onnx, ${model.providers.join("+")}`;
  await model.dispose();
  if (values.profile) opMs = await profileByOp(values.profile, tokens);
}

const steady = stepS.slice(1); // the first step also warms up (pipeline compiles, ORT arenas)
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
console.log(JSON.stringify({
  backend: description,
  model: values.model,
  quantize: values.quantize ?? null,
  context,
  filledBeforeTimedSteps: filled,
  loadS,
  stepS,
  stepCpuS,
  tokensPerSecond: 1 / mean(steady.length ? steady : stepS),
  loadPeakRss,
  loadRss,
  peakRss: vmHwmBytes(),
  ...(opMs ? { opMs } : {}),
}));
