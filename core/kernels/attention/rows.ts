/**
 * The software-adapter design of `attention` (attention.ts), "rows": each invocation
 * owns a block of R query rows of one (batch, head); no workgroup memory, no barriers.
 *
 * Why, on llvmpipe: a workgroup runs as SIMD batches of 8 lanes and every `workgroupBarrier()`
 * switches coroutines across all of them, so the hardware design (a workgroup per query row,
 * several reductions per row) spends its time in barriers (demo shape b 8, heads 4, s 61, d 32:
 * ~40 ms a dispatch for ~8 MFLOP). And Mesa turns each storage load at a run-time address into
 * a per-lane loop of bounds-checked scalar loads, so loads, not arithmetic, cost the most. Hence:
 * - online softmax: one walk over the keys keeps the running max m, sum l and the output
 *   accumulator in private registers (unrolled over d in chunks, WGSL names, no arrays);
 * - K and V rows read as vec4 when d % 4 == 0 (scalars otherwise);
 * - R rows per invocation share every K/V load ({@link rowsPerInvocation}).
 * The demo shape's forward went from ~38 to ~1.2 ms per dispatch.
 *
 * Masked keys all score the same (maskValue·c). They are merged after the visible ones in one
 * step: each weighs exp(maskValue·c − m) with m the visible maximum, which is exactly 0 in f32
 * once a row sees a key with a sane score, so then they are skipped; a fully masked row still
 * gets uniform weights over all keys, as in the hardware design. Under the compact rule the keys
 * a query at cache position i ≥ pad sees are exactly [pad, max(pad + ctx, i + 1)) (the
 * bidirectional context, then causal), so the loops run over that range without a per-key test.
 *
 * The backward (rows_grad.ts) uses the same pieces.
 */

import { GpuError } from "../../gpu/device.ts";
import type { Gpu } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import type { DType, Tensor } from "../../tensor/tensor.ts";
import { kernelEnvChoice } from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

/**
 * Kernel design of `attention` and `attentionBackward`: "workgroup" is the hardware-GPU design
 * (a workgroup per query row), "rows" the barrier-free one above; "auto" takes "rows" on
 * software adapters when the head dim fits it ({@link rowsFit}), else "workgroup".
 */
export type AttentionKernel = "auto" | "workgroup" | "rows";

/**
 * Environment variable forcing the design of every call that does not pass `kernel`
 * ("workgroup" checks the hardware design on llvmpipe; "rows" falls back to "workgroup" for head
 * dims it cannot take). Read on each call; ignored without env permission.
 */
export const ATTENTION_KERNEL_ENV = "MEDGLM_ATTENTION_KERNEL";

const CHOICES = ["auto", "workgroup", "rows"] as const;
function envKernel(): AttentionKernel | undefined {
  return kernelEnvChoice(ATTENTION_KERNEL_ENV, CHOICES);
}

/** Most private vector chunks per row (d ≤ 128 as vec4, d ≤ 32 as scalars). */
const MAX_CHUNKS = 32;

/** As the workgroup design's parameters, without `d` (compiled into the rows kernels). */
const RowsParams = uniformLayout({
  b: "u32",
  heads: "u32",
  s: "u32",
  S: "u32",
  cap: "u32",
  c: "f32",
  maskValue: "f32",
  kvHeads: "u32",
});

/** Lanes per workgroup: one SIMD batch of llvmpipe (16 and 64 measured the same). */
export const ROWS_WG = 8;

/** Elements per load: 4 (vec4) when d % 4 == 0, else 1. */
export function rowsWidth(d: number): 1 | 4 {
  return d % 4 === 0 ? 4 : 1;
}

/** Whether head dim `d` fits the rows design (its rows held in private registers). */
export function rowsFit(d: number): boolean {
  return d > 0 && d / rowsWidth(d) <= MAX_CHUNKS;
}

/** The design a call takes; throws when "rows" is asked by option for a head dim it cannot take. */
export function chooseDesign(
  gpu: Gpu,
  kernel: string,
  option: AttentionKernel | undefined,
  d: number,
): "workgroup" | "rows" {
  const choice = option ?? envKernel() ?? "auto";
  if (option === "rows" && !rowsFit(d)) {
    throw new GpuError(
      `${kernel}: the rows design needs head dim ≤ ${
        4 * MAX_CHUNKS
      } (d % 4 == 0) or ≤ ${MAX_CHUNKS}, got ${d}`,
    );
  }
  if (choice === "workgroup" || !rowsFit(d)) return "workgroup";
  return choice === "rows" || gpu.isSoftware ? "rows" : "workgroup";
}

export type MaskVariant = "none" | "explicit" | "compact";

/** WGSL: the chunk type T (vec4<f32> or f32) and its dot product `dotT`. */
export function rowsPrelude(width: 1 | 4): string {
  return width === 4
    ? "alias T = vec4<f32>;\nfn dotT(a: T, b: T) -> f32 { return dot(a, b); }\n"
    : "alias T = f32;\nfn dotT(a: T, b: T) -> f32 { return a * b; }\n";
}

/** WGSL declaration of the mask binding: M (explicit) or MI (compact), none without a mask. */
export function rowsMaskDecl(
  variant: MaskVariant,
  binding: number,
  dtype: DType | undefined,
): string {
  if (variant === "explicit") {
    return `@group(0) @binding(${binding}) var<storage, read> M: array<${
      dtype === "u32" ? "u32" : "i32"
    }>;\n`;
  }
  if (variant === "compact") {
    return `@group(0) @binding(${binding}) var<storage, read> MI: array<i32>;\n`;
  }
  return "";
}

/**
 * Rows (queries, or keys in the dK/dV kernel) per invocation: they share every K/V (or Q/dO)
 * load, the costly part on llvmpipe. On the demo shape (d = 32) 4 rows ran 2–3× faster than 1,
 * forward and backward (8 were no faster). d = 64 takes 2 rows and d = 128 one, so that the
 * private registers, and the compile time (~0.5 s forward, ~2 s backward at d = 32, uncached),
 * stay about as large.
 */
export function rowsPerInvocation(d: number, s: number): number {
  return Math.max(1, Math.min(4, Math.floor(MAX_CHUNKS / (d / rowsWidth(d))), s));
}

/** Pipeline label part: mask kind (with the explicit mask's dtype), head dim, rows. */
export function designTag(
  variant: MaskVariant,
  maskDtype: DType | undefined,
  d: number,
  R: number,
): string {
  return `${variant}${variant === "explicit" ? `-${maskDtype}` : ""}:d${d}:r${R}`;
}

/**
 * Records the forward in the rows design. Arguments are checked by `attention`; `d` fits
 * ({@link rowsFit}).
 */
export function recordAttentionRows(
  rec: Recording,
  q: Tensor,
  kCache: Tensor,
  keys: number,
  variant: MaskVariant,
  options: { layerScale?: number; maskValue?: number; mask?: Tensor },
  /** Q, K, V, O and the mask, bound in that order (the same for both designs). */
  resources: GPUBindingResource[],
): void {
  const [b, heads, s, d] = q.shape;
  const cap = kCache.shape[2];
  const width = rowsWidth(d);
  const C = d / width;
  const R = rowsPerInvocation(d, s);
  const maskDtype = options.mask?.dtype;
  const key = `attention-rows:${designTag(variant, maskDtype, d, R)}`;
  const pipeline = getPipeline(rec.gpu, key, () => forwardCode(variant, width, C, R, maskDtype));
  const blocks = Math.ceil(s / R);
  recordDispatch(
    rec,
    pipeline,
    RowsParams.pack({
      b,
      heads,
      s,
      S: keys,
      cap,
      c: options.layerScale ?? 1,
      maskValue: options.maskValue ?? -10000,
      kvHeads: kCache.shape[1],
    }),
    resources,
    grid(rec.gpu, Math.ceil((b * heads * blocks) / ROWS_WG)),
  );
}

/** `f(i)` for i in [0, n), joined by `sep`. */
export function each(n: number, f: (i: number) => string, sep = "\n  "): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/**
 * WGSL: this invocation's head `bn` (= bi · heads + n, with `bi`, `n`) and block `blk` of `R`
 * consecutive rows (queries, or keys in the dK/dV kernel) out of `P.s`; returns past the last
 * block. Rows past `P.s` in the last block are computed on a clamped copy and not stored.
 */
export function blockIndex(R: number): string {
  return `let inv_id = (wid.y * nwg.x + wid.x) * ${ROWS_WG}u + lix;
  let blocks = (P.s + ${R - 1}u) / ${R}u;
  if (inv_id >= P.b * P.heads * blocks) { return; }
  let bn = inv_id / blocks;
  let blk = inv_id % blocks;
  let bi = bn / P.heads;
  let n = bn % P.heads;`;
}

/** Entry point header of the rows kernels. */
export const ROWS_MAIN = `@compute @workgroup_size(${ROWS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lix: u32) {`;

/** Dot product of chunks `a(c)` and `b(c)` over C chunks. */
export function dots(C: number, a: (c: number) => string, b: (c: number) => string): string {
  return "(" + each(C, (c) => `dotT(${a(c)}, ${b(c)})`, " + ") + ")";
}

/**
 * WGSL: for query r of the block at cache position `i${r}`, `masked${r}` tells whether key `j` is
 * masked (an expression), and the compact rule's visible range is [lo, hi${r}).
 */
function maskedExpr(variant: MaskVariant, maskDtype: DType | undefined, r: number): string {
  if (variant === "compact") return `(j < lo || j >= hi${r})`;
  if (variant === "explicit") {
    return `(M[(bi * P.s + qi${r}) * P.S + j] != 0${maskDtype === "u32" ? "u" : ""})`;
  }
  return "false";
}

/**
 * WGSL: the compact mask's keys for a block of R rows at cache positions `pos(r)`: pad, ctx, the
 * rows' visible ranges [lo, hi${r}) and jEnd, the largest hi. The block loops over [lo, jEnd)
 * and each row drops the keys past its own hi.
 */
export function compactKeyRange(R: number, pos: (r: number) => string, S: string): string {
  const his = each(
    R,
    (r) =>
      `let hi${r} = select(max(min(max(pad + ctx, ${pos(r)} + 1u), ${S}), lo), lo, ${
        pos(r)
      } < pad);`,
  );
  return `let pad = u32(max(MI[bi * 2u], 0));
  let ctx = u32(max(MI[bi * 2u + 1u], 0));
  let lo = min(pad, ${S});
  ${his}
  let jEnd = ${each(R - 1, (r) => `max(hi${r}, `, "")}hi${R - 1}${")".repeat(R - 1)};`;
}

/**
 * WGSL: one key of row r's online softmax: score s${r} (computed before), running max m${r} and
 * sum l${r}; leaves corr${r} (the factor every running sum takes) and e${r} (the key's weight).
 * One exp per key: the score either raises the max (rescale by t) or adds t. `masked`: the
 * expression telling that the key is masked for this row (then nothing changes), or null.
 */
export function onlineStep(r: number, masked: string | null): string {
  const gate = (x: string, off: string) => masked ? `select(${x}, ${off}, ${masked})` : x;
  return `let t${r} = exp(-abs(s${r} - m${r}));
    let up${r} = s${r} > m${r};
    let corr${r} = ${gate(`select(1.0, t${r}, up${r})`, "1.0")};
    let e${r} = ${gate(`select(t${r}, 1.0, up${r})`, "0.0")};
    m${r} = ${gate(`max(m${r}, s${r})`, `m${r}`)};
    l${r} = l${r} * corr${r} + e${r};`;
}

/**
 * WGSL: after the visible keys, raises row r's max to the masked score mv if needed (cr${r}: the
 * factor the running sums take) and gives w${r}, the weight of one masked key.
 */
export function maskedMerge(r: number): string {
  return `let cr${r} = exp(m${r} - max(m${r}, mv));
  m${r} = max(m${r}, mv);
  l${r} *= cr${r};
  let w${r} = exp(mv - m${r});`;
}

function forwardCode(
  variant: MaskVariant,
  width: 1 | 4,
  C: number,
  R: number,
  maskDtype: DType | undefined,
): string {
  const d = C * width;
  const rows = (f: (r: number) => string) => each(R, f);
  const chunks = (f: (c: number) => string) => each(C, f, "\n    ");
  const range = variant === "compact"
    ? compactKeyRange(R, (r) => `i${r}`, "P.S")
    : `let lo = 0u;\n  let jEnd = P.S;`;
  const update = (r: number) =>
    `let s${r} = ${dots(C, (c) => `q${r}_${c}`, (c) => `k${c}`)} * P.c;
    ${onlineStep(r, variant === "none" ? null : maskedExpr(variant, maskDtype, r))}
    ${chunks((c) => `a${r}_${c} = a${r}_${c} * corr${r} + e${r} * v${c};`)}`;
  // Every masked key scores mv: merge them at once, after the visible ones (module comment).
  const maskedPass = variant === "none" ? "" : `
  let mv = P.maskValue * P.c;
  ${rows((r) => `${maskedMerge(r)}\n  ${each(C, (c) => `a${r}_${c} *= cr${r};`, " ")}`)}
  if (${each(R, (r) => `w${r} != 0.0`, " || ")}) {
    for (var j = 0u; j < P.S; j++) {
      let kb = kvBase + j * ${C}u;
      ${chunks((c) => `let v${c} = V[kb + ${c}u];`)}
      ${
    each(R, (r) =>
      `let ww${r} = select(0.0, w${r}, ${maskedExpr(variant, maskDtype, r)});
      l${r} += ww${r};
      ${each(C, (c) => `a${r}_${c} += ww${r} * v${c};`, " ")}`, "\n      ")
  }
    }
  }`;
  return `
${RowsParams.wgsl}@group(0) @binding(1) var<storage, read> Q: array<T>;
@group(0) @binding(2) var<storage, read> K: array<T>;
@group(0) @binding(3) var<storage, read> V: array<T>;
@group(0) @binding(4) var<storage, read_write> O: array<T>;
${rowsMaskDecl(variant, 5, maskDtype)}
${rowsPrelude(width)}
${ROWS_MAIN}
  ${blockIndex(R)}
  // q / (sqrt(d)·c) first, then ·k and ·c: the rounding order of the workgroup design.
  let inv = 1.0 / (sqrt(${d}.0) * P.c);
  ${
    rows((r) =>
      `let qi${r} = min(blk * ${R}u + ${r}u, P.s - 1u);
  let i${r} = P.S - P.s + qi${r};         // cache position
  let qb${r} = (bn * P.s + qi${r}) * ${C}u;
  ${each(C, (c) => `let q${r}_${c} = Q[qb${r} + ${c}u] * inv;`, " ")}
  ${each(C, (c) => `var a${r}_${c} = T(0.0);`, " ")}
  var m${r} = -3.4028234e38;             // running max of the scores
  var l${r} = 0.0;                       // running Σ exp(score − m)`
    )
  }
  ${range}
  let kvBase = (bi * P.kvHeads + n / (P.heads / P.kvHeads)) * P.cap * ${C}u; // GQA groups
  for (var j = lo; j < jEnd; j++) {
    let kb = kvBase + j * ${C}u;
    ${chunks((c) => `let k${c} = K[kb + ${c}u];`)}
    ${chunks((c) => `let v${c} = V[kb + ${c}u];`)}
    ${rows(update)}
  }
  ${maskedPass}
  ${
    rows((r) =>
      `if (blk * ${R}u + ${r}u < P.s) {
    let norm = 1.0 / l${r};
    let ob = ((bi * P.s + qi${r}) * P.heads + n) * ${C}u;
    ${chunks((c) => `O[ob + ${c}u] = a${r}_${c} * norm;`)}
  }`
    )
  }
}
`;
}
