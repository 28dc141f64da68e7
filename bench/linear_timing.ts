/**
 * Timing our `linear` kernel the same way in every benchmark that measures it (quant, gpu):
 * `reps` dispatches in one submission after a warm-up (compile, weight packing), reps sized to
 * a time budget; and the cheap deterministic fill their operands use.
 */

import {
  beginRecording,
  type Gpu,
  linear,
  readTensor,
  type Recording,
  releaseTensor,
  submit,
  sync,
  type Tensor,
} from "../core/mod.ts";

/** Cheap deterministic values in [-0.05, 0.05) (benchmarks only need non-trivial ones). */
export function fillRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x & 0xffff) / 65536 - 0.5) * 0.1;
  }
  return out;
}

/**
 * Seconds per call of `linear(x, w)`, after a warm-up, over ~`budget` s per round; the best of
 * `rounds` rounds (the machine may be shared).
 */
export function linearSeconds(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  budget: number,
  rounds = 1,
): Promise<number> {
  return opSeconds(gpu, (rec) => linear(rec, x, w), budget, rounds);
}

/** Seconds per call of any one-output kernel `op`, timed as {@link linearSeconds} does. */
export async function opSeconds(
  gpu: Gpu,
  op: (rec: Recording) => Tensor,
  budget: number,
  rounds = 1,
): Promise<number> {
  const run = async (reps: number) => {
    const rec = beginRecording(gpu);
    const outs: Tensor[] = [];
    for (let i = 0; i < reps; i++) outs.push(op(rec));
    const t0 = performance.now();
    await submit(rec);
    await sync(gpu);
    const dt = (performance.now() - t0) / 1000;
    await readTensor(outs[0]); // surfaces errors; values are checked by the tests
    for (const o of outs) releaseTensor(o);
    return dt;
  };
  await run(1);
  const once = await run(1);
  const reps = Math.max(2, Math.min(50, Math.round(budget / Math.max(once, 1e-4))));
  let best = Infinity;
  for (let i = 0; i < rounds; i++) best = Math.min(best, (await run(reps)) / reps);
  return best;
}
