/**
 * Kernel profiler (opt-in: `MEDGLM_PROFILE=1`, or {@link setProfiling}): where a step's GPU time
 * goes, per kernel. While it is on, a recording keeps its commands instead of encoding them, and
 * `submit` runs each one as its own submission, timed on the wall clock from submit to
 * `onSubmittedWorkDone` less an empty submission's round trip. Slow (one round trip per
 * dispatch), but true: GPU timestamps on llvmpipe under-report kernels by up to 50× (measured:
 * the attention kernels summed to 100 ms of a 1 s training step), so they are not used.
 */

import type { Gpu } from "./device.ts";

/** Time spent per kernel (pipeline label) since profiling began or was last reset. */
export interface KernelTime {
  kernel: string;
  dispatches: number;
  ms: number;
}

/** One command of a profiled recording, encoded when it is run. */
export interface ProfiledCommand {
  label: string;
  encode(encoder: GPUCommandEncoder): void;
}

/** The commands of a profiled recording, in order. */
export interface RecordingProfile {
  commands: ProfiledCommand[];
}

interface ProfileState {
  enabled: boolean;
  totals: Map<string, { dispatches: number; ms: number }>;
}

function state(gpu: Gpu): ProfileState {
  let s = gpu.cache.get("profile") as ProfileState | undefined;
  if (!s) {
    let env = false;
    try {
      env = Deno.env.get("MEDGLM_PROFILE") === "1";
    } catch {
      // no env permission: profiling stays off unless setProfiling turns it on
    }
    s = { enabled: env, totals: new Map() };
    gpu.cache.set("profile", s);
  }
  return s;
}

/** Turns profiling on or off for recordings begun from now on. */
export function setProfiling(gpu: Gpu, on: boolean): void {
  state(gpu).enabled = on;
}

export function isProfiling(gpu: Gpu): boolean {
  return state(gpu).enabled;
}

async function roundTrip(gpu: Gpu, encoder: GPUCommandEncoder): Promise<number> {
  const t0 = performance.now();
  gpu.device.queue.submit([encoder.finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
  return performance.now() - t0;
}

/** Runs a profiled recording's commands one submission at a time, adding up their times. */
export async function runProfiled(gpu: Gpu, profile: RecordingProfile): Promise<void> {
  const { totals } = state(gpu);
  const device = gpu.device;
  const empty: number[] = [];
  for (let i = 0; i < 3; i++) empty.push(await roundTrip(gpu, device.createCommandEncoder()));
  const base = empty.sort((a, b) => a - b)[1];
  for (const command of profile.commands.splice(0)) {
    const encoder = device.createCommandEncoder();
    command.encode(encoder);
    const ms = Math.max(0, (await roundTrip(gpu, encoder)) - base);
    const cur = totals.get(command.label) ?? { dispatches: 0, ms: 0 };
    cur.dispatches++;
    cur.ms += ms;
    totals.set(command.label, cur);
  }
}

/** The kernel times so far, slowest first. */
export function kernelTimes(gpu: Gpu): KernelTime[] {
  return [...state(gpu).totals].map(([kernel, v]) => ({ kernel, ...v }))
    .sort((a, b) => b.ms - a.ms);
}

/** Clears the sums. */
export function resetProfile(gpu: Gpu): void {
  state(gpu).totals.clear();
}

/** A table of the `top` slowest kernels with their share of the total. */
export function profileReport(gpu: Gpu, top = 25): string {
  const times = kernelTimes(gpu);
  const total = times.reduce((s, t) => s + t.ms, 0);
  const lines = [`GPU time by kernel, each dispatch run alone (${total.toFixed(0)} ms in all)`];
  for (const t of times.slice(0, top)) {
    lines.push(
      `${t.ms.toFixed(1).padStart(10)} ms ${(100 * t.ms / (total || 1)).toFixed(1).padStart(5)}% ` +
        `${String(t.dispatches).padStart(7)}×  ${t.kernel}`,
    );
  }
  return lines.join("\n");
}
