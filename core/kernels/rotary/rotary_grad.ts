/**
 * Backward of `qkvRotary` (rotary.ts) without a cache: gathers dq, dk, dv
 * [b, heads, s, d] back into the fused dqkv [b, s, heads·3d] layout, rotating dq and dk back by
 * the same angles (the transpose of a rotation is the rotation by −θ):
 * dx[i] = g[i]·cos + g[i + r/2]·sin, dx[i + r/2] = g[i + r/2]·cos − g[i]·sin.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, emptyTensor, type Tensor } from "../../tensor/tensor.ts";
import { rotaryTable } from "./rotary.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  expectShape,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

/** `b` sequences of `s` tokens, `heads` of `d`; `maxPos`: rows of the rotary table. */
const GradParams = uniformLayout({ b: "u32", s: "u32", heads: "u32", d: "u32", maxPos: "u32" });

export interface QkvRotaryBackwardOptions {
  heads: number;
  /** "2d" (ChatGLM) or "1d"; "none" only gathers. */
  mode: "2d" | "1d" | "none";
  layout?: "interleaved" | "blocked";
  base?: number;
  invFreqF16?: boolean;
  /** Must equal the forward's table size. */
  maxPosition?: number;
}

/** Returns dqkv [b, s, heads·3d] from dq, dk, dv [b, heads, s, d] and the forward's `pos`. */
export function qkvRotaryBackward(
  rec: Recording,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  pos: Tensor | null,
  options: QkvRotaryBackwardOptions,
): Tensor {
  const kernel = "qkvRotaryBackward";
  for (const [t, n] of [[dq, "dq"], [dk, "dk"], [dv, "dv"]] as const) {
    expectDtype(t, kernel, n, ["f32"]);
    assertUnchunked(t, kernel, n);
  }
  if (dq.shape.length !== 4) throw new GpuError(`${kernel}: dq must be [b, heads, s, d]`);
  const [b, heads, s, d] = dq.shape;
  if (heads !== options.heads) {
    throw new GpuError(`${kernel}: dq has ${heads} heads, not ${options.heads}`);
  }
  expectShape(dk, kernel, "dk", dq.shape);
  expectShape(dv, kernel, "dv", dq.shape);
  const mode = options.mode;
  const r = mode === "2d" ? d / 2 : d;
  if (mode !== "none") {
    if (r % 2 !== 0) {
      throw new GpuError(`${kernel}: head dim ${d} cannot be rotated in mode ${mode}`);
    }
    if (!pos) throw new GpuError(`${kernel}: mode ${mode} needs positions`);
    expectDtype(pos, kernel, "pos", ["i32"]);
    expectShape(pos, kernel, "pos", mode === "2d" ? [b, 2, s] : [b, s]);
  }
  const out = emptyTensor(rec.gpu, [b, s, 3 * heads * d], "f32", { rec, label: "dqkv" });
  const total = b * s * 3 * heads * d;
  if (total === 0) return out;
  const maxPos = options.maxPosition ?? 8192;
  const table = mode === "none"
    ? null
    : rotaryTable(rec, r, options.base ?? 10000, options.invFreqF16 ?? mode === "2d", maxPos);
  const layout = options.layout ?? "interleaved";
  const decode = layout === "interleaved"
    ? "let n = col / (3u * P.d); let rem = col % (3u * P.d); let which = rem / P.d; let j = rem % P.d;"
    : "let which = col / (P.heads * P.d); let rem = col % (P.heads * P.d); let n = rem / P.d; let j = rem % P.d;";
  const rotate = mode === "none" ? "" : `
    let half = ${mode === "2d" ? "P.d / 2u" : "P.d"};
    let span = j / half;
    let jj = j - span * half;
    let quarter = half / 2u;
    let i = select(jj - quarter, jj, jj < quarter);
    let partner = select(j - quarter, j + quarter, jj < quarter);
    let pg = fetch(which, src - j + partner);
    ${mode === "2d" ? "let p = POS[(bi * 2u + span) * P.s + si];" : "let p = POS[bi * P.s + si];"}
    var c = vec2<f32>(bitcast<f32>(0x7fc00000u));
    if (p >= 0 && u32(p) < P.maxPos) {
      let t = (u32(p) * quarter + i) * 2u;
      c = vec2<f32>(TAB[t], TAB[t + 1u]);
    }
    g = select(g * c.x - pg * c.y, g * c.x + pg * c.y, jj < quarter);`;
  const pipeline = getPipeline(rec.gpu, `grad:qkvRotary:${mode}:${layout}`, () => `
${GradParams.wgsl}${declareInput(1, "DQ", "f32")}
${declareInput(2, "DK", "f32")}
${declareInput(3, "DV", "f32")}
${declareOutput(4, "OUT")}
${mode === "none" ? "" : declareInput(5, "POS", "i32") + declareInput(6, "TAB", "f32")}
fn fetch(which: u32, idx: u32) -> f32 {
  if (which == 0u) { return DQ[idx]; }
  if (which == 1u) { return DK[idx]; }
  return DV[idx];
}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;
  let width = 3u * P.heads * P.d;
  if (e >= P.b * P.s * width) { return; }
  let col = e % width;
  let tok = e / width;
  let si = tok % P.s;
  let bi = tok / P.s;
  ${decode}
  let src = ((bi * P.heads + n) * P.s + si) * P.d + j;
  var g = fetch(which, src);
  if (which < 2u) {${rotate}
  }
  OUT[e] = g;
}
`);
  const res: GPUBindingResource[] = [bindingOf(dq), bindingOf(dk), bindingOf(dv), bindingOf(out)];
  if (table && pos) res.push(bindingOf(pos), bindingOf(table));
  recordDispatch(
    rec,
    pipeline,
    GradParams.pack({ b, s, heads, d, maxPos }),
    res,
    grid(rec.gpu, Math.ceil(total / WG)),
  );
  return out;
}
