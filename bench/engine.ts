/**
 * The generation engine's continuous batching on the "small" random ChatGLM (hidden 1024, 8
 * layers, 16 heads, vocab 32000, weights built in memory): decode tokens/s at 1, 4 and 16
 * sequences decoding together through the scheduler and the slot KV cache, against the
 * model's lockstep cache (`decodeStep`, every row advancing together) at the same batch in the
 * same run; and first-token latency (request in → first token out) for one request on an idle
 * engine and for one joining a batch of 15 that is already decoding.
 *
 * First, decode at batch 1 on the tiny fixture and the demo model, greedy and with HTTP's default
 * sampling (temperature 0.95, top-p 0.7; and with the UTF-8 mask, the demo's default): the per-token path (logits read back every step, host
 * sampler) against grouped decoding (ids sampled on the GPU, read back once per group of steps)
 * in the same run, with the JS thread's CPU time per token (the host's cost).
 *
 * The batch-1 table also times a baseline commit's per-token decode of the same models in a child
 * process (bench/engine_baseline_child.ts), alternating with this checkout: `--baseline REF`
 * (default 965e0a1, the code when issue #20 was filed; `none` skips it). `--decode-only` stops
 * after the batch-1 table.
 *
 * Run alone: `deno run --allow-all bench/engine.ts [--baseline REF] [--decode-only]`, or
 * `deno task bench engine [--baseline REF]`. Bounded: about two minutes on llvmpipe.
 */

import {
  type ChatGLMConfig,
  type ChatGLMModel,
  DEMO_MODEL_DIR,
  getGpu,
  type Gpu,
  loadChatGLM as loadModel,
  randomChatGLM,
  type WeightDtype,
} from "../core/mod.ts";
import { createRng } from "../base/mod.ts";
import {
  beginRecording,
  packSamplingRows,
  readTensor,
  releaseTensor,
  sampleTokens,
  submit,
  sync,
  uploadTensor,
} from "../core/mod.ts";
import { parseArgs } from "node:util";
import { smallConfig } from "./small_model.ts";
import { decodeDecoder, session, smallModel, writeModelDir } from "./onnx.ts";
import { runJsonChild } from "./child_json.ts";
import { extractTree } from "./git_tree.ts";
import { loadTokenizer } from "../data/mod.ts";
import {
  type ByteTokens,
  byteTokensOf,
  chooseToken,
  createScheduler,
  loadOrt,
  type OrtModule,
  type SamplerSettings,
  type Scheduler,
  webgpuDecoder,
} from "../serve/mod.ts";

const PROMPT_LEN = 16;
const DECODE_STEPS = 8;

function promptIds(config: ChatGLMConfig, n: number, salt: number): number[] {
  const span = Math.min(20000, config.vocabSize - 200);
  const ids = Array.from({ length: n - 2 }, (_, i) => 5 + ((i * 7919 + salt * 104729) % span));
  return [...ids, config.gmaskTokenId, config.bosTokenId];
}

interface SeqTiming {
  submitted: number;
  firstToken: number;
  last: number;
  tokens: number;
}

/** Submits `n` greedy sequences at once; resolves with each one's timing. */
function runBatch(
  sched: Scheduler,
  config: ChatGLMConfig,
  n: number,
  salt: number,
): Promise<SeqTiming[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) =>
      new Promise<SeqTiming>((resolve, reject) => {
        const t: SeqTiming = { submitted: performance.now(), firstToken: 0, last: 0, tokens: 0 };
        sched.submit({
          promptIds: promptIds(config, PROMPT_LEN, salt + i),
          settings: { temperature: 0 },
          rng: createRng(i),
          maxNewTokens: DECODE_STEPS + 1,
          onToken() {
            const now = performance.now();
            if (t.tokens === 0) t.firstToken = now;
            t.last = now;
            t.tokens++;
            return false;
          },
          onEnd(_reason, error) {
            if (error) reject(error);
            else resolve(t);
          },
        });
      })),
  );
}

/** Lockstep baseline: one cache of `batch` rows, prefill together, then decodeStep. */
async function lockstepDecodeMs(model: ChatGLMModel, batch: number): Promise<number> {
  const cache = model.createCache(batch, PROMPT_LEN + DECODE_STEPS + 1);
  try {
    const rows = Array.from({ length: batch }, (_, i) => promptIds(model.config, PROMPT_LEN, i));
    await model.prefill(rows, cache);
    const t = performance.now();
    for (let s = 0; s < DECODE_STEPS; s++) {
      await model.decodeStep(rows.map((_, i) => 5 + s + i), cache);
    }
    return performance.now() - t;
  } finally {
    cache.free();
  }
}

/** Prints a table of right-aligned columns. */
function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  console.log([line(head), ...rows.map(line)].join("\n"));
}

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;
/** Tokens decoded per run of the batch-1 comparison (after the first, which prefill gives). */
const GROUP_BENCH_TOKENS = 64;

/**
 * CPU time in ms of this process (`self`: every thread, the software adapter's included) or of
 * the calling thread (`thread-self`: the JS thread, where commands are recorded), from
 * /proc (10 ms ticks); null where /proc is not there.
 */
export function cpuMs(which: "self" | "thread-self"): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${which}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return null;
  }
}

/** The sampler settings of the batch-1 table's rows: greedy, and HTTP's defaults. */
const DECODE_MODES = {
  greedy: { temperature: 0 },
  "T0.95 p0.7": { temperature: 0.95, topP: 0.7 },
  // The demo's default: the UTF-8 mask on (masked on the GPU within groups).
  "T0.95 p0.7 utf8": { temperature: 0.95, topP: 0.7, validUtf8: true },
} as const;

/**
 * One request on an otherwise idle scheduler: decode ms after the first token, TTFT, and the
 * JS thread's CPU ms over the decode (the host's share of it).
 */
async function oneRequest(
  sched: Scheduler,
  config: ChatGLMConfig,
  tokens: number,
  settings: SamplerSettings = { temperature: 0 },
): Promise<{ decodeMs: number; ttftMs: number; hostMs: number }> {
  let cpuAtFirst = 0;
  const [t] = await new Promise<SeqTiming[]>((resolve, reject) => {
    const t: SeqTiming = { submitted: performance.now(), firstToken: 0, last: 0, tokens: 0 };
    sched.submit({
      promptIds: promptIds(config, PROMPT_LEN, 3),
      settings: { validUtf8: false, ...settings },
      rng: createRng(1),
      maxNewTokens: tokens + 1,
      onToken() {
        const now = performance.now();
        if (t.tokens === 0) {
          t.firstToken = now;
          cpuAtFirst = cpuMs("thread-self") ?? 0;
        }
        t.last = now;
        t.tokens++;
        return false;
      },
      onEnd: (_r, error) => error ? reject(error) : resolve([t]),
    });
  });
  if (t.tokens !== tokens + 1) throw new Error(`expected ${tokens + 1} tokens, got ${t.tokens}`);
  return {
    decodeMs: t.last - t.firstToken,
    ttftMs: t.firstToken - t.submitted,
    hostMs: (cpuMs("thread-self") ?? NaN) - cpuAtFirst,
  };
}

/** The commit the decode target is measured against: the code when issue #20 was filed. */
export const DECODE_BASELINE = "965e0a1";

/** REF's decode per sampling mode (bench/engine_baseline_child.ts); its modes only. */
type RefTimes = Record<string, { decodeMs: number; ttftMs: number }>;

/**
 * REF's batch-1 per-token decode of `dir`'s model in a child process (REF's code extracted in
 * `tree`), for the modes REF has (the UTF-8 mask came later).
 */
export function refDecode(tree: string, dir: string, config: ChatGLMConfig): Promise<RefTimes> {
  const modes = Object.fromEntries(
    Object.entries(DECODE_MODES).filter(([, s]) => !("validUtf8" in s)),
  );
  return runJsonChild<RefTimes>(
    new URL("./engine_baseline_child.ts", import.meta.url).pathname,
    [
      tree,
      dir,
      String(GROUP_BENCH_TOKENS),
      JSON.stringify(promptIds(config, PROMPT_LEN, 3)),
      JSON.stringify(modes),
    ],
    `decode with ${tree}`,
  );
}

/**
 * Batch-1 decode tok/s on the tiny fixture and the demo model (f32 weights): `baseline`'s code
 * (a git ref, default {@link DECODE_BASELINE}; null: skipped) per token in a child process, this
 * checkout's per-token path, and grouped GPU sampling, alternating three times (best of each
 * counts: the machine is shared).
 */
export async function groupedDecodeTable(
  gpu: Gpu,
  baseline: string | null = DECODE_BASELINE,
): Promise<void> {
  console.log(
    `\n## Decode at batch 1: ${baseline ?? "(no baseline)"} per token, per-token readback and ` +
      `grouped GPU sampling (bench/engine.ts) — ${gpu.adapterInfo.description} (${gpu.backend})`,
  );
  const head = [
    "model",
    "sampling",
    ...(baseline ? [`${baseline} tok/s`] : []),
    "per-token tok/s",
    "grouped tok/s",
    ...(baseline ? [`grouped ÷ ${baseline}`] : []),
    "grouped ÷ per-token",
    "host ms/tok per-token",
    "host ms/tok grouped",
    "TTFT per-token ms",
    "TTFT grouped ms",
  ];
  const rows: string[][] = [];
  const tree = baseline ? await Deno.makeTempDir({ prefix: "medglm-engine-baseline-" }) : null;
  try {
    if (baseline && tree) await extractTree(baseline, tree, ["core", "base", "serve"]);
    for (const [name, dir] of [["tiny", TINY_DIR], ["demo", DEMO_MODEL_DIR]]) {
      rows.push(...await modelRows(name, dir, baseline, tree));
    }
  } finally {
    if (tree) await Deno.remove(tree, { recursive: true });
  }
  printTable(head, rows);
  console.log(
    `prompt ${PROMPT_LEN} tokens, ${GROUP_BENCH_TOKENS} tokens after the first; groups grow 1, ` +
      "2, 4, 8, 16 steps. host ms/tok: CPU time of the JS thread (recording, readback, host " +
      "sampling) per token, from /proc (10 ms ticks). Best of three alternating runs each" +
      (baseline
        ? `; ${baseline}: its webgpuDecoder and host chooseToken in a child process (its own ` +
          "device; no scheduler around it), – where it had no such mode"
        : "") +
      ".",
  );
}

/**
 * A one-slot decoder and scheduler on `model` (not owned): per-token readback and host sampling,
 * or grouped decoding with ids sampled on the GPU (`gpuSampling`).
 */
function batch1Engine(model: ChatGLMModel, gpuSampling: boolean, bytes?: ByteTokens) {
  const decoder = webgpuDecoder(model, { slots: 1, ownsModel: false });
  // endId -1: every run decodes its full length.
  const sched = createScheduler(decoder, {
    textVocab: model.config.vocabSize,
    endId: -1,
    gpuSampling,
    bytes,
  });
  return {
    sched,
    async close() {
      await sched.close();
      decoder.close();
    },
  };
}

/** The table rows of one model: every decode mode, REF and this checkout alternating. */
async function modelRows(
  name: string,
  dir: string,
  baseline: string | null,
  tree: string | null,
): Promise<string[][]> {
  const model = await loadModel(dir, { log: () => {}, progressBar: false, dtype: "f32" });
  const bytes: ByteTokens = byteTokensOf(await loadTokenizer(dir));
  const perToken = batch1Engine(model, false, bytes), grouped = batch1Engine(model, true, bytes);
  const none = { decodeMs: Infinity, ttftMs: Infinity, hostMs: Infinity };
  type Times = typeof none;
  const best = (x: Times, y: Times) => ({
    decodeMs: Math.min(x.decodeMs, y.decodeMs),
    ttftMs: Math.min(x.ttftMs, y.ttftMs),
    hostMs: Math.min(x.hostMs, y.hostMs),
  });
  const modes = Object.entries(DECODE_MODES);
  const a = modes.map(() => none), b = modes.map(() => none);
  const ref = modes.map(() => Infinity);
  try {
    // Warm-up: compiles every pipeline.
    for (const [, settings] of modes) {
      await oneRequest(perToken.sched, model.config, 4, settings);
      await oneRequest(grouped.sched, model.config, 4, settings);
    }
    for (let rep = 0; rep < 3; rep++) {
      if (baseline && tree) {
        const times = await refDecode(tree, dir, model.config);
        modes.forEach(([mode], i) => {
          if (times[mode]) ref[i] = Math.min(ref[i], times[mode].decodeMs);
        });
      }
      for (const [i, [, settings]] of modes.entries()) {
        a[i] = best(
          a[i],
          await oneRequest(perToken.sched, model.config, GROUP_BENCH_TOKENS, settings),
        );
        b[i] = best(
          b[i],
          await oneRequest(grouped.sched, model.config, GROUP_BENCH_TOKENS, settings),
        );
      }
    }
  } finally {
    await perToken.close();
    await grouped.close();
    model.dispose();
  }
  const tokS = (ms: number) => GROUP_BENCH_TOKENS / (ms / 1000);
  const perTok = (ms: number) => (ms / GROUP_BENCH_TOKENS).toFixed(2);
  return modes.map(([mode], i) => [
    name,
    mode,
    ...(baseline ? [Number.isFinite(ref[i]) ? tokS(ref[i]).toFixed(1) : "–"] : []),
    tokS(a[i].decodeMs).toFixed(1),
    tokS(b[i].decodeMs).toFixed(1),
    ...(baseline ? [Number.isFinite(ref[i]) ? (ref[i] / b[i].decodeMs).toFixed(2) : "–"] : []),
    (a[i].decodeMs / b[i].decodeMs).toFixed(2),
    perTok(a[i].hostMs),
    perTok(b[i].hostMs),
    a[i].ttftMs.toFixed(0),
    b[i].ttftMs.toFixed(0),
  ]);
}

/**
 * Issue #20's "small decode ≥ 0.6× ORT": batch-1 greedy decode of the small ChatGLM
 * (bench/onnx.ts's seeded weights, written as a checkpoint and loaded as the CLI would) with f32
 * and with f16 weights, grouped (ids sampled on the GPU) and per token, beside onnxruntime-node's
 * CPU run of the same weights' export through the engine's slot decoder, all on the same prompt,
 * {@link GROUP_BENCH_TOKENS} tokens after the first, alternating rounds (best of each counts).
 */
export async function smallDecodeTable(gpu: Gpu, rounds = 3): Promise<void> {
  console.log(
    `\n## Small ChatGLM decode at batch 1: ours (WebGPU, ${gpu.adapterInfo.description}, ` +
      `${gpu.backend}) vs ONNX Runtime CPU, same weights (bench/engine.ts --small)`,
  );
  let ort: OrtModule;
  try {
    ort = await loadOrt();
  } catch (err) {
    console.log(`skipped: onnxruntime-node is not loadable (${(err as Error).message})`);
    return;
  }
  const loadBefore = loadAverage();
  const m = smallModel();
  const prompt = promptIds(m.config, PROMPT_LEN, 3);
  const dir = await writeModelDir(m);
  const dtypes: WeightDtype[] = gpu.hasF16 ? ["f32", "f16"] : ["f32"];
  const sess = await session(ort, m, "f32");
  const ours: {
    dtype: WeightDtype;
    model: ChatGLMModel;
    perToken: ReturnType<typeof batch1Engine>;
    grouped: ReturnType<typeof batch1Engine>;
  }[] = [];
  let defaultDtype: WeightDtype | null = null;
  const none = { decodeMs: Infinity, hostMs: Infinity };
  const per = dtypes.map(() => none), grp = dtypes.map(() => none);
  let ortRate = 0;
  const best = (x: typeof none, y: typeof none) => ({
    decodeMs: Math.min(x.decodeMs, y.decodeMs),
    hostMs: Math.min(x.hostMs, y.hostMs),
  });
  try {
    // First with loadChatGLM's default dtype (by adapter and model size), then the other one.
    for (const dtype of [undefined, ...dtypes]) {
      if (ours.some((o) => o.dtype === dtype)) continue;
      const model = await loadModel(dir, {
        dtype,
        log: () => {},
        progressBar: false,
        maxContext: PROMPT_LEN + GROUP_BENCH_TOKENS + 8,
      });
      defaultDtype ??= model.dtype;
      ours.push({
        dtype: model.dtype,
        model,
        perToken: batch1Engine(model, false),
        grouped: batch1Engine(model, true),
      });
    }
    ours.sort((a, b) => dtypes.indexOf(a.dtype) - dtypes.indexOf(b.dtype));
    // Warm-up: every pipeline compiled, ORT's first runs done.
    await decodeDecoder(ort, sess, m, [prompt], 4);
    for (const o of ours) {
      await oneRequest(o.perToken.sched, m.config, 4);
      await oneRequest(o.grouped.sched, m.config, 4);
    }
    for (let rep = 0; rep < rounds; rep++) {
      ortRate = Math.max(
        ortRate,
        (await decodeDecoder(ort, sess, m, [prompt], GROUP_BENCH_TOKENS)).rate,
      );
      for (const [i, o] of ours.entries()) {
        grp[i] = best(grp[i], await oneRequest(o.grouped.sched, m.config, GROUP_BENCH_TOKENS));
        per[i] = best(per[i], await oneRequest(o.perToken.sched, m.config, GROUP_BENCH_TOKENS));
      }
    }
  } finally {
    for (const o of ours) {
      await o.perToken.close();
      await o.grouped.close();
      o.model.dispose();
    }
    await sess.release();
    await Deno.remove(dir, { recursive: true });
  }
  const tokS = (ms: number) => GROUP_BENCH_TOKENS / (ms / 1000);
  const head = [
    "weights",
    "grouped tok/s",
    "per-token tok/s",
    "ORT tok/s",
    "grouped ÷ ORT",
    "per-token ÷ ORT",
    "host ms/tok grouped",
  ];
  const rows = dtypes.map((dtype, i) => [
    dtype + (dtype === defaultDtype ? " (default)" : ""),
    tokS(grp[i].decodeMs).toFixed(1),
    tokS(per[i].decodeMs).toFixed(1),
    ortRate.toFixed(1),
    (tokS(grp[i].decodeMs) / ortRate).toFixed(2),
    (tokS(per[i].decodeMs) / ortRate).toFixed(2),
    (grp[i].hostMs / GROUP_BENCH_TOKENS).toFixed(2),
  ]);
  printTable(head, rows);
  console.log(
    `greedy, prompt ${PROMPT_LEN} tokens, ${GROUP_BENCH_TOKENS} tokens after the first. ours: ` +
      "scheduler + webgpuDecoder (grouped: groups of 1, 2, 4, 8, 16 steps; per-token: logits " +
      "read back each step, host argmax); ORT: f32 export of the same weights through " +
      "onnxDecoder (serve --backend onnx), host argmax, timed after its first decode step. " +
      `Best of ${rounds} alternating rounds; (default): the dtype loadChatGLM picks here. ` +
      `Load average (1 min) before/after: ${loadBefore}/${loadAverage()} — other work on the ` +
      "machine slows ORT's spinning thread pool and llvmpipe's threads unequally, so compare " +
      "ratios of runs with similar load.",
  );
}

/** The 1-minute load average from /proc/loadavg, or "?" where there is none. */
function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  } catch {
    return "?";
  }
}

/**
 * The GPU sampler against the host's `chooseToken` on one row: ms per row (GPU: 4 rows in one
 * dispatch, one readback, less one empty round trip), for a small and a ChatGLM-6B-sized
 * vocabulary, with flat logits (every id a candidate: the worst case for both) at HTTP's default
 * settings and at temperature 1.5 with nothing cut; the ids must agree.
 */
export async function samplerTable(gpu: Gpu): Promise<void> {
  console.log(`\n## Sampling one row: host chooseToken vs GPU sampleTokens (bench/engine.ts)`);
  const rows: string[][] = [];
  const R = 4;
  const settingsOf = {
    "T0.95 p0.7": { temperature: 0.95, topP: 0.7 },
    "T1.5": { temperature: 1.5 },
  };
  for (const V of [2048, 130528]) {
    for (const [mode, settings] of Object.entries(settingsOf)) {
      const rng = createRng(V);
      const logits = Float32Array.from({ length: R * V }, () => (rng.next() - 0.5) * 0.1);
      const draws = Array.from({ length: R }, (_, i) => createRng(i).next());
      const t0 = performance.now();
      const host = draws.map((u, i) =>
        chooseToken(logits.slice(i * V, (i + 1) * V), V, settings, [], {
          ...createRng(0),
          next: () => u,
        })
      );
      const hostMs = (performance.now() - t0) / R;
      const l = uploadTensor(gpu, logits, [R, V]);
      const packed = packSamplingRows(draws.map((uniform) => ({ ...settings, uniform })));
      const st = uploadTensor(gpu, packed.settings, [packed.settings.length]);
      const h = uploadTensor(gpu, packed.history, [packed.history.length]);
      let gpuMs = Infinity;
      let ids: number[] = [];
      try {
        for (let rep = 0; rep < 3; rep++) {
          const rec = beginRecording(gpu);
          const out = sampleTokens(rec, l, V, st, h);
          const t1 = performance.now();
          await submit(rec);
          ids = [...await readTensor(out)];
          const ms = performance.now() - t1;
          releaseTensor(out);
          const t2 = performance.now();
          await sync(gpu);
          gpuMs = Math.min(gpuMs, (ms - (performance.now() - t2)) / R);
        }
      } finally {
        for (const t of [l, st, h]) releaseTensor(t);
      }
      const same = ids.every((id, i) => id === host[i]);
      rows.push([String(V), mode, hostMs.toFixed(2), gpuMs.toFixed(2), same ? "yes" : "NO"]);
    }
  }
  const head = ["vocab", "sampling", "host ms/row", "GPU ms/row", "same ids"];
  printTable(head, rows);
  console.log(
    "flat logits (every id a candidate); GPU: 4 rows in one dispatch, time less one empty round " +
      "trip, best of three; host: chooseToken (sorts the candidates). Before the threshold " +
      "search, the GPU walked candidates one rank per pass and gave up past ~60 on 130k ids.",
  );
}

/**
 * `--baseline REF` (default {@link DECODE_BASELINE}; `none` skips it), `--decode-only`, `--small`
 * (only the small model's decode beside ORT).
 */
export function engineBenchFlags(
  args: readonly string[],
): { baseline: string | null; decodeOnly: boolean; small: boolean } {
  const { values } = parseArgs({
    args: [...args],
    options: {
      baseline: { type: "string" },
      "decode-only": { type: "boolean" },
      small: { type: "boolean" },
    },
    strict: false,
    allowPositionals: true,
  });
  const ref = typeof values.baseline === "string" ? values.baseline : DECODE_BASELINE;
  if (ref === "") throw new Error("bench engine: --baseline needs a git ref (or none)");
  return {
    baseline: ref === "none" ? null : ref,
    decodeOnly: values["decode-only"] === true,
    small: values.small === true,
  };
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  const flags = engineBenchFlags(Deno.args);
  if (flags.small) return await smallDecodeTable(gpu);
  await groupedDecodeTable(gpu, flags.baseline);
  if (flags.decodeOnly) return;
  await samplerTable(gpu);
  const config = smallConfig(256);
  const dtype: WeightDtype = gpu.hasF16 ? "f16" : "f32";
  console.log(
    `\n## Generation engine, continuous batching (bench/engine.ts) — small random ChatGLM, ` +
      `${dtype} weights, ${gpu.adapterInfo.description} (${gpu.backend})`,
  );
  const model = randomChatGLM(gpu, config, { dtype });
  const decoder = webgpuDecoder(model, { slots: 16, maxContext: config.maxSequenceLength });
  // endId -1: random weights must not stop early; every sequence runs its full length.
  const sched = createScheduler(decoder, { textVocab: config.vocabSize, endId: -1 });
  const rows: string[][] = [];
  try {
    await runBatch(sched, config, 2, 999); // warm-up: compiles every pipeline
    await lockstepDecodeMs(model, 2);
    for (const batch of [1, 4, 16]) {
      // Engine and lockstep alternate twice; the faster of each pair counts (the machine is
      // shared, so one slow run says little).
      let engineMs = Infinity, lockMs = Infinity;
      let ttft: number[] = [];
      for (let rep = 0; rep < 2; rep++) {
        const timings = await runBatch(sched, config, batch, batch * 100 + rep);
        // Decode time once everyone has its first token: every later token came from a batched
        // step.
        const start = Math.max(...timings.map((t) => t.firstToken));
        const end = Math.max(...timings.map((t) => t.last));
        if (end - start < engineMs) {
          engineMs = end - start;
          ttft = timings.map((t) => t.firstToken - t.submitted);
        }
        lockMs = Math.min(lockMs, await lockstepDecodeMs(model, batch));
      }
      const engineTokS = (batch * DECODE_STEPS) / (engineMs / 1000);
      const lockTokS = (batch * DECODE_STEPS) / (lockMs / 1000);
      rows.push([
        String(batch),
        engineTokS.toFixed(1),
        lockTokS.toFixed(1),
        (engineTokS / lockTokS).toFixed(2),
        (engineMs / DECODE_STEPS).toFixed(1),
        Math.min(...ttft).toFixed(0),
        Math.max(...ttft).toFixed(0),
      ]);
    }
    // First-token latency of one request joining 15 that are already decoding.
    let decoding = 0;
    let joinTtft = 0;
    const busy = Promise.all(
      Array.from({ length: 15 }, (_, i) =>
        new Promise<void>((resolve, reject) => {
          let first = true;
          sched.submit({
            promptIds: promptIds(config, PROMPT_LEN, 5000 + i),
            settings: { temperature: 0 },
            rng: createRng(i),
            maxNewTokens: 40,
            onToken() {
              if (first) decoding++;
              first = false;
              return false;
            },
            onEnd: (_r, error) => error ? reject(error) : resolve(),
          });
        })),
    );
    while (decoding < 15) await new Promise((r) => setTimeout(r, 5));
    const [joined] = await runBatch(sched, config, 1, 7000);
    joinTtft = joined.firstToken - joined.submitted;
    await busy;
    const head = [
      "batch",
      "engine tok/s",
      "lockstep tok/s",
      "ratio",
      "ms/step",
      "TTFT min ms",
      "TTFT max ms",
    ];
    printTable(head, rows);
    console.log(
      `prompt ${PROMPT_LEN} tokens, ${DECODE_STEPS} decode steps. engine: scheduler + slot KV ` +
        "cache (each sequence its own length; grouped GPU sampling, the default), tokens/s over the steps after every first token; " +
        "lockstep: the model's decodeStep on one cache whose rows advance together (baseline). " +
        "TTFT: submit → first token, all submitted at once (similar-length prompts prefill as one " +
        "batch). Best of two alternating runs each.",
    );
    console.log(
      `first token of a request joining 15 live sequences: ${joinTtft.toFixed(0)} ms ` +
        "(waits for the running decode step, then its own prefill)",
    );
  } finally {
    await sched.close();
    decoder.close();
  }
}

if (import.meta.main) await bench();
