/**
 * Shared pieces of the kernel wrappers: WGSL declarations with dtype-aware loads, output
 * allocation and argument checks.
 */

import { GpuError } from "../gpu/device.ts";
import type { Recording } from "../gpu/recording.ts";
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
