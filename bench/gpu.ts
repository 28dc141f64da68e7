/**
 * `deno task bench gpu`: how much of the card the kernels use, so that the hardware designs are
 * measured the day a device is there. One table:
 *
 * - SGEMM (`linear`, f32, N×N×N) in GFLOP/s, as a share of the card's FP32 peak;
 * - decode: a matmul at M = 1 on the ChatGLM-6B h→4h weight (4096×16384; f32, and f16 where the
 *   adapter has it) and a whole decode step of the small random ChatGLM (grouped, ids sampled on
 *   the GPU: no readback per step), in GB/s of weights read, as a share of the memory bandwidth;
 * - the per-token host overhead: CPU time of the JS thread per token in grouped decoding and on
 *   the per-token path (tiny fixture), and one GPU→host round trip.
 *
 * Peak and bandwidth come from a small table of known cards keyed by the adapter's name
 * ({@link KNOWN_CARDS}), or from `--peak-gflops=N` / `--bandwidth-gbs=N`. On a software adapter
 * (llvmpipe) the "card" is this CPU: the peak is printed as unknown unless given, and the
 * bandwidth is estimated by a large host memory copy (labelled so).
 *
 * `deno task bench gpu [--peak-gflops=N] [--bandwidth-gbs=N] [--size=N]`.
 */

import { parseArgs } from "node:util";
import { numberFlag } from "../base/mod.ts";
import {
  type ChatGLMModel,
  getGpu,
  loadChatGLM,
  packSamplingRows,
  randomChatGLM,
  releaseTensor,
  sync,
  uploadTensor,
} from "../core/mod.ts";
import { smallConfig } from "./small_model.ts";
import { cpuMs } from "./engine.ts";
import { fillRandom, linearSeconds } from "./linear_timing.ts";

/** A card's FP32 peak (non-tensor-core) and memory bandwidth, from the vendors' data sheets. */
export interface CardSpec {
  name: string;
  /** Matched against the adapter's device / description (first match wins). */
  match: RegExp;
  peakGflops: number;
  bandwidthGbs: number;
}

export const KNOWN_CARDS: readonly CardSpec[] = [
  { name: "NVIDIA H200", match: /H200/i, peakGflops: 67_000, bandwidthGbs: 4_800 },
  { name: "NVIDIA H100 NVL", match: /H100.*NVL/i, peakGflops: 60_000, bandwidthGbs: 3_900 },
  { name: "NVIDIA H100 PCIe", match: /H100.*PCIe/i, peakGflops: 51_000, bandwidthGbs: 2_000 },
  { name: "NVIDIA H100 SXM", match: /H100/i, peakGflops: 67_000, bandwidthGbs: 3_350 },
  { name: "NVIDIA A100 80GB", match: /A100.*80\s*GB/i, peakGflops: 19_500, bandwidthGbs: 2_039 },
  { name: "NVIDIA A100 40GB", match: /A100/i, peakGflops: 19_500, bandwidthGbs: 1_555 },
  { name: "NVIDIA L40S", match: /L40S/i, peakGflops: 91_600, bandwidthGbs: 864 },
  { name: "NVIDIA L4", match: /\bL4\b/i, peakGflops: 30_300, bandwidthGbs: 300 },
  { name: "NVIDIA A10G", match: /A10G/i, peakGflops: 31_200, bandwidthGbs: 600 },
  { name: "NVIDIA A10", match: /\bA10\b/i, peakGflops: 31_200, bandwidthGbs: 600 },
  { name: "NVIDIA T4", match: /\bT4\b/i, peakGflops: 8_100, bandwidthGbs: 320 },
  { name: "NVIDIA V100", match: /V100/i, peakGflops: 15_700, bandwidthGbs: 900 },
  { name: "NVIDIA RTX 4090", match: /RTX 4090/i, peakGflops: 82_600, bandwidthGbs: 1_008 },
  { name: "NVIDIA RTX 3090", match: /RTX 3090/i, peakGflops: 35_600, bandwidthGbs: 936 },
];

/** The known card an adapter is, by its device name or description; null when none matches. */
export function knownCard(info: { device: string; description: string }): CardSpec | null {
  const names = `${info.device} ${info.description}`;
  return KNOWN_CARDS.find((c) => c.match.test(names)) ?? null;
}

/** A reference figure and where it came from. */
interface Reference {
  value: number | null;
  source: string;
}

export interface GpuBenchOptions {
  peakGflops?: number;
  bandwidthGbs?: number;
  /** SGEMM size (default 2048 on hardware, 1024 on a software adapter). */
  size?: number;
}

/** `--peak-gflops=N --bandwidth-gbs=N --size=N` from the command line (others ignored). */
export function parseGpuBenchFlags(args: string[]): GpuBenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      "peak-gflops": { type: "string" },
      "bandwidth-gbs": { type: "string" },
      size: { type: "string" },
    },
    strict: false,
    allowPositionals: true,
  });
  const str = (v: unknown) => typeof v === "string" ? v : undefined;
  const size = numberFlag(
    "size",
    str(values.size),
    (v) => Number.isInteger(v) && v >= 64 && v <= 16384,
    "an integer from 64 to 16384",
  );
  return {
    peakGflops: numberFlag("peak-gflops", str(values["peak-gflops"]), (v) => v > 0, "a number > 0"),
    bandwidthGbs: numberFlag(
      "bandwidth-gbs",
      str(values["bandwidth-gbs"]),
      (v) => v > 0,
      "a number > 0",
    ),
    ...(size ? { size } : {}),
  };
}

/** Host memory copy GB/s (bytes read + written): the software adapter's memory is this. */
function hostCopyGbs(): number {
  const n = 64 << 20;
  const a = new Uint8Array(n).fill(1), b = new Uint8Array(n);
  b.set(a); // touch the pages
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t0);
  }
  return (2 * n) / (best / 1000) / 1e9;
}

/** Bytes of weights one decode step of a ChatGLM reads (every linear layer and the head once). */
function decodeWeightBytes(model: ChatGLMModel, bytesPerWeight: number): number {
  const { hiddenSize: h, innerHiddenSize: f, numLayers, vocabSize } = model.config;
  return ((3 * h * h + h * h + 2 * h * f) * numLayers + vocabSize * h) * bytesPerWeight;
}

/** Seconds per step of grouped decoding (k steps, one readback) on `model`, slot 0, batch 1. */
async function groupStepSeconds(model: ChatGLMModel, k: number, groups: number) {
  const cache = model.createCache(1, 32 + k * (groups + 1));
  const prompt = [5, 6, 7, 8, 9, 10, model.config.gmaskTokenId, model.config.bosTokenId];
  try {
    await model.prefillSlot(prompt, cache, 0);
    const { settings, history } = packSamplingRows(
      Array.from({ length: k }, () => ({ temperature: 0 })),
    );
    const group = () =>
      model.decodeSlotsGroup({
        slots: [0],
        ids: [20],
        steps: k,
        textVocab: model.config.vocabSize,
        settings,
        history,
      }, cache);
    await group(); // compile
    const cpu0 = cpuMs("thread-self");
    const t0 = performance.now();
    for (let g = 0; g < groups; g++) await group();
    const wall = (performance.now() - t0) / 1000 / (k * groups);
    const cpu1 = cpuMs("thread-self");
    const hostMs = cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / (k * groups);
    return { seconds: wall, hostMs };
  } finally {
    model.endGroups(cache);
    cache.free();
  }
}

/** Per-token path: one decode step, logits read back, `steps` times; wall s and host ms/step. */
async function perTokenStep(model: ChatGLMModel, steps: number) {
  const cache = model.createCache(1, 32 + steps);
  const prompt = [5, 6, 7, 8, 9, 10, model.config.gmaskTokenId, model.config.bosTokenId];
  try {
    await model.prefillSlot(prompt, cache, 0);
    await model.decodeSlots([{ slot: 0, id: 20 }], cache);
    const cpu0 = cpuMs("thread-self");
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) await model.decodeSlots([{ slot: 0, id: 20 + s }], cache);
    const cpu1 = cpuMs("thread-self");
    return {
      seconds: (performance.now() - t0) / 1000 / steps,
      hostMs: cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / steps,
    };
  } finally {
    cache.free();
  }
}

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;

export async function bench(options: GpuBenchOptions = parseGpuBenchFlags(Deno.args)) {
  const gpu = await getGpu();
  const info = gpu.adapterInfo;
  const card = gpu.isSoftware ? null : knownCard(info);
  const peak: Reference = options.peakGflops
    ? { value: options.peakGflops, source: "--peak-gflops" }
    : card
    ? { value: card.peakGflops, source: `${card.name} data sheet` }
    : { value: null, source: gpu.isSoftware ? "unknown (software adapter)" : "unknown card" };
  const bandwidth: Reference = options.bandwidthGbs
    ? { value: options.bandwidthGbs, source: "--bandwidth-gbs" }
    : card
    ? { value: card.bandwidthGbs, source: `${card.name} data sheet` }
    : gpu.isSoftware
    ? { value: hostCopyGbs(), source: "host memory copy, measured" }
    : { value: null, source: "unknown card" };
  console.log(
    `\n## GPU utilisation (bench/gpu.ts) — ${info.description || info.device || "adapter"} ` +
      `(${gpu.backend}${gpu.isSoftware ? ", software" : ""})`,
  );
  const rows: string[][] = [];
  const share = (v: number, ref: Reference) =>
    ref.value === null ? "–" : `${((100 * v) / ref.value).toFixed(1)}%`;
  const refText = (ref: Reference, unit: string) =>
    ref.value === null
      ? ref.source
      : `${ref.value.toFixed(ref.value < 100 ? 1 : 0)} ${unit} (${ref.source})`;

  // SGEMM.
  const n = options.size ?? (gpu.isSoftware ? 1024 : 2048);
  {
    const x = uploadTensor(gpu, fillRandom(n * n, 3), [n, n]);
    const w = uploadTensor(gpu, fillRandom(n * n, 5), [n, n]);
    try {
      const s = await linearSeconds(gpu, x, w, gpu.isSoftware ? 0.5 : 0.2, 3);
      const gflops = (2 * n * n * n) / s / 1e9;
      rows.push([
        `SGEMM f32 ${n}³`,
        `${gflops.toFixed(1)} GFLOP/s`,
        refText(peak, "GFLOP/s"),
        share(gflops, peak),
      ]);
    } finally {
      releaseTensor(x);
      releaseTensor(w);
    }
  }
  // Decode matmul, M = 1.
  const K = 4096, N = 16384;
  for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
    const x = uploadTensor(gpu, fillRandom(K, 7), [1, K]);
    const w = uploadTensor(gpu, fillRandom(N * K, 9), [N, K], dtype);
    try {
      const s = await linearSeconds(gpu, x, w, gpu.isSoftware ? 0.5 : 0.2, 3);
      const gbs = (N * K * (dtype === "f16" ? 2 : 4)) / s / 1e9;
      rows.push([
        `decode matmul M=1 ${K}×${N} ${dtype} weights`,
        `${gbs.toFixed(1)} GB/s`,
        refText(bandwidth, "GB/s"),
        share(gbs, bandwidth),
      ]);
    } finally {
      releaseTensor(x);
      releaseTensor(w);
    }
  }
  // A whole decode step of the small model, grouped (no readback per step).
  {
    const dtype = gpu.hasF16 ? "f16" : "f32";
    const model = randomChatGLM(gpu, smallConfig(256), { dtype });
    try {
      const { seconds } = await groupStepSeconds(model, 16, gpu.isSoftware ? 1 : 4);
      const gbs = decodeWeightBytes(model, dtype === "f16" ? 2 : 4) / seconds / 1e9;
      rows.push([
        `decode step, small ChatGLM ${dtype} (grouped, batch 1)`,
        `${gbs.toFixed(1)} GB/s (${(seconds * 1000).toFixed(1)} ms/token)`,
        refText(bandwidth, "GB/s"),
        share(gbs, bandwidth),
      ]);
    } finally {
      model.dispose();
    }
  }
  // Host overhead per token on the tiny model (its GPU work is small: the host's share shows).
  {
    const model = await loadChatGLM(TINY_DIR, { log: () => {}, progressBar: false, dtype: "f32" });
    try {
      const grouped = await groupStepSeconds(model, 16, 8);
      const perToken = await perTokenStep(model, 32);
      const ms = (v: number | null) => v === null ? "n/a (no /proc)" : `${v.toFixed(2)} ms`;
      rows.push([
        "host CPU per token, grouped decoding (tiny, k=16)",
        ms(grouped.hostMs),
        `wall ${(grouped.seconds * 1000).toFixed(2)} ms/token`,
        "–",
      ]);
      rows.push([
        "host CPU per token, per-token path (tiny)",
        ms(perToken.hostMs),
        `wall ${(perToken.seconds * 1000).toFixed(2)} ms/token`,
        "–",
      ]);
    } finally {
      model.dispose();
    }
  }
  {
    await sync(gpu);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await sync(gpu);
      best = Math.min(best, performance.now() - t0);
    }
    rows.push(["GPU→host round trip (empty queue)", `${best.toFixed(2)} ms`, "–", "–"]);
  }
  const head = ["measure", "value", "reference", "share"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ");
  console.log([line(head), ...rows.map(line)].join("\n"));
  console.log(
    "host CPU: the JS thread's CPU time per token (recording, submits, readbacks), from /proc " +
      "(10 ms ticks). Override the references with --peak-gflops=N and --bandwidth-gbs=N.",
  );
}

if (import.meta.main) await bench();
