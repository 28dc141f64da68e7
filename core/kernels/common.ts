/**
 * Shared pieces of the kernel wrappers: WGSL declarations with dtype-aware loads, output
 * allocation and argument checks.
 */

import { type Gpu, GpuError } from "../gpu/device.ts";
import { grid, type Recording } from "../gpu/recording.ts";
import {
  assertLive,
  type DType,
  emptyTensor,
  markWritten,
  numel,
  type Tensor,
} from "../tensor/tensor.ts";

/** WGSL storage element type of a dtype (f16 is packed two per u32). */
export function storageType(dtype: DType): string {
  return dtype === "f32" ? "f32" : dtype === "i32" ? "i32" : "u32";
}

/**
 * Declares a read-only storage binding `name` and a loader `ld_name(i: u32) -> f32` (or the
 * integer type for i32/u32) that hides the f16 packing.
 */
export function declareInput(binding: number, name: string, dtype: DType): string {
  const decl = `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${
    storageType(dtype)
  }>;\n`;
  switch (dtype) {
    case "f32":
      return decl + `fn ld_${name}(i: u32) -> f32 { return ${name}[i]; }\n`;
    case "f16":
      return decl +
        `fn ld_${name}(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }\n`;
    case "i32":
      return decl + `fn ld_${name}(i: u32) -> i32 { return ${name}[i]; }\n`;
    case "u32":
      return decl + `fn ld_${name}(i: u32) -> u32 { return ${name}[i]; }\n`;
    default:
      throw new Error(
        `declareInput: ${name} is ${dtype}; quantized weights have their own kernels`,
      );
  }
}

/** Declares a read-write f32 storage binding. */
export function declareOutput(binding: number, name: string, type = "f32"): string {
  return `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<${type}>;\n`;
}

/** Throws unless `t` has one of the dtypes. */
export function expectDtype(t: Tensor, kernel: string, name: string, dtypes: DType[]): void {
  assertLive(t, kernel);
  if (!dtypes.includes(t.dtype)) {
    throw new GpuError(`${kernel}: ${name} has dtype ${t.dtype}, expected ${dtypes.join(" or ")}`);
  }
}

/** Throws unless `t.shape` equals `shape`. */
export function expectShape(t: Tensor, kernel: string, name: string, shape: number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new GpuError(
      `${kernel}: ${name} has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`,
    );
  }
}

/**
 * The output tensor: `out` when given (checked for shape and dtype), else a new one from the pool
 * (reusing buffers released earlier in the same recording).
 */
export function outputTensor(
  rec: Recording,
  kernel: string,
  shape: number[],
  out?: Tensor,
  dtype: DType = "f32",
): Tensor {
  if (out) {
    expectDtype(out, kernel, "out", [dtype]);
    if (numel(out.shape) !== numel(shape)) expectShape(out, kernel, "out", shape);
    markWritten(out);
    return out;
  }
  return emptyTensor(rec.gpu, shape, dtype, { rec, label: `${kernel} out` });
}

/** Rows and row length of a tensor seen as [rows, last]. */
export function rowsOf(t: Tensor): { rows: number; cols: number } {
  const cols = t.shape.length === 0 ? 1 : t.shape[t.shape.length - 1];
  return { rows: cols === 0 ? 0 : numel(t.shape) / cols, cols };
}

/** Index of a workgroup in a 2-D grid made by `grid()`. */
export const WG_INDEX = "(wid.y * nwg.x + wid.x)";

/** Entry-point builtins used with {@link WG_INDEX}. */
export const WG_BUILTINS = "@builtin(workgroup_id) wid: vec3<u32>, " +
  "@builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>";

/**
 * WGSL: `wg_reduce(v, t, isMax)`, the sum (or max) of `v` over a workgroup of `wg` invocations
 * (`t` = local index; a power of two), returned to every invocation, and its two spellings
 * `wg_sum(v, t)` and `wg_max(v, t)`; uses `red` in workgroup memory.
 */
export function workgroupReduce(wg: number): string {
  return `var<workgroup> red: array<f32, ${wg}>;
fn wg_reduce(v: f32, t: u32, isMax: bool) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var st = ${wg / 2}u; st > 0u; st >>= 1u) {
    if (t < st) { red[t] = select(red[t] + red[t + st], max(red[t], red[t + st]), isMax); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn wg_sum(v: f32, t: u32) -> f32 { return wg_reduce(v, t, false); }
fn wg_max(v: f32, t: u32) -> f32 { return wg_reduce(v, t, true); }`;
}

/** Which row-kernel design to use: per adapter ("auto"), or forced (tests run both). */
export type RowDesign = "auto" | "workgroup" | "invocation";

/** Forces the row-kernel design on this device (tests; "auto" restores the default). */
export function setRowDesign(gpu: Gpu, design: RowDesign): void {
  gpu.cache.set("row-design", design);
}

/**
 * How a row kernel (LayerNorm, softmax, row reductions, cross-entropy) maps rows to invocations.
 *
 * - "workgroup" (hardware GPUs): `lanes` invocations share a row, their partial results meet in
 *   a tree reduction in workgroup memory.
 * - "invocation" (software adapters): each invocation owns a whole row and `wg_sum`/`wg_max` are
 *   the identity. On llvmpipe every `workgroupBarrier` switches all invocations of the workgroup
 *   (coroutines), so the tree reduction cost far more than the arithmetic: LayerNorm backward on
 *   480 rows of 128 took 8 ms, most of a demo training step's non-matmul time.
 *
 * Kernels write `${plan.prologue}` (defines `row` and the lane `t`), stride their per-row loops by
 * `plan.lanes`, include `plan.reduce`, use `plan.workgroupSize`, add `plan.tag` to the pipeline
 * key and dispatch `plan.workgroups(rows)`.
 */
export interface RowPlan {
  tag: "wg" | "inv";
  lanes: number;
  workgroupSize: number;
  reduce: string;
  prologue: string;
  workgroups(rows: number): [number, number];
}

/** Rows per workgroup in the "invocation" design (8 SIMD batches of llvmpipe's 8 lanes). */
const ROWS_PER_WORKGROUP = 64;

/**
 * Loop iterations llvmpipe runs per invocation, in all: past them it stops the loops silently
 * (measured: one loop of 65536 ran 65535 times; nested loops, the same total; softmax's three
 * passes over a 40000-long row came out wrong).
 */
export const SOFTWARE_LOOP_LIMIT = 65535;

/**
 * Longest row one invocation walks: row kernels make at most four passes, so rows up to 8192 stay
 * well inside {@link SOFTWARE_LOOP_LIMIT}; longer rows (the vocabulary rows of a real model) keep
 * the workgroup design.
 */
export const MAX_SERIAL_ROW = 8192;

/**
 * Most rows a kernel lets one invocation loop over (gradient sums over a batch's tokens): the
 * rows go in ranges of at most this many, one dispatch each adding into the output, to stay
 * inside {@link SOFTWARE_LOOP_LIMIT}.
 */
export const MAX_LOOP_ROWS = 32768;

/** [first, count] ranges covering `rows` rows, each at most {@link MAX_LOOP_ROWS}. */
export function rowRanges(rows: number): [number, number][] {
  const out: [number, number][] = [];
  for (let first = 0; first < rows; first += MAX_LOOP_ROWS) {
    out.push([first, Math.min(MAX_LOOP_ROWS, rows - first)]);
  }
  return out;
}

/** The design for rows of `cols` elements; `lanes` is the workgroup design's lanes per row. */
export function rowPlan(gpu: Gpu, lanes: number, cols: number): RowPlan {
  const design = (gpu.cache.get("row-design") as RowDesign | undefined) ?? "auto";
  const perInvocation = cols <= MAX_SERIAL_ROW &&
    (design === "invocation" || (design === "auto" && gpu.isSoftware));
  if (!perInvocation) {
    return {
      tag: "wg",
      lanes,
      workgroupSize: lanes,
      reduce: workgroupReduce(lanes),
      prologue: `let row = ${WG_INDEX}; let t = lid.x;`,
      workgroups: (rows) => grid(gpu, rows),
    };
  }
  return {
    tag: "inv",
    lanes: 1,
    workgroupSize: ROWS_PER_WORKGROUP,
    reduce: `fn wg_reduce(v: f32, t: u32, isMax: bool) -> f32 { return v; }
fn wg_sum(v: f32, t: u32) -> f32 { return v; }
fn wg_max(v: f32, t: u32) -> f32 { return v; }`,
    prologue: `let row = ${WG_INDEX} * ${ROWS_PER_WORKGROUP}u + lid.x; let t = 0u;`,
    workgroups: (rows) => grid(gpu, Math.ceil(rows / ROWS_PER_WORKGROUP)),
  };
}

const envReadable = new Map<string, boolean>();

/**
 * The value of an environment variable that forces a kernel design, checked against `choices`
 * (a clear error names the variable otherwise); undefined when unset, empty or not readable.
 * Read on each call, so tests can set it; without env permission it is ignored, not prompted.
 */
export function kernelEnvChoice<T extends string>(
  variable: string,
  choices: readonly T[],
): T | undefined {
  let readable = envReadable.get(variable);
  if (readable === undefined) {
    // Query first: a bare `Deno.env.get` without permission would prompt or throw.
    readable = Deno.permissions.querySync?.({ name: "env", variable })?.state === "granted";
    envReadable.set(variable, readable);
  }
  if (!readable) return undefined;
  const value = Deno.env.get(variable);
  if (value === undefined || value === "") return undefined;
  const choice = choices.find((c) => c === value);
  if (!choice) throw new GpuError(`${variable}=${value}: expected one of ${choices.join(", ")}`);
  return choice;
}
