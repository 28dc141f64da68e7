/**
 * The software-adapter design of `attentionBackward` (attention_grad.ts): no workgroup memory,
 * no barriers, no atomics, no [s, S] scratch (see rows.ts for why).
 *
 * With p_ij = softmax_j(scores), dp_ij = dO_i · v_j, D_i = Σ_j p_ij dp_ij and
 * dS_ij = p_ij (dp_ij − D_i) / sqrt(d) for visible pairs (0 for masked ones):
 * 1. queries: an invocation per block of R query rows walks their keys twice. First pass: the
 *    online softmax statistics m_i, l_i and D_i, masked keys merged at once as in the forward;
 *    they are saved per row. Second pass, visible keys only: dq_i = Σ_j dS_ij k_j.
 * 2. keys: an invocation per block of R key rows walks all queries, recomputing p_ij from the
 *    saved statistics: dk_j = Σ_i dS_ij q_i, dv_j = Σ_i p_ij dO_i. Masked pairs add only to dv,
 *    with p = exp(maskValue·c − m_i) / l_i (1/S on fully masked rows; exactly 0 in f32 on rows
 *    that see a key, and skipped then under the compact mask).
 * Each sum is owned by one invocation: no atomics, no reduction across invocations.
 *
 * Demo shape (b 8, heads 4, s 61, d 32, compact mask): ~63 ms per backward (two kernels of the
 * workgroup design) became ~5 ms.
 *
 * The row statistics are m and 1/l, not a log-sum-exp: m + log l rounds at |m| ~ 10⁴ (masked
 * rows) to ~10⁻³, which would be the relative error of their probabilities.
 */

import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  bindingOf,
  type DType,
  emptyTensor,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import { uniformLayout } from "../uniforms.ts";
import {
  blockIndex,
  compactKeyRange,
  designTag,
  dots,
  each,
  maskedMerge,
  type MaskVariant,
  onlineStep,
  ROWS_MAIN,
  ROWS_WG,
  rowsMaskDecl,
  rowsPerInvocation,
  rowsPrelude,
  rowsWidth,
} from "./rows.ts";

/**
 * Records the backward in the rows design into `dq`, `dk`, `dv`. Arguments are checked by
 * `attentionBackward`; S = s and d fits the design.
 */
export function recordAttentionRowsBackward(
  rec: Recording,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dOut: Tensor,
  grads: { dq: Tensor; dk: Tensor; dv: Tensor },
  variant: MaskVariant,
  options: { layerScale?: number; maskValue?: number; mask?: Tensor; maskInfo?: Tensor },
): void {
  const gpu = rec.gpu;
  const [b, heads, s, d] = q.shape;
  const width = rowsWidth(d);
  const C = d / width;
  const R = rowsPerInvocation(d, s);
  const maskDtype = options.mask?.dtype;
  const tag = designTag(variant, maskDtype, d, R);
  const rowPipeline = getPipeline(
    gpu,
    `grad:attention-rows:dq:${tag}`,
    () => rowCode(variant, width, C, R, maskDtype),
  );
  const keyPipeline = getPipeline(
    gpu,
    `grad:attention-rows:dkdv:${tag}`,
    () => keyCode(variant, width, C, R, maskDtype),
  );
  // (m, 1/l, D, unused) per query row.
  const stats = emptyTensor(gpu, [b, heads, s, 4], "f32", { rec, label: "attn row stats" });
  const params = GradParams.pack({
    b,
    heads,
    s,
    c: options.layerScale ?? 1,
    maskValue: options.maskValue ?? -10000,
  });
  const mask = options.mask ?? options.maskInfo;
  const maskRes = mask ? [bindingOf(mask)] : [];
  const groups = (R: number) => grid(gpu, Math.ceil((b * heads * Math.ceil(s / R)) / ROWS_WG));
  recordDispatch(rec, rowPipeline, params, [
    bindingOf(q),
    bindingOf(k),
    bindingOf(v),
    bindingOf(dOut),
    bindingOf(grads.dq),
    bindingOf(stats),
    ...maskRes,
  ], groups(R));
  recordDispatch(rec, keyPipeline, params, [
    bindingOf(q),
    bindingOf(k),
    bindingOf(v),
    bindingOf(dOut),
    bindingOf(stats),
    bindingOf(grads.dk),
    bindingOf(grads.dv),
    ...maskRes,
  ], groups(R));
  releaseTensor(stats, rec);
}

/** The forward's parameters without the cache (keys = queries = `s` in training). */
const GradParams = uniformLayout({ b: "u32", heads: "u32", s: "u32", c: "f32", maskValue: "f32" });

/** WGSL: whether query `qi` may not see key `kj` under an explicit mask. */
function explicitMasked(maskDtype: DType | undefined, qi: string, kj: string): string {
  return `(M[(bi * P.s + ${qi}) * P.s + ${kj}] != 0${maskDtype === "u32" ? "u" : ""})`;
}

function rowCode(
  variant: MaskVariant,
  width: 1 | 4,
  C: number,
  R: number,
  maskDtype: DType | undefined,
): string {
  const d = C * width;
  const rows = (f: (r: number) => string, sep = "\n  ") => each(R, f, sep);
  const chunks = (f: (c: number) => string, sep = "\n    ") => each(C, f, sep);
  const masked = (r: number) =>
    variant === "compact"
      ? `(j < lo || j >= hi${r})`
      : variant === "explicit"
      ? explicitMasked(maskDtype, `qi${r}`, "j")
      : "false";
  const range = variant === "compact"
    ? compactKeyRange(R, (r) => `qi${r}`, "P.s")
    : `let lo = 0u;\n  let jEnd = P.s;`;
  // Masked scores pass no gradient.
  const dsOf = (r: number, x: string) => variant === "none" ? x : `select(${x}, 0.0, ${masked(r)})`;
  const loadKV = `let kb = kvBase + j * ${C}u;
    ${chunks((c) => `let k${c} = K[kb + ${c}u];`)}
    ${chunks((c) => `let v${c} = V[kb + ${c}u];`)}`;
  const score = (r: number) =>
    `let s${r} = ${dots(C, (c) => `q${r}_${c}`, (c) => `k${c}`)} * P.c;
    let dp${r} = ${dots(C, (c) => `g${r}_${c}`, (c) => `v${c}`)};`;
  const maskedPass = variant === "none" ? "" : `
  // Every masked key scores mv: merge them at once (see rows.ts).
  let mv = P.maskValue * P.c;
  ${rows((r) => `${maskedMerge(r)}\n  dd${r} *= cr${r};`)}
  if (${rows((r) => `w${r} != 0.0`, " || ")}) {
    for (var j = 0u; j < P.s; j++) {
      let kb = kvBase + j * ${C}u;
      ${chunks((c) => `let v${c} = V[kb + ${c}u];`, "\n      ")}
      ${
    rows((r) =>
      `let ww${r} = select(0.0, w${r}, ${masked(r)});
      l${r} += ww${r};
      dd${r} += ww${r} * ${dots(C, (c) => `g${r}_${c}`, (c) => `v${c}`)};`, "\n      ")
  }
    }
  }`;
  return `
${GradParams.wgsl}
@group(0) @binding(1) var<storage, read> Q: array<T>;
@group(0) @binding(2) var<storage, read> K: array<T>;
@group(0) @binding(3) var<storage, read> V: array<T>;
@group(0) @binding(4) var<storage, read> DO: array<T>;
@group(0) @binding(5) var<storage, read_write> DQ: array<T>;
@group(0) @binding(6) var<storage, read_write> ST: array<vec4<f32>>;
${rowsMaskDecl(variant, 7, maskDtype)}
${rowsPrelude(width)}
${ROWS_MAIN}
  ${blockIndex(R)}
  let inv = 1.0 / (sqrt(${d}.0) * P.c);
  let rs = 1.0 / sqrt(${d}.0);
  ${
    rows((r) =>
      `let qi${r} = min(blk * ${R}u + ${r}u, P.s - 1u);
  let qb${r} = (bn * P.s + qi${r}) * ${C}u;
  let gb${r} = ((bi * P.s + qi${r}) * P.heads + n) * ${C}u;
  ${each(C, (c) => `let q${r}_${c} = Q[qb${r} + ${c}u] * inv;`, " ")}
  ${each(C, (c) => `let g${r}_${c} = DO[gb${r} + ${c}u];`, " ")}
  var m${r} = -3.4028234e38;
  var l${r} = 0.0;
  var dd${r} = 0.0;                      // Σ_j exp(score_j − m) dp_j`
    )
  }
  ${range}
  let kvBase = bn * P.s * ${C}u;
  // Pass 1: m, l and dd over the visible keys, online as in the forward.
  for (var j = lo; j < jEnd; j++) {
    ${loadKV}
    ${
    rows((r) =>
      `${score(r)}
    ${onlineStep(r, variant === "none" ? null : masked(r))}
    dd${r} = dd${r} * corr${r} + e${r} * dp${r};`, "\n    ")
  }
  }
  ${maskedPass}
  ${
    rows((r) =>
      `let il${r} = 1.0 / l${r};
  let D${r} = dd${r} * il${r};
  if (blk * ${R}u + ${r}u < P.s) { ST[bn * P.s + qi${r}] = vec4<f32>(m${r}, il${r}, D${r}, 0.0); }
  ${each(C, (c) => `var a${r}_${c} = T(0.0);`, " ")}`
    )
  }
  // Pass 2: dq over the visible keys (masked scores pass no gradient).
  for (var j = lo; j < jEnd; j++) {
    ${loadKV}
    ${
    rows((r) =>
      `${score(r)}
    let ds${r} = ${dsOf(r, `exp(s${r} - m${r}) * il${r} * (dp${r} - D${r}) * rs`)};
    ${chunks((c) => `a${r}_${c} += ds${r} * k${c};`, " ")}`, "\n    ")
  }
  }
  ${
    rows((r) =>
      `if (blk * ${R}u + ${r}u < P.s) {
    ${chunks((c) => `DQ[qb${r} + ${c}u] = a${r}_${c};`, " ")}
  }`
    )
  }
}
`;
}

function keyCode(
  variant: MaskVariant,
  width: 1 | 4,
  C: number,
  R: number,
  maskDtype: DType | undefined,
): string {
  const d = C * width;
  const rows = (f: (r: number) => string, sep = "\n  ") => each(R, f, sep);
  const chunks = (f: (c: number) => string, sep = "\n    ") => each(C, f, sep);
  // Under the compact rule key j is seen by the queries [ilo, s): none when j < pad, from pad on
  // inside the context, from j on after it. The queries before every row's ilo see no key of
  // the block: they add p·dO to dv only, with the masked score's p (0 unless the row is fully
  // masked), and are skipped when it is 0.
  const range = variant === "compact"
    ? `let pad = u32(max(MI[bi * 2u], 0));
  let ctx = u32(max(MI[bi * 2u + 1u], 0));
  ${
      rows((r) =>
        `let ilo${r} = select(select(kj${r}, pad, kj${r} < pad + ctx), P.s, kj${r} < pad);`
      )
    }
  let iloMin = ${each(R - 1, (r) => `min(ilo${r}, `, "")}ilo${R - 1}${")".repeat(R - 1)};`
    : "";
  // Whether query i may not see key kj${r}.
  const masked = (r: number) =>
    variant === "compact"
      ? `i < ilo${r}`
      : variant === "explicit"
      ? explicitMasked(maskDtype, "i", `kj${r}`)
      : null;
  const gate = (r: number, x: string, off: string) =>
    variant === "none" ? x : `select(${x}, ${off}, ${masked(r)})`;
  const prefix = variant === "compact"
    ? `if (i < iloMin) {
      if (pm != 0.0) {
        ${chunks((c) => `let g${c} = DO[gb + ${c}u];`, "\n        ")}
        ${rows((r) => each(C, (c) => `b${r}_${c} += pm * g${c};`, " "), "\n        ")}
      }
      continue;
    }`
    : "";
  return `
${GradParams.wgsl}
@group(0) @binding(1) var<storage, read> Q: array<T>;
@group(0) @binding(2) var<storage, read> K: array<T>;
@group(0) @binding(3) var<storage, read> V: array<T>;
@group(0) @binding(4) var<storage, read> DO: array<T>;
@group(0) @binding(5) var<storage, read> ST: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> DK: array<T>;
@group(0) @binding(7) var<storage, read_write> DV: array<T>;
${rowsMaskDecl(variant, 8, maskDtype)}
${rowsPrelude(width)}
${ROWS_MAIN}
  // The block's rows are keys kj; the loop runs over the queries i.
  ${blockIndex(R)}
  let inv = 1.0 / (sqrt(${d}.0) * P.c);
  let rs = 1.0 / sqrt(${d}.0);
  let mv = P.maskValue * P.c;
  ${
    rows((r) =>
      `let kj${r} = min(blk * ${R}u + ${r}u, P.s - 1u);
  let kb${r} = (bn * P.s + kj${r}) * ${C}u;
  ${each(C, (c) => `let k${r}_${c} = K[kb${r} + ${c}u];`, " ")}
  ${each(C, (c) => `let v${r}_${c} = V[kb${r} + ${c}u];`, " ")}
  ${each(C, (c) => `var a${r}_${c} = T(0.0);`, " ")}
  ${each(C, (c) => `var b${r}_${c} = T(0.0);`, " ")}`
    )
  }
  ${range}
  for (var i = 0u; i < P.s; i++) {
    let st = ST[bn * P.s + i];           // (m, 1/l, D) of query i
    let pm = exp(mv - st.x) * st.y;      // p of a masked pair (unused without a mask)
    let gb = ((bi * P.s + i) * P.heads + n) * ${C}u;
    ${prefix}
    let qb = (bn * P.s + i) * ${C}u;
    ${chunks((c) => `let q${c} = Q[qb + ${c}u];`)}
    ${chunks((c) => `let qs${c} = q${c} * inv;`)}
    ${chunks((c) => `let g${c} = DO[gb + ${c}u];`)}
    ${
    rows((r) =>
      `// The forward's rounding: (q / (sqrt(d)·c)) · k, then ·c.
    let p${r} = exp(${dots(C, (c) => `qs${c}`, (c) => `k${r}_${c}`)} * P.c - st.x) * st.y;
    let dp${r} = ${dots(C, (c) => `g${c}`, (c) => `v${r}_${c}`)};
    let ds${r} = ${gate(r, `p${r} * (dp${r} - st.z) * rs`, "0.0")};
    let pp${r} = ${gate(r, `p${r}`, "pm")};
    ${chunks((c) => `a${r}_${c} += ds${r} * q${c};`, " ")}
    ${chunks((c) => `b${r}_${c} += pp${r} * g${c};`, " ")}`, "\n    ")
  }
  }
  ${
    rows((r) =>
      `if (blk * ${R}u + ${r}u < P.s) {
    ${chunks((c) => `DK[kb${r} + ${c}u] = a${r}_${c};`, " ")}
    ${chunks((c) => `DV[kb${r} + ${c}u] = b${r}_${c};`, " ")}
  }`
    )
  }
}
`;
}
