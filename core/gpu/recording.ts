/**
 * Recording: one model step = one command encoder, submitted once. Kernel wrappers take the
 * recording first and append a dispatch; `submit` sends everything in one queue submission and
 * turns any GPU error of that submission into a thrown {@link GpuError}.
 *
 * Uniform parameters of every dispatch live at their own offset in per-recording uniform
 * buffers, written once at submit, so no dispatch's parameters overwrite another's.
 */

import { type Gpu, GpuError } from "./device.ts";
import { isProfiling, type RecordingProfile, runProfiled } from "./profile.ts";

/** An open recording: a command encoder plus the uniform data of its dispatches. */
export interface Recording {
  readonly gpu: Gpu;
  readonly encoder: GPUCommandEncoder;
  /** Number of dispatches recorded so far (for dispatch-overhead accounting). */
  dispatches: number;
  /** "open" until submitted or discarded; recording into a closed recording throws. */
  state: "open" | "submitted" | "discarded";
  /** Called (in order) right after the submission; the buffer pool hooks buffer reuse here. */
  readonly onSubmit: Array<() => void>;
  /** Free-form per-recording scratch for core modules (e.g. buffers released during the step). */
  readonly scratch: Map<string, unknown>;
  /** @internal */ pass: GPUComputePassEncoder | null;
  /** @internal */ uniformBlocks: UniformBlock[];
  /** @internal validation results of each recorded dispatch, checked at submit */
  checks: Promise<string | null>[];
  /** @internal the commands, kept to be run one by one, when the kernel profiler is on */
  profile: RecordingProfile | null;
  /** @internal commands being captured for replay (see {@link beginCapture}) */
  capture: CapturedCommand[] | null;
}

/** One command of a capture: a dispatch (pipeline, bind group, grid) or an encoder command. */
type CapturedCommand =
  | { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; grid: [number, number, number] }
  | { label: string; encode: (encoder: GPUCommandEncoder) => void };

/**
 * Commands recorded once and encoded again as they are: the same pipelines, bind groups (so the
 * same buffers and uniform values) and grids. What a replayed step does differently must live
 * in GPU memory (e.g. a step counter a kernel advances), not in uniforms or bindings.
 */
export interface Capture {
  readonly rec: Recording;
  readonly commands: readonly CapturedCommand[];
  /** Dispatches among the commands. */
  readonly dispatches: number;
}

interface UniformBlock {
  buffer: GPUBuffer;
  data: Uint8Array<ArrayBuffer>;
  view: DataView;
  used: number;
}

const UNIFORM_BLOCK_BYTES = 1 << 16;
const openCounts = new WeakMap<Gpu, number>();

/** Starts a recording on the shared device. */
export function beginRecording(gpu: Gpu): Recording {
  gpu.checkErrors();
  openCounts.set(gpu, (openCounts.get(gpu) ?? 0) + 1);
  return {
    gpu,
    encoder: gpu.device.createCommandEncoder(),
    dispatches: 0,
    state: "open",
    onSubmit: [],
    scratch: new Map(),
    pass: null,
    uniformBlocks: [],
    checks: [],
    profile: isProfiling(gpu) ? { commands: [] } : null,
    capture: null,
  };
}

/**
 * Starts capturing the commands recorded into `rec` from here on, to be encoded again by
 * {@link replayCapture} later in the same recording. Why: a decode step's host cost is mostly
 * creating a bind group and an error scope per dispatch (and the tape's bookkeeping around it);
 * the steps of a decode group are the same commands, so the group records its first step and
 * replays it. The buffers a capture binds must stay as they are until the recording is submitted:
 * the pool's buffers do as long as nothing else is acquired in between (a replay acquires none),
 * and the uniform values live in the recording's own uniform blocks.
 */
export function beginCapture(rec: Recording): void {
  assertOpen(rec);
  if (rec.capture) throw new GpuError("beginCapture: a capture is already open");
  rec.capture = [];
}

/** Ends the capture begun by {@link beginCapture}; returns the commands recorded since. */
export function endCapture(rec: Recording): Capture {
  const commands = rec.capture;
  if (!commands) throw new GpuError("endCapture: no capture is open");
  rec.capture = null;
  return { rec, commands, dispatches: commands.filter((c) => "pipeline" in c).length };
}

/** Encodes the captured commands again, in order, into the recording they were captured from. */
export function replayCapture(cap: Capture): void {
  const rec = cap.rec;
  assertOpen(rec);
  if (rec.capture) throw new GpuError("replayCapture: end the open capture first");
  for (const c of cap.commands) {
    if ("pipeline" in c) {
      encodeDispatch(rec, c.pipeline, c.bindGroup, c.grid);
      rec.dispatches++;
    } else encodeCommand(rec, c.label, c.encode);
  }
}

/** Number of recordings begun and not yet submitted or discarded on this device. */
export function openRecordingCount(gpu: Gpu): number {
  return openCounts.get(gpu) ?? 0;
}

function assertOpen(rec: Recording): void {
  if (rec.state !== "open") throw new GpuError(`recording is already ${rec.state}`);
}

/** The compute pass of the recording (opened on demand; consecutive dispatches share it). */
function computePass(rec: Recording): GPUComputePassEncoder {
  assertOpen(rec);
  if (!rec.pass) rec.pass = rec.encoder.beginComputePass();
  return rec.pass;
}

/** Ends the current compute pass so that copy commands can be recorded on `rec.encoder`. */
function endPass(rec: Recording): GPUCommandEncoder {
  assertOpen(rec);
  if (rec.pass) {
    rec.pass.end();
    rec.pass = null;
  }
  return rec.encoder;
}

/** Copies `size` bytes between buffers inside the recording (ordered with the dispatches). */
export function recordCopy(
  rec: Recording,
  src: GPUBuffer,
  srcOffset: number,
  dst: GPUBuffer,
  dstOffset: number,
  size: number,
): void {
  if (size === 0) return;
  encodeCommand(rec, "copy", (e) => e.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size));
}

/** Zeroes `size` bytes of a buffer inside the recording (ordered with the dispatches). */
export function recordClear(rec: Recording, buffer: GPUBuffer, offset: number, size: number): void {
  if (size === 0) return;
  encodeCommand(rec, "clear", (e) => e.clearBuffer(buffer, offset, size));
}

function encodeCommand(
  rec: Recording,
  label: string,
  encode: (encoder: GPUCommandEncoder) => void,
): void {
  assertOpen(rec);
  rec.capture?.push({ label, encode });
  if (rec.profile) rec.profile.commands.push({ label, encode });
  else encode(endPass(rec));
}

/** A uniform parameter value: a plain number is written as u32 (i32 when negative); `{ f: x }` as f32. */
export type ParamValue = number | { f: number };

/**
 * Uniform parameters that write themselves into the recording's uniform data (what a kernel's
 * `uniformLayout(...).pack(values)` returns), so a dispatch allocates no buffer of its own for
 * them (measured here: a fresh typed array costs ~2 µs, ~10% of a dispatch).
 */
export interface PackedParams {
  readonly byteLength: number;
  writeTo(view: DataView, offset: number): void;
}

/**
 * Reserves a uniform slot in the recording holding `values` (4 bytes each, or packed by a
 * kernel's `uniformLayout`) and returns its binding.
 */
export function uniformParams(
  rec: Recording,
  values: readonly ParamValue[] | PackedParams,
): GPUBufferBinding {
  assertOpen(rec);
  const align = Math.max(16, rec.gpu.limits.minUniformBufferOffsetAlignment ?? 256);
  const packed = Array.isArray(values) ? null : values as PackedParams;
  const bytes = packed ? packed.byteLength : (values as readonly ParamValue[]).length * 4;
  const size = Math.max(16, Math.ceil(bytes / 16) * 16);
  let block = rec.uniformBlocks[rec.uniformBlocks.length - 1];
  if (!block || block.used + size > block.data.byteLength) {
    block = takeUniformBlock(rec.gpu);
    rec.uniformBlocks.push(block);
  }
  const offset = block.used;
  if (packed) {
    packed.writeTo(block.view, offset);
    block.used = Math.ceil((offset + size) / align) * align;
    return { buffer: block.buffer, offset, size };
  }
  const view = new DataView(block.data.buffer, block.data.byteOffset + offset, size);
  (values as readonly ParamValue[]).forEach((v, i) => {
    if (typeof v === "number") {
      if (!Number.isInteger(v)) throw new GpuError(`uniform param ${i} is not an integer: ${v}`);
      if (v < 0) view.setInt32(i * 4, v, true);
      else view.setUint32(i * 4, v, true);
    } else view.setFloat32(i * 4, v.f, true);
  });
  block.used = Math.ceil((offset + size) / align) * align;
  return { buffer: block.buffer, offset, size };
}

function uniformPool(gpu: Gpu): GPUBuffer[] {
  let pool = gpu.cache.get("uniform-blocks") as GPUBuffer[] | undefined;
  if (!pool) gpu.cache.set("uniform-blocks", pool = []);
  return pool;
}

function takeUniformBlock(gpu: Gpu): UniformBlock {
  const buffer = uniformPool(gpu).pop() ??
    gpu.device.createBuffer({
      size: UNIFORM_BLOCK_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: "uniform-params",
    });
  const data = new Uint8Array(UNIFORM_BLOCK_BYTES);
  return { buffer, data, view: new DataView(data.buffer), used: 0 };
}

/**
 * Records one dispatch: binding 0 is the uniform `params`, bindings 1.. are `resources` in order.
 */
export function recordDispatch(
  rec: Recording,
  pipeline: GPUComputePipeline,
  params: readonly ParamValue[] | PackedParams,
  resources: readonly GPUBindingResource[],
  workgroups: readonly [number, number?, number?],
): void {
  const [x, y = 1, z = 1] = workgroups;
  if (x === 0 || y === 0 || z === 0) return;
  const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (x > max || y > max || z > max) {
    throw new GpuError(`dispatch ${x}x${y}x${z} exceeds ${max} workgroups per dimension`);
  }
  const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: uniformParams(rec, params) }];
  resources.forEach((resource, i) => entries.push({ binding: i + 1, resource }));
  const device = rec.gpu.device;
  // A scope per dispatch (measured free: ~11 µs per dispatch with or without) ties a validation
  // error to the kernel that caused it; submit awaits them all.
  device.pushErrorScope("validation");
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  rec.capture?.push({ pipeline, bindGroup, grid: [x, y, z] });
  encodeDispatch(rec, pipeline, bindGroup, [x, y, z]);
  const index = rec.dispatches++;
  rec.checks.push(
    device.popErrorScope().then((e) =>
      e ? `dispatch ${index} (${pipeline.label || "kernel"}): ${e.message}` : null
    ),
  );
}

/** Encodes one dispatch into the recording's compute pass (or its profile). */
function encodeDispatch(
  rec: Recording,
  pipeline: GPUComputePipeline,
  bindGroup: GPUBindGroup,
  [x, y, z]: readonly [number, number, number],
): void {
  const encode = (pass: GPUComputePassEncoder) => {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
  };
  if (rec.profile) {
    rec.profile.commands.push({
      label: pipeline.label || "kernel",
      encode(encoder) {
        const pass = encoder.beginComputePass();
        encode(pass);
        pass.end();
      },
    });
  } else encode(computePass(rec));
}

/** Splits `count` workgroups over x and y so that neither exceeds the per-dimension limit. */
export function grid(gpu: Gpu, count: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  if (count <= max) return [count, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}

/**
 * Submits the recording once and waits until the GPU has validated it; throws a GpuError if the
 * submission (or anything earlier on the device) produced a validation, out-of-memory or internal
 * error. Completion of the GPU work is awaited by `readTensor`, not here.
 */
export async function submit(rec: Recording): Promise<void> {
  assertOpen(rec);
  const { gpu } = rec;
  endPass(rec);
  rec.state = "submitted";
  openCounts.set(gpu, Math.max(0, (openCounts.get(gpu) ?? 1) - 1));
  const device = gpu.device;
  for (const block of rec.uniformBlocks) {
    if (block.used > 0) device.queue.writeBuffer(block.buffer, 0, block.data, 0, block.used);
  }
  device.pushErrorScope("internal");
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  if (rec.profile) await runProfiled(gpu, rec.profile);
  device.queue.submit([rec.encoder.finish()]);
  const scopes = [device.popErrorScope(), device.popErrorScope(), device.popErrorScope()];
  // The uniform blocks may be reused right away: later writeBuffer calls are ordered after this
  // submission on the queue timeline.
  uniformPool(gpu).push(...rec.uniformBlocks.map((b) => b.buffer));
  rec.uniformBlocks.length = 0;
  for (const hook of rec.onSubmit) hook();
  runIdleQueue(gpu);
  const errors = (await Promise.all(scopes)).filter((e): e is GPUError => e !== null)
    .map((e) => `${e.constructor?.name ?? "GPUError"}: ${e.message}`);
  const dispatchErrors = (await Promise.all(rec.checks.splice(0))).filter((e) => e !== null);
  if (errors.length > 0 || dispatchErrors.length > 0) {
    throw new GpuError(
      `GPU rejected the submission (${rec.dispatches} dispatches): ` +
        [...dispatchErrors, ...errors].slice(0, 4).join(" | "),
    );
  }
  gpu.checkErrors();
}

/**
 * Runs `fn` (freeing GPU resources) once no recording is open on the device: a resource still
 * referenced by an open recording must outlive it. Destroying after a submission is safe: WebGPU
 * keeps the resource until the submitted work that uses it has finished.
 */
export function whenIdle(gpu: Gpu, fn: () => void): void {
  if (openRecordingCount(gpu) === 0) fn();
  else idleQueue(gpu).push(fn);
}

function idleQueue(gpu: Gpu): Array<() => void> {
  let queue = gpu.cache.get("when-idle") as Array<() => void> | undefined;
  if (!queue) gpu.cache.set("when-idle", queue = []);
  return queue;
}

function runIdleQueue(gpu: Gpu): void {
  if (openRecordingCount(gpu) > 0) return;
  for (const fn of idleQueue(gpu).splice(0)) fn();
}

/** Abandons an open recording without submitting (frees its uniform blocks; pool hooks still run). */
export function discardRecording(rec: Recording): void {
  if (rec.state !== "open") return;
  if (rec.pass) {
    rec.pass.end();
    rec.pass = null;
  }
  rec.state = "discarded";
  rec.capture = null;
  rec.checks.length = 0;
  openCounts.set(rec.gpu, Math.max(0, (openCounts.get(rec.gpu) ?? 1) - 1));
  uniformPool(rec.gpu).push(...rec.uniformBlocks.map((b) => b.buffer));
  rec.uniformBlocks.length = 0;
  for (const hook of rec.onSubmit) hook();
  runIdleQueue(rec.gpu);
}

/** Waits until the GPU has finished all submitted work (one GPU round trip, ~11 ms on llvmpipe). */
export async function sync(gpu: Gpu): Promise<void> {
  await gpu.device.queue.onSubmittedWorkDone();
  gpu.checkErrors();
}
