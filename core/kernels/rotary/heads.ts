/**
 * Llama-style rotary ("rotate half" over the whole head, one position per token) fused with the
 * split of a projection's output into heads: `x` [b, s, heads·d] (head-major columns, as q_proj /
 * k_proj / v_proj write them) → `out` [b, heads, cap, d] at rows [past, past + s) — the layout the
 * attention kernels and the KV cache use. The table is given (its `inv_freq` may carry a scaling
 * rule such as Llama 3's, see core/models/llama/rotary.ts); without a table the heads are only
 * moved (v). Pairing: dimension i with i + d/2,
 * `out[i] = x[i]·c − x[i + d/2]·s`, `out[i + d/2] = x[i + d/2]·c + x[i]·s`.
 *
 * Backward (`headsRotaryBackward`): the transpose, i.e. the rotation by −θ and the move back to
 * [b, s, heads·d]. One design on every adapter (an invocation per element, no reductions).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  outputTensor,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

/** `b` rows of `s` tokens, `heads` of `d`; the head tensor holds `cap` positions from `past`. */
const HeadsParams = uniformLayout({
  b: "u32",
  s: "u32",
  heads: "u32",
  d: "u32",
  past: "u32",
  cap: "u32",
  maxPos: "u32",
});

export interface HeadsRotaryOptions {
  heads: number;
  /** Rows of `out` already filled; the s new ones go to [past, past + s). Default 0. */
  past?: number;
  /** Write here ([b, heads, cap, d]); default a new [b, heads, s, d] tensor. */
  out?: Tensor;
  /**
   * Slot cache (continuous batching): i32 [b, 2] = (slot, length) per row; row bi's tokens go to
   * row `slot` of `out` ([slots, heads, cap, d]) at positions length .. (then `past` is unused).
   */
  slotInfo?: Tensor;
}

function checkTable(kernel: string, table: Tensor, d: number): number {
  expectDtype(table, kernel, "table", ["f32"]);
  if (table.shape.length !== 3 || table.shape[1] * 2 !== d || table.shape[2] !== 2) {
    throw new GpuError(`${kernel}: table [${table.shape}] is not [positions, ${d / 2}, 2]`);
  }
  return table.shape[0];
}

const CS = `
fn cs(p: i32, i: u32) -> vec2<f32> {
  // Positions outside the table give NaN: never silently wrong numbers.
  if (p < 0 || u32(p) >= P.maxPos) { return vec2<f32>(bitcast<f32>(0x7fc00000u)); }
  let t = (u32(p) * (P.d / 2u) + i) * 2u;
  return vec2<f32>(TAB[t], TAB[t + 1u]);
}`;

/**
 * `x` [b, s, heads·d] → `out` [b, heads, cap, d] rows [past, past + s), rotated by `pos` (i32
 * [b, s]) with `table` when both are given, moved only when both are null. Returns `out`.
 */
export function headsRotary(
  rec: Recording,
  x: Tensor,
  pos: Tensor | null,
  table: Tensor | null,
  options: HeadsRotaryOptions,
): Tensor {
  const kernel = "headsRotary";
  expectDtype(x, kernel, "x", ["f32"]);
  assertUnchunked(x, kernel, "x");
  if (x.shape.length !== 3) throw new GpuError(`${kernel}: x must be [b, s, heads·d]`);
  const [b, s, hd] = x.shape;
  const heads = options.heads;
  if (hd % heads !== 0) throw new GpuError(`${kernel}: ${hd} columns are not ${heads} heads`);
  const d = hd / heads;
  if (d % 2 !== 0) throw new GpuError(`${kernel}: head dim ${d} cannot be rotated`);
  const past = options.past ?? 0;
  const out = options.out ?? outputTensor(rec, kernel, [b, heads, s, d]);
  expectDtype(out, kernel, "out", ["f32"]);
  assertUnchunked(out, kernel, "out");
  if (out.shape.length !== 4 || out.shape[1] !== heads || out.shape[3] !== d) {
    throw new GpuError(`${kernel}: out [${out.shape}] is not [rows, ${heads}, capacity, ${d}]`);
  }
  const cap = out.shape[2];
  const slots = options.slotInfo;
  if (slots) {
    expectDtype(slots, kernel, "slotInfo", ["i32"]);
    expectShape(slots, kernel, "slotInfo", [b, 2]);
  } else if (out.shape[0] !== b) {
    throw new GpuError(`${kernel}: out has ${out.shape[0]} rows for ${b} input rows`);
  }
  if (past < 0 || past + s > cap) {
    throw new GpuError(`${kernel}: rows [${past}, ${past + s}) exceed the capacity ${cap}`);
  }
  if ((pos === null) !== (table === null)) {
    throw new GpuError(`${kernel}: give both pos and table (rotate) or neither (move only)`);
  }
  let maxPos = 0;
  if (pos && table) {
    expectDtype(pos, kernel, "pos", ["i32"]);
    expectShape(pos, kernel, "pos", [b, s]);
    maxPos = checkTable(kernel, table, d);
  }
  if (numel(x.shape) === 0) return out;
  const rotate = pos !== null;
  const pipeline = getPipeline(rec.gpu, `headsRotary:${rotate}:${!!slots}`, () => `
${HeadsParams.wgsl}${declareInput(1, "X", "f32")}
${declareOutput(2, "O")}
${rotate ? declareInput(3, "POS", "i32") + declareInput(4, "TAB", "f32") + CS : ""}
${slots ? declareInput(rotate ? 5 : 3, "SI", "i32") : ""}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;          // (bi, si, n, j) of x
  if (e >= P.b * P.s * P.heads * P.d) { return; }
  let j = e % P.d;
  let n = (e / P.d) % P.heads;
  let tok = e / (P.d * P.heads);
  let si = tok % P.s;
  let bi = tok / P.s;
  var v = X[e];
  ${
    rotate
      ? `let half = P.d / 2u;
  let low = j < half;
  let i = select(j - half, j, low);
  let pv = X[select(e - half, e + half, low)];
  let c = cs(POS[tok], i);
  v = select(v * c.x + pv * c.y, v * c.x - pv * c.y, low);`
      : ""
  }
  ${
    slots
      ? "let orow = u32(SI[bi * 2u]); let at = u32(SI[bi * 2u + 1u]) + si;"
      : "let orow = bi; let at = P.past + si;"
  }
  O[((orow * P.heads + n) * P.cap + at) * P.d + j] = v;
}
`);
  const resources: GPUBindingResource[] = [bindingOf(x), bindingOf(out)];
  if (pos && table) resources.push(bindingOf(pos), bindingOf(table));
  if (slots) resources.push(bindingOf(slots));
  recordDispatch(
    rec,
    pipeline,
    HeadsParams.pack({ b, s, heads, d, past, cap, maxPos }),
    resources,
    grid(rec.gpu, Math.ceil(numel(x.shape) / WG)),
  );
  return out;
}

/**
 * Backward of {@link headsRotary} with `past` 0 and `cap` s: `dy` [b, heads, s, d] → dx
 * [b, s, heads·d], rotated back by −θ (the transpose of the rotation) when `pos`/`table` given.
 */
export function headsRotaryBackward(
  rec: Recording,
  dy: Tensor,
  pos: Tensor | null,
  table: Tensor | null,
): Tensor {
  const kernel = "headsRotaryBackward";
  expectDtype(dy, kernel, "dy", ["f32"]);
  assertUnchunked(dy, kernel, "dy");
  if (dy.shape.length !== 4) throw new GpuError(`${kernel}: dy must be [b, heads, s, d]`);
  const [b, heads, s, d] = dy.shape;
  let maxPos = 0;
  if (pos && table) {
    expectDtype(pos, kernel, "pos", ["i32"]);
    expectShape(pos, kernel, "pos", [b, s]);
    maxPos = checkTable(kernel, table, d);
  }
  const dx = outputTensor(rec, kernel, [b, s, heads * d]);
  if (numel(dx.shape) === 0) return dx;
  const rotate = pos !== null && table !== null;
  const pipeline = getPipeline(rec.gpu, `headsRotaryBackward:${rotate}`, () => `
${HeadsParams.wgsl}${declareInput(1, "DY", "f32")}
${declareOutput(2, "DX")}
${rotate ? declareInput(3, "POS", "i32") + declareInput(4, "TAB", "f32") + CS : ""}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;          // (bi, si, n, j) of dx
  if (e >= P.b * P.s * P.heads * P.d) { return; }
  let j = e % P.d;
  let n = (e / P.d) % P.heads;
  let tok = e / (P.d * P.heads);
  let si = tok % P.s;
  let bi = tok / P.s;
  let src = ((bi * P.heads + n) * P.s + si) * P.d;
  var g = DY[src + j];
  ${
    rotate
      ? `let half = P.d / 2u;
  let low = j < half;
  let i = select(j - half, j, low);
  let pg = DY[src + select(j - half, j + half, low)];
  let c = cs(POS[tok], i);
  // dx[i] = dy[i]·c + dy[i + d/2]·s ; dx[i + d/2] = dy[i + d/2]·c − dy[i]·s
  g = select(g * c.x - pg * c.y, g * c.x + pg * c.y, low);`
      : ""
  }
  DX[e] = g;
}
`);
  const resources: GPUBindingResource[] = [bindingOf(dy), bindingOf(dx)];
  if (rotate) resources.push(bindingOf(pos!), bindingOf(table!));
  recordDispatch(
    rec,
    pipeline,
    HeadsParams.pack({ b, s, heads, d, past: 0, cap: s, maxPos }),
    resources,
    grid(rec.gpu, Math.ceil(numel(dx.shape) / WG)),
  );
  return dx;
}
