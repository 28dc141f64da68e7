/**
 * QLoRA at the real width: a LoRA step (r 8 on query_key_value, batch 1 × 128, recompute on) on an
 * int4 base (quantized at load, frozen, dx through the packed weights) against the same
 * checkpoint's f16 base, in the same run, with each one's peak resident memory. Each measurement is
 * its own process (bench/qlora_child.ts), so each VmHWM is that run's alone; f16 and int4 runs
 * alternate.
 *
 * By default it writes a 2-layer full-width ChatGLM-6B checkpoint (hidden 4096, FFN 16384, vocab
 * 130528: 2.9 GB f16) into a temporary folder it deletes afterwards. Environment:
 * - MEDGLM_QLORA_MODEL=DIR: measure this (float) checkpoint instead, e.g. /work/big/chatglm6b-2;
 * - MEDGLM_QLORA_BASES="f16;4" (default): the bases, `;`-separated, as `--quantize` values
 *   (`8`, `4,group=32`) or `f16`;
 * - MEDGLM_QLORA_SEQ=128, MEDGLM_QLORA_STEPS=2 timed steps per run (after one warm-up),
 *   MEDGLM_QLORA_REPEAT=2 runs of each base.
 *
 * Needs about 2× the f16 weights in free memory: on a shared machine run it under the big-memory
 * lock (`flock /work/big/bigmem.lock deno task bench qlora`).
 */

import { CHATGLM_6B, writeSyntheticCheckpoint } from "../core/mod.ts";
import { runJsonChild } from "./child_json.ts";

interface Measured {
  base: string;
  loadS: number;
  stepMs: number[];
  losses: number[];
  loadPeakRss: number;
  peakRss: number;
}

const CHILD = new URL("./qlora_child.ts", import.meta.url).pathname;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

function measure(dir: string, base: string, seq: number, steps: number): Promise<Measured> {
  const args = [dir, base, String(seq), String(steps)];
  return runJsonChild<Measured>(CHILD, args, `qlora: the ${base} run on ${dir}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const gb = (n: number) => (n / 1e9).toFixed(2);
const label = (base: string) =>
  base === "f16" ? "f16 base" : `int${base} base (--quantize ${base})`;

export async function bench(): Promise<void> {
  const given = env("MEDGLM_QLORA_MODEL");
  const bases = (env("MEDGLM_QLORA_BASES") ?? "f16;4").split(";");
  const seq = Number(env("MEDGLM_QLORA_SEQ") ?? 128);
  const steps = Number(env("MEDGLM_QLORA_STEPS") ?? 2);
  const repeat = Number(env("MEDGLM_QLORA_REPEAT") ?? 2);
  const tmp = given ? null : await Deno.makeTempDir({ prefix: "medglm-bench-qlora-" });
  try {
    const dir = given ?? `${tmp}/chatglm6b-2`;
    if (!given) {
      const t0 = performance.now();
      await writeSyntheticCheckpoint(dir, { sizes: { ...CHATGLM_6B, numLayers: 2 } });
      console.log(
        `made a 2-layer full-width checkpoint in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    }
    const runs = new Map<string, Measured[]>(bases.map((b) => [b, []]));
    for (let r = 0; r < repeat; r++) {
      for (const base of bases) runs.get(base)!.push(await measure(dir, base, seq, steps));
    }
    console.log(
      `\n## LoRA step on ${dir} (r 8 on query_key_value, batch 1 × ${seq}, recompute), ` +
        `${repeat} run(s) × ${steps} step(s) per base\n`,
    );
    console.log(
      "| base | load s | step s (median; all runs) | loss | load peak RSS GB | peak RSS GB |",
    );
    console.log("| --- | --- | --- | --- | --- | --- |");
    const medians = new Map<string, number>();
    for (const base of bases) {
      const ms = runs.get(base)!;
      const all = ms.flatMap((m) => m.stepMs);
      medians.set(base, median(all));
      const losses = ms.map((m) => m.losses[0]);
      if (!losses.every(Number.isFinite)) console.log(`WARNING: ${base}: a non-finite loss`);
      console.log(
        `| ${label(base)} | ${median(ms.map((m) => m.loadS)).toFixed(1)} | ${
          (median(all) / 1000).toFixed(2)
        } (${all.map((t) => (t / 1000).toFixed(2)).join(", ")}) | ${losses[0].toFixed(4)} | ${
          gb(median(ms.map((m) => m.loadPeakRss)))
        } | ${gb(median(ms.map((m) => m.peakRss)))} |`,
      );
    }
    const f16 = medians.get("f16");
    if (f16) {
      for (const base of bases.filter((b) => b !== "f16")) {
        const peak = (b: string) => median(runs.get(b)!.map((m) => m.peakRss));
        console.log(
          `\n${label(base)} / f16 base, same run: step time ${
            (medians.get(base)! / f16).toFixed(2)
          }×, peak RSS ${(peak(base) / peak("f16")).toFixed(2)}×`,
        );
      }
    }
  } finally {
    if (tmp) await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) await bench();
