/**
 * Dispatch overhead: the cost of one dispatch of an empty kernel (many in one submit), of one
 * submit, of one GPU→JS round trip, and of each kernel wrapper on a tiny input (where the
 * fixed cost per dispatch dominates: what a decode step pays per layer).
 *
 * `deno run --allow-all bench/dispatch.ts [--step [--small]]` (`--step`: the per-dispatch
 * breakdown of one grouped decode step of the tiny fixture and the demo model,
 * {@link stepBreakdown}; `--step --small`: of bench/engine.ts's small ChatGLM, f32 and f16)
 */

import {
  add,
  attention,
  beginCapture,
  beginRecording,
  type Capture,
  crossEntropy,
  DEMO_MODEL_DIR,
  embedding,
  emptyTensor,
  endCapture,
  gelu,
  getGpu,
  getPipeline,
  type Gpu,
  layerNorm,
  linear,
  loadChatGLM,
  packSamplingRows,
  qkvRotary,
  readTensor,
  recordDispatch,
  type Recording,
  releaseTensor,
  sampleTokens,
  type SamplingRow,
  softmax,
  submit,
  sync,
  type Tensor,
  uploadTensor,
  type WeightDtype,
} from "../core/mod.ts";
import { smallModel, writeModelDir } from "./onnx.ts";

/** Microseconds per item: records `n` items with `body`, submits once, waits for the GPU. */
async function perDispatch(
  gpu: Gpu,
  n: number,
  body: (rec: Recording, outs: Tensor[]) => void,
): Promise<{ record: number; total: number }> {
  const measure = async (count: number) => {
    const outs: Tensor[] = [];
    const t0 = performance.now();
    const rec = beginRecording(gpu);
    for (let i = 0; i < count; i++) body(rec, outs);
    const t1 = performance.now();
    await submit(rec);
    await sync(gpu);
    const t2 = performance.now();
    for (const o of outs) releaseTensor(o);
    return { record: ((t1 - t0) * 1000) / count, total: ((t2 - t0) * 1000) / count };
  };
  await measure(2); // compile
  return await measure(n);
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(`dispatch overhead — ${gpu.adapterInfo.description} (${gpu.backend})`);
  const empty = getPipeline(gpu, "bench:empty", () => `
struct Params { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> Y: array<u32>;
@compute @workgroup_size(1) fn main() { if (P.n == 12345u) { Y[0] = 1u; } }
`);
  const sink = emptyTensor(gpu, [4], "u32");
  const rows: [string, number, number][] = [];
  const e = await perDispatch(gpu, 1000, (rec) => {
    recordDispatch(rec, empty, [0, 0, 0, 0], [{ buffer: sink.buffer, offset: 0, size: 16 }], [1]);
  });
  rows.push(["empty kernel (1000 in one submit)", e.record, e.total]);

  // One submit per dispatch.
  const submits = 100;
  let t0 = performance.now();
  for (let i = 0; i < submits; i++) {
    const rec = beginRecording(gpu);
    recordDispatch(rec, empty, [0, 0, 0, 0], [{ buffer: sink.buffer, offset: 0, size: 16 }], [1]);
    await submit(rec);
  }
  await sync(gpu);
  const perSubmit = ((performance.now() - t0) * 1000) / submits;
  rows.push(["submit of one empty dispatch", NaN, perSubmit]);

  t0 = performance.now();
  for (let i = 0; i < 10; i++) await readTensor(sink);
  rows.push(["GPU→JS round trip (readTensor 16 B)", NaN, ((performance.now() - t0) * 1000) / 10]);

  // Kernel wrappers on tiny inputs (h = 64, 4 heads of 16, vocab 512).
  const h = 64, heads = 4, d = 16, V = 512;
  const x = uploadTensor(gpu, new Float32Array(h).fill(0.5), [1, 1, h]);
  const w = uploadTensor(gpu, new Float32Array(h).fill(1), [h]);
  const b = uploadTensor(gpu, new Float32Array(h), [h]);
  const wqkv = uploadTensor(gpu, new Float32Array(3 * h * h).fill(0.01), [3 * h, h]);
  const qkv = uploadTensor(gpu, new Float32Array(3 * h).fill(0.1), [1, 1, 3 * h]);
  const pos = uploadTensor(gpu, new Int32Array([3, 1]), [1, 2, 1]);
  const kc = uploadTensor(gpu, new Float32Array(heads * 32 * d), [1, heads, 32, d]);
  const vc = uploadTensor(gpu, new Float32Array(heads * 32 * d), [1, heads, 32, d]);
  const q = uploadTensor(gpu, new Float32Array(heads * d), [1, heads, 1, d]);
  const info = uploadTensor(gpu, new Int32Array([0, 8]), [1, 2]);
  const table = uploadTensor(gpu, new Float32Array(V * h), [V, h]);
  const ids = uploadTensor(gpu, new Int32Array([5]), [1]);
  const logits = uploadTensor(gpu, new Float32Array(V), [1, V]);
  const labels = uploadTensor(gpu, new Int32Array([7]), [1]);
  const kernels: [string, (rec: Recording, outs: Tensor[]) => void][] = [
    ["layerNorm [1, 64]", (rec, o) => o.push(layerNorm(rec, x, w, b, 1e-5))],
    ["gelu [64]", (rec, o) => o.push(gelu(rec, x))],
    ["add [64]", (rec, o) => o.push(add(rec, x, x))],
    ["softmax [1, 64]", (rec, o) => o.push(softmax(rec, x))],
    ["linear 1×64 · 192×64ᵀ", (rec, o) => o.push(linear(rec, x, wqkv))],
    ["embedding 1 id", (rec, o) => o.push(embedding(rec, table, ids))],
    [
      "qkvRotary 2d decode",
      (rec, o) => o.push(qkvRotary(rec, qkv, pos, kc, vc, { heads, past: 8, mode: "2d" })),
    ],
    [
      "attention decode, 9 keys",
      (rec, o) => o.push(attention(rec, q, kc, vc, { keys: 9, maskInfo: info })),
    ],
    [
      "crossEntropy [1, 512] (2 dispatches)",
      (rec, o) => {
        const r = crossEntropy(rec, logits, labels);
        o.push(r.loss, r.lse, r.mean);
      },
    ],
  ];
  for (const [name, body] of kernels) {
    const r = await perDispatch(gpu, 200, body);
    rows.push([name, r.record, r.total]);
  }
  console.log(`${"what".padEnd(40)}${"record µs".padStart(11)}${"total µs".padStart(11)}`);
  for (const [name, rec, total] of rows) {
    console.log(
      `${name.padEnd(40)}${(Number.isNaN(rec) ? "-" : rec.toFixed(1)).padStart(11)}${
        total.toFixed(1).padStart(11)
      }`,
    );
  }
  for (const t of [sink, x, w, b, wqkv, qkv, pos, kc, vc, q, info, table, ids, logits, labels]) {
    releaseTensor(t);
  }
}

/** One dispatch of a recorded decode step, timed alone. */
export interface StepDispatch {
  kernel: string;
  grid: readonly number[];
  us: number;
}

type CapturedDispatch = {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  grid: readonly [number, number, number];
};

/**
 * GPU µs per dispatch of `encode` (a pass's worth of dispatches run `reps` times): encoded that
 * many times in one submission, less an empty submission's round trip. The completion is seen
 * at the runtime's poll (~11 ms here), so `reps` grows until the work takes ~150 ms and the
 * poll's granularity is a few % of it.
 */
async function timeRepeated(
  gpu: Gpu,
  encode: (pass: GPUComputePassEncoder) => void,
  maxReps = 20000,
): Promise<number> {
  const device = gpu.device;
  const run = async (reps: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < reps; i++) encode(pass);
    pass.end();
    const t0 = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  const empty = [await run(0), await run(0), await run(0)].sort((a, b) => a - b)[1];
  let reps = Math.min(50, maxReps);
  let ms = await run(reps);
  while (ms - empty < 150 && reps < maxReps) {
    reps = Math.min(maxReps, Math.max(reps * 2, Math.ceil((reps * 150) / Math.max(ms - empty, 1))));
    ms = await run(reps);
  }
  return (Math.max(0, ms - empty) * 1000) / reps;
}

/**
 * Where a grouped decode step's GPU time goes: one batch-1 greedy step of `dir`'s model (f32
 * weights) is recorded as the decode group records it (decodeSlotsGroup's `onCapture`), then
 * each of its dispatches runs alone many times over (`timeRepeated`; the least of three rounds),
 * then the whole step. The
 * step-advance kernel moves every row's length on, so it is timed last (and the whole step with
 * at most 40 repeats: the cache length grows by one per repeat, as in decoding; its sampler then
 * reads past the group's one step of settings, so that number is approximate).
 */
export async function stepBreakdown(
  gpu: Gpu,
  dir: string,
  dtype: WeightDtype = "f32",
): Promise<{ dispatches: StepDispatch[]; stepUs: number; samplerUs: Record<string, number> }> {
  const model = await loadChatGLM(dir, { log: () => {}, progressBar: false, dtype });
  const cache = model.createCache(1, 256);
  try {
    const prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
    await model.prefillSlot(
      [...prompt, model.config.gmaskTokenId, model.config.bosTokenId],
      cache,
      0,
    );
    const { settings, history } = packSamplingRows([{ temperature: 0 }]);
    let step: Capture | null = null;
    await model.decodeSlotsGroup({
      slots: [0],
      ids: [20],
      steps: 1,
      textVocab: model.config.vocabSize,
      settings,
      history,
      onCapture: (s) => step = s,
    }, cache);
    const all = (step as Capture | null)?.commands ?? [];
    const commands = all.filter((c) => "pipeline" in c) as unknown as CapturedDispatch[];
    const encodeOne = (c: CapturedDispatch) => (pass: GPUComputePassEncoder) => {
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(...c.grid);
    };
    const isAdvance = (c: CapturedDispatch) => c.pipeline.label.startsWith("advanceDecode");
    // The least of three rounds (the machine is shared: a slow round says little).
    const us = new Map<CapturedDispatch, number>();
    const time = async (c: CapturedDispatch) =>
      us.set(c, Math.min(us.get(c) ?? Infinity, await timeRepeated(gpu, encodeOne(c))));
    for (let round = 0; round < 3; round++) {
      for (const c of commands) if (!isAdvance(c)) await time(c);
    }
    const stepUs = await timeRepeated(
      gpu,
      (pass) => commands.forEach((c) => encodeOne(c)(pass)),
      40,
    );
    for (let round = 0; round < 3; round++) {
      for (const c of commands) if (isAdvance(c)) await time(c);
    }
    // The sampler alone on the model's own next logits, greedy and at HTTP's defaults (in the
    // step above the counter has run past the group's settings, so only greedy is timed there).
    const logits = await model.decodeSlots([{ slot: 0, id: 21 }], cache);
    const samplerUs: Record<string, number> = {};
    for (const [mode, row] of Object.entries(SAMPLER_MODES)) {
      samplerUs[mode] = await samplerAlone(gpu, logits, model.config.vocabSize, row);
    }
    return {
      dispatches: commands.map((c) => ({ kernel: c.pipeline.label, grid: c.grid, us: us.get(c)! })),
      stepUs,
      samplerUs,
    };
  } finally {
    cache.free();
    model.dispose();
  }
}

const SAMPLER_MODES: Record<string, SamplingRow> = {
  greedy: { temperature: 0 },
  "T0.95 p0.7": { temperature: 0.95, topP: 0.7, uniform: 0.5 },
};

/** GPU µs of `sampleTokens` on one row of `logits` with `row`'s settings (captured, repeated). */
async function samplerAlone(
  gpu: Gpu,
  logits: Float32Array,
  vocab: number,
  row: SamplingRow,
): Promise<number> {
  const packed = packSamplingRows([row]);
  const l = uploadTensor(gpu, logits, [1, logits.length]);
  const st = uploadTensor(gpu, packed.settings, [packed.settings.length]);
  const h = uploadTensor(gpu, packed.history, [packed.history.length]);
  const rec = beginRecording(gpu);
  beginCapture(rec);
  const out = sampleTokens(rec, l, vocab, st, h);
  const cap = endCapture(rec);
  await submit(rec);
  try {
    const [c] = cap.commands as unknown as CapturedDispatch[];
    return await timeRepeated(gpu, (pass) => {
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(...c.grid);
    });
  } finally {
    for (const t of [l, st, h, out]) releaseTensor(t);
  }
}

/**
 * Prints {@link stepBreakdown} as a table, in step order, then the time per kernel (summed over
 * the step's dispatches of it, largest first).
 */
export async function printStepBreakdown(
  gpu: Gpu,
  name: string,
  dir: string,
  dtype: WeightDtype = "f32",
): Promise<void> {
  const { dispatches, stepUs, samplerUs } = await stepBreakdown(gpu, dir, dtype);
  const sum = dispatches.reduce((s, d) => s + d.us, 0);
  console.log(`\n${name}: one grouped decode step, batch 1, greedy, each dispatch alone (µs, GPU)`);
  console.log(
    `${"#".padStart(3)}  ${"kernel".padEnd(44)}${"grid".padStart(12)}${"µs".padStart(9)}`,
  );
  dispatches.forEach((d, i) =>
    console.log(
      `${String(i).padStart(3)}  ${d.kernel.slice(0, 44).padEnd(44)}${
        d.grid.join("×").padStart(12)
      }${d.us.toFixed(1).padStart(9)}`,
    )
  );
  console.log(
    `${dispatches.length} dispatches, sum ${
      (sum / 1000).toFixed(2)
    } ms; the whole step replayed: ` +
      `${(stepUs / 1000).toFixed(2)} ms`,
  );
  const byKernel = new Map<string, { us: number; n: number }>();
  for (const d of dispatches) {
    const k = byKernel.get(d.kernel) ?? { us: 0, n: 0 };
    byKernel.set(d.kernel, { us: k.us + d.us, n: k.n + 1 });
  }
  console.log(
    `per kernel (${dtype} weights): ` +
      [...byKernel].sort((a, b) => b[1].us - a[1].us).map(([k, v]) =>
        `${k} ×${v.n} ${(v.us / 1000).toFixed(2)} ms (${((100 * v.us) / sum).toFixed(0)}%)`
      ).join("; "),
  );
  console.log(
    `sampleTokens alone on the model's next logits: ${
      Object.entries(samplerUs).map(([mode, us]) => `${mode} ${us.toFixed(1)} µs`).join(", ")
    }`,
  );
}

if (import.meta.main) {
  if (Deno.args.includes("--step") && Deno.args.includes("--small")) {
    // The small ChatGLM of bench/engine.ts --small (bench/onnx.ts's weights), f32 and f16.
    const gpu = await getGpu();
    const dir = await writeModelDir(smallModel());
    try {
      for (const dtype of ["f32", "f16"] as const) {
        if (dtype === "f16" && !gpu.hasF16) continue;
        await printStepBreakdown(gpu, `small h1024 L8 ${dtype}`, dir, dtype);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  } else if (Deno.args.includes("--step")) {
    const gpu = await getGpu();
    const tiny = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;
    await printStepBreakdown(gpu, "tiny", tiny);
    await printStepBreakdown(gpu, "demo", DEMO_MODEL_DIR);
  } else await bench();
}
