/**
 * Matmul throughput: our WGSL kernels (f32 weights and f16 weights) beside onnxruntime-node's CPU
 * MatMul on the same shapes in the same run; the ratio column is the figure (DESIGN.md targets on
 * software adapters: ≥ 0.10× large, ≥ 0.20× at M = 16, ≥ 0.45× at M = 1 with f16 weights).
 *
 * Shapes: square 256/1024/2048, and the ChatGLM-6B layer shapes K×N = 4096×12288 (qkv),
 * 4096×16384 (h→4h), 16384×4096 (4h→h) at M = 1, 16, 512 (and M = 4 for qkv). Ours computes
 * `x · Wᵀ` with W [N, K] (the layer form); ORT computes `A · B` with B [K, N] as a constant
 * initializer: same FLOPs.
 *
 * `deno run --allow-all bench/matmul.ts [--quick] [--baseline REF]` (needs --allow-ffi for ORT;
 * set ONNXRUNTIME_NODE_INSTALL=skip when installing offline). `--baseline REF` (or
 * MEDGLM_MATMUL_BASELINE=REF with `deno task bench matmul`) also times the kernels of git ref REF
 * (its core/ and base/, extracted to a temporary folder, on their own device) in the same rounds,
 * for a before/after table from one run. `--only TEXT` keeps the shapes whose label contains TEXT.
 *
 * `--small`: the decode shapes of bench/engine.ts's small ChatGLM (hidden 1024, 4h 4096, vocab
 * 32000: K×N 1024×3072 qkv, 1024×1024 dense, 1024×4096 h→4h, 4096×1024 4h→h, 1024×32000 the head)
 * at M = 1 and 4, with two more columns: the small-M kernel (gemv.ts) reading the weight from its
 * storage buffer, f32 and f16 (`kernel: "gemv"`), beside the texture design that `auto` takes for
 * these sizes on software adapters (at M = 1, weight GB/s = 2 × GFLOP/s with f32 weights, 1 × with
 * f16).
 */

import { parseArgs } from "node:util";
import {
  beginRecording,
  encodeOnnxModel,
  getGpu,
  type Gpu,
  linear,
  matmul,
  readTensor,
  releaseTensor,
  submit,
  sync,
  type Tensor,
  uploadTensor,
} from "../core/mod.ts";
import { fillRandom } from "./linear_timing.ts";
import { extractTree } from "./git_tree.ts";

interface Shape {
  label: string;
  M: number;
  K: number;
  N: number;
}

/** DESIGN.md's target for a shape: the ratio to ORT, and which of our columns it applies to. */
interface Target {
  ratio: number;
  column: "f32" | "f16w";
}

function targetOf(s: Shape): Target | null {
  if (s.M === 1) return { ratio: 0.45, column: "f16w" };
  if (s.M === 16) return { ratio: 0.20, column: "f32" };
  if (s.M >= 512 && s.K >= 1024) return { ratio: 0.10, column: "f32" };
  return null; // small shapes: no target, reported for the trend
}

/** bench/engine.ts's small ChatGLM (bench/small_model.ts): its decode matmuls. */
function smallShapes(): Shape[] {
  const layers: [string, number, number][] = [
    ["qkv 1024x3072", 1024, 3072],
    ["dense 1024x1024", 1024, 1024],
    ["h→4h 1024x4096", 1024, 4096],
    ["4h→h 4096x1024", 4096, 1024],
    ["head 1024x32000", 1024, 32000],
  ];
  return layers.flatMap(([name, K, N]) =>
    [1, 4].map((M) => ({ label: `${name} M=${M}`, M, K, N }))
  );
}

function shapes(quick: boolean): Shape[] {
  const out: Shape[] = [];
  for (const n of quick ? [256, 1024] : [256, 1024, 2048]) {
    out.push({ label: `${n}³`, M: n, K: n, N: n });
  }
  const layers: [string, number, number][] = [
    ["qkv 4096x12288", 4096, 12288],
    ["h→4h 4096x16384", 4096, 16384],
    ["4h→h 16384x4096", 16384, 4096],
  ];
  for (const [i, [name, K, N]] of (quick ? layers.slice(0, 1) : layers).entries()) {
    // M = 4 (batched decode, short prompts; no target) once, on the first layer shape.
    for (const M of i === 0 ? [1, 4, 16, 512] : [1, 16, 512]) {
      out.push({ label: `${name} M=${M}`, M, K, N });
    }
  }
  return out;
}

/** The functions a timer needs from a core member (this checkout's, or a baseline's). */
interface CoreApi {
  beginRecording: typeof beginRecording;
  linear: typeof linear;
  matmul: typeof matmul;
  submit: typeof submit;
  sync: typeof sync;
  readTensor: typeof readTensor;
  releaseTensor: typeof releaseTensor;
}

const THIS_CORE: CoreApi = {
  beginRecording,
  linear,
  matmul,
  submit,
  sync,
  readTensor,
  releaseTensor,
};

/** Seconds of one empty submit and wait (the least of three): the fixed cost of a round trip. */
async function emptyRoundTrip(gpu: Gpu): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    gpu.device.queue.submit([]);
    await gpu.device.queue.onSubmittedWorkDone();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

/** A timer for our kernel: the first call warms up (compile, weight packing) and sizes reps. */
function ourTimer(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  budget: number,
  core: CoreApi = THIS_CORE,
  kernel?: "gemv",
): () => Promise<number> {
  // `linear` (auto: the texture design for these weights on software adapters) or a forced kernel.
  const call = (rec: ReturnType<CoreApi["beginRecording"]>) =>
    kernel ? core.matmul(rec, x, w, { transposeB: true, kernel }) : core.linear(rec, x, w);
  const run = async (reps: number) => {
    const rec = core.beginRecording(gpu);
    const outs: Tensor[] = [];
    for (let i = 0; i < reps; i++) outs.push(call(rec));
    const t0 = performance.now();
    await core.submit(rec);
    await core.sync(gpu);
    // Less one empty submit's round trip: on llvmpipe it is ~11 ms whatever the work (issue
    // #20), which at the small shapes' sub-millisecond dispatches was most of what was timed.
    const dt = Math.max(1e-6, (performance.now() - t0) / 1000 - await emptyRoundTrip(gpu));
    await core.readTensor(outs[0]); // surfaces errors; values are checked by the tests
    for (const o of outs) core.releaseTensor(o);
    return dt;
  };
  let reps = 0;
  return async () => {
    if (reps === 0) {
      await run(1); // warm-up: compile, weight packing
      const once = await run(1);
      reps = Math.max(1, Math.min(50, Math.round(budget / Math.max(once, 1e-4))));
      return once;
    }
    return (await run(reps)) / reps;
  };
}

/** A baseline checkout's core: its API, its own device, and its upload. */
export interface Baseline {
  ref: string;
  core: CoreApi & { uploadTensor: typeof uploadTensor };
  gpu: Gpu;
  dir: string;
}

export async function loadBaseline(ref: string): Promise<Baseline> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-matmul-baseline-" });
  await extractTree(ref, dir, ["core", "base"]);
  const core = await import(new URL(`file://${dir}/core/mod.ts`).href);
  return { ref, core, gpu: await core.getGpu(), dir };
}

// deno-lint-ignore no-explicit-any
type Ort = any;

async function loadOrt(): Promise<Ort | string> {
  try {
    return await import("npm:onnxruntime-node@1.30.0");
  } catch (err) {
    return `onnxruntime-node unavailable: ${(err as Error).message.split("\n")[0]}`;
  }
}

/** A timer for ORT's MatMul on the same shape (B [K, N] as a constant initializer). */
async function ortTimer(
  ort: Ort,
  s: Shape,
  b: Float32Array,
  budget: number,
): Promise<{ time: () => Promise<number>; close: () => Promise<void> }> {
  const model = await encodeOnnxModel({
    name: "matmul",
    nodes: [{ op: "MatMul", inputs: ["A", "B"], outputs: ["C"] }],
    initializers: [{
      name: "B",
      dtype: "float32",
      dims: [s.K, s.N],
      data: new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
    }],
    inputs: [{ name: "A", dtype: "float32", shape: [s.M, s.K] }],
    outputs: [{ name: "C", dtype: "float32", shape: [s.M, s.N] }],
  }, { opset: 17 });
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
  });
  const a = new ort.Tensor("float32", fillRandom(s.M * s.K, 7), [s.M, s.K]);
  const run = async (reps: number) => {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await session.run({ A: a });
    return (performance.now() - t0) / 1000;
  };
  let reps = 0;
  return {
    time: async () => {
      if (reps === 0) {
        await run(1);
        const once = await run(1);
        reps = Math.max(1, Math.min(200, Math.round(budget / Math.max(once, 1e-5))));
        return once;
      }
      return (await run(reps)) / reps;
    },
    close: async () => await session.release?.(),
  };
}

const ROUNDS = 3;

/**
 * Runs a timer after a short pause: ORT's worker threads keep spinning for a while after a run,
 * which slowed whichever contender came next (measured: our f32 column, timed right after ORT,
 * lost up to 2× at M = 16 against the same kernel timed alone).
 */
async function settled(time: () => Promise<number>): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 100));
  return await time();
}
const pad = (s: string, n: number) => s.padStart(n);
const gf = (flop: number, sec: number) => (flop / sec / 1e9).toFixed(1);

export async function bench(
  options: { quick?: boolean; baseline?: string; only?: string; small?: boolean } = {},
): Promise<void> {
  const gpu = await getGpu();
  let baselineRef = options.baseline;
  if (baselineRef === undefined) {
    try {
      baselineRef = Deno.env.get("MEDGLM_MATMUL_BASELINE") || undefined;
    } catch {
      baselineRef = undefined;
    }
  }
  const base = baselineRef ? await loadBaseline(baselineRef) : null;
  const ort = await loadOrt();
  console.log(
    `matmul GFLOP/s — ${gpu.adapterInfo.description} (${gpu.backend}${
      gpu.isSoftware ? ", software" : ""
    }) vs onnxruntime-node CPU MatMul (f32)`,
  );
  if (typeof ort === "string") console.log(ort);
  console.log(
    "ratio = ORT time / our time (higher is better); target = DESIGN.md's minimum ratio for the\n" +
      "column named (f32: f32 weights, f16w: f16 weights); met = that column reaches the target",
  );
  // Columns: ours (texture design under auto) f32 and f16 weights, with --small the small-M
  // kernel on the storage buffer too, then the baseline's (auto) f32 and f16.
  const small = options.small ?? false;
  const columns: {
    label: string;
    ratio: string;
    contender: number;
    f16: boolean;
    gemv: boolean;
  }[] = [
    { label: "ours f32", ratio: "f32/ORT", contender: 0, f16: false, gemv: false },
    { label: "ours f16w", ratio: "f16w/ORT", contender: 0, f16: true, gemv: false },
    ...(small
      ? [
        { label: "gemv f32", ratio: "gv32/ORT", contender: 0, f16: false, gemv: true },
        { label: "gemv f16w", ratio: "gv16/ORT", contender: 0, f16: true, gemv: true },
      ]
      : []),
    ...(base
      ? [
        { label: "base f32", ratio: "b32/ORT", contender: 1, f16: false, gemv: false },
        { label: "base f16w", ratio: "b16w/ORT", contender: 1, f16: true, gemv: false },
      ]
      : []),
  ];
  if (base) {
    console.log(`base = the kernels of ${base.ref} in the same rounds, on their own device`);
  }
  const width = (c: string) => Math.max(9, c.length + 2);
  console.log(
    `${"shape".padEnd(24)}${columns.map((c) => pad(c.label, width(c.label))).join("")}${
      pad("ORT", 9)
    }${columns.map((c) => pad(c.ratio, width(c.ratio))).join("")}${pad("target", 14)}${
      pad("met", 5)
    }`,
  );
  const misses: string[] = [];
  const all = (small ? smallShapes() : shapes(options.quick ?? false)).filter((s) =>
    !options.only || s.label.includes(options.only)
  );
  const budget = options.quick ? 0.1 : 0.25;
  let weightKey = "";
  // Weights of this checkout ([0]) and of the baseline ([1]): f32 and f16.
  let weights: { w32: Tensor; w16: Tensor }[] = [];
  let bData: Float32Array | null = null;
  const contenders = [{ gpu, core: { ...THIS_CORE, uploadTensor } }];
  if (base) contenders.push({ gpu: base.gpu, core: base.core });
  const dropWeights = () => {
    weights.forEach((w, i) => {
      contenders[i].core.releaseTensor(w.w32);
      contenders[i].core.releaseTensor(w.w16);
    });
    weights = [];
  };
  try {
    for (const s of all) {
      const key = `${s.K}x${s.N}`;
      if (key !== weightKey) {
        dropWeights();
        weightKey = key;
        const wData = fillRandom(s.N * s.K, 3);
        weights = contenders.map(({ gpu, core }) => ({
          w32: core.uploadTensor(gpu, wData, [s.N, s.K], "f32", { label: "bench W f32" }),
          w16: core.uploadTensor(gpu, wData, [s.N, s.K], "f16", { label: "bench W f16" }),
        }));
        // ORT's B [K, N]: the transpose of W (same values, same FLOPs).
        bData = new Float32Array(s.K * s.N);
        for (let n = 0; n < s.N; n++) {
          for (let k = 0; k < s.K; k++) bData[k * s.N + n] = wData[n * s.K + k];
        }
      }
      const xData = fillRandom(s.M * s.K, 5);
      const xs = contenders.map(({ gpu, core }) => core.uploadTensor(gpu, xData, [s.M, s.K]));
      const flop = 2 * s.M * s.K * s.N;
      // The machine may be shared: alternate the contenders over a few rounds and keep each
      // one's best time, so a burst of load hits them alike.
      const timers = columns.map((c) => {
        const { gpu, core } = contenders[c.contender];
        const w = weights[c.contender][c.f16 ? "w16" : "w32"];
        return ourTimer(gpu, xs[c.contender], w, budget, core, c.gemv ? "gemv" : undefined);
      });
      const theirs = typeof ort === "string" ? null : await ortTimer(ort, s, bData!, budget);
      const times = timers.map(() => Infinity);
      let tOrt = theirs ? Infinity : NaN;
      for (let round = 0; round < ROUNDS; round++) {
        for (let i = 0; i < timers.length; i++) {
          times[i] = Math.min(times[i], await settled(timers[i]));
        }
        if (theirs) tOrt = Math.min(tOrt, await settled(theirs.time));
      }
      await theirs?.close();
      xs.forEach((x, i) => contenders[i].core.releaseTensor(x));
      const [t32, t16] = times;
      const ratio = (t: number) => Number.isNaN(tOrt) ? "-" : (tOrt / t).toFixed(3);
      const target = small ? null : targetOf(s);
      let met = "-";
      if (target && !Number.isNaN(tOrt)) {
        const got = tOrt / (target.column === "f32" ? t32 : t16);
        met = got >= target.ratio ? "yes" : "NO";
        if (met === "NO") misses.push(`${s.label} (${target.column} ${got.toFixed(3)})`);
      }
      console.log(
        `${s.label.padEnd(24)}${
          columns.map((c, i) => pad(gf(flop, times[i]), width(c.label))).join("")
        }${pad(Number.isNaN(tOrt) ? "-" : gf(flop, tOrt), 9)}${
          columns.map((c, i) => pad(ratio(times[i]), width(c.ratio))).join("")
        }${pad(target ? `≥${target.ratio.toFixed(2)} ${target.column}` : "-", 14)}${pad(met, 5)}`,
      );
    }
  } finally {
    dropWeights();
    if (base) await Deno.remove(base.dir, { recursive: true });
  }
  if (typeof ort !== "string" && !small) {
    console.log(
      misses.length === 0
        ? "all DESIGN.md targets met in this run"
        : `below target in this run: ${misses.join(", ")}`,
    );
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      baseline: { type: "string" },
      only: { type: "string" },
      small: { type: "boolean", default: false },
    },
  });
  await bench({
    quick: values.quick,
    baseline: values.baseline,
    only: values.only,
    small: values.small,
  });
}
