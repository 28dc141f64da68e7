/**
 * One measured run for bench/real_size.ts, in its own process so that its peak resident memory
 * (VmHWM) is its own:
 * `deno run -A bench/real_size_child.ts CORE_MOD_URL MODEL_DIR [DECODE_TOKENS] [f16|f32]`.
 * CORE_MOD_URL is the core member's mod.ts to use (this checkout's, or an older checkout's, for the
 * before/after table). Prints one JSON line: load and first-forward seconds, decode tokens/s,
 * peak RSS after the load and at the end.
 */

function vmHwmBytes(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * CPU seconds this process has used, all threads (the software GPU's included): on a shared
 * machine it says what a phase costs when wall-clock times mostly measure the neighbours.
 */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const [coreUrl, dir, decodeArg, dtypeArg] = Deno.args;
const decodeTokens = Number(decodeArg ?? 0);
const started = performance.now();
const core = await import(coreUrl);
const gpu = await core.getGpu();
const t0 = performance.now();
const c0 = cpuSeconds();
const lines: string[] = [];
const model = await core.loadModel(dir, {
  log: (l: string) => lines.push(l),
  progressBar: false,
  gpu,
  dtype: dtypeArg || undefined, // absent: the load's default (defaultWeightDtype)
});
const t1 = performance.now();
const c1 = cpuSeconds();
const loadHwm = vmHwmBytes();
const { gmaskTokenId, bosTokenId } = model.config;
// "你好" in the real tokenizer, then [gMASK] <sop>: a real prompt's shape.
const prompt = [5, 74874, gmaskTokenId, bosTokenId];
const logits: Float32Array = await model.forward([prompt]);
const t2 = performance.now();
const c2 = cpuSeconds();
let finite = true;
for (let i = 0; i < logits.length; i += 97) if (!Number.isFinite(logits[i])) finite = false;
let decodePerSecond: number | null = null;
if (decodeTokens > 0) {
  // Greedy decode through the KV cache (what `deno task infer` runs per token).
  const cache = model.createCache(1, prompt.length + decodeTokens + 1);
  let last: Float32Array = await model.prefill([prompt], cache);
  const d0 = performance.now();
  for (let n = 0; n < decodeTokens; n++) {
    let best = 0;
    for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
    last = await model.decodeStep([best], cache);
  }
  decodePerSecond = decodeTokens / ((performance.now() - d0) / 1000);
}
console.log(JSON.stringify({
  processToLoadedS: (t1 - started) / 1000,
  loadS: (t1 - t0) / 1000,
  loadCpuS: c1 - c0,
  firstForwardCpuS: c2 - c1,
  firstForwardS: (t2 - t1) / 1000,
  startToFirstTokenS: (t2 - started) / 1000,
  decodePerSecond,
  loadPeakRss: loadHwm,
  peakRss: vmHwmBytes(),
  logitsFinite: finite,
  loadSplit: lines.find((l) => l.includes("weights read"))?.replace(/^.*: weights/, "weights") ??
    null,
}));
model.dispose();
