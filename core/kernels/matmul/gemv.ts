/**
 * Matmul for a few rows (M ≤ {@link GEMV_MAX_ROWS}: decode steps, batch 1–4) with a weight below
 * the texture threshold: the generic tiled kernel (matmul.ts) gives each invocation 4 rows × 4
 * columns in 8 × 8 workgroups, so at M = 1 seven of eight invocations return at once and each live
 * one computes three clamped duplicate rows; on llvmpipe the demo model's qkv (384 × 128) took
 * ~480 µs that way.
 *
 * Here an invocation owns one group of {@link COLS} output columns for all M rows (the kernel is
 * compiled per M, so no row is computed twice), and K is split between the lanes of a row plan
 * (common.ts `rowPlan`): on hardware GPUs 64 lanes share a column group and meet in the
 * workgroup reduction; on software adapters each invocation walks all of K (a workgroup
 * barrier there switches every invocation, costing more than the arithmetic) and 64 column
 * groups share a workgroup. No invocation computes anything twice and none idles except past N.
 * Measured on llvmpipe in a demo decode step (`deno run -A bench/dispatch.ts --step`, each
 * dispatch alone, a busy 2-core machine): qkv 384 × 128 ~480 → 90–190 µs, dense 128 × 128
 * ~200 → 55–95 µs; the vector loop took the qkv from ~330 (scalar loads) to ~190 in one run.
 * Above the texture threshold it loses to the texture design on llvmpipe (`deno run -A
 * bench/matmul.ts --small`, forced with `kernel: "gemv"`: 0.2–0.7× its speed at M = 1 and 4 on
 * the small model's 1024–32000-wide weights), since each storage load at a per-lane address is
 * a loop over the lanes there.
 */

import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { bindingOf, type Tensor } from "../../tensor/tensor.ts";
import { declareInput, declareOutput, type RowPlan, rowPlan, WG_BUILTINS } from "../common.ts";
import { uniformLayout } from "../uniforms.ts";
import type { MatmulProblem } from "./problem.ts";

/** Most rows (M, or batch × M for a shared B) the kernel takes. */
export const GEMV_MAX_ROWS = 4;

/** Output columns per invocation (a column group). */
const COLS = 4;

/** Lanes per column group on hardware GPUs (the workgroup reduction's width). */
const LANES = 64;

/** Batches are workgroup z: at most WebGPU's default per-dimension limit. */
const MAX_BATCH = 65535;

const GemvParams = uniformLayout({
  /** Columns of this dispatch (a weight chunk's rows when B is chunked). */
  N: "u32",
  K: "u32",
  groups: "u32",
  aBatch: "u32",
  bBatch: "u32",
  cBatch: "u32",
  /** The output's row stride (all of N) and this dispatch's first column in it. */
  ldc: "u32",
  colOffset: "u32",
});

/**
 * Whether the kernel takes the problem: a few rows (after folding a shared B's batch into M),
 * A and the output unchunked, B unchunked or a row-chunked 2-D [N, K] weight (one dispatch per
 * chunk, as the tiled kernels do).
 */
export function gemvFits(p: MatmulProblem, a: Tensor, b: Tensor, out: Tensor): boolean {
  if (a.chunks.length > 1 || out.chunks.length > 1) return false;
  if (b.chunks.length > 1 && !(p.sharedB && p.transposeB)) return false;
  const { rows, batch } = rowsOf(p);
  return rows <= GEMV_MAX_ROWS && batch <= MAX_BATCH;
}

/** Rows per dispatch and batches (workgroup z): a shared B with an untransposed A folds. */
function rowsOf(p: MatmulProblem): { rows: number; batch: number } {
  const fold = p.sharedB && !p.transposeA && p.batch > 1;
  return fold ? { rows: p.batch * p.M, batch: 1 } : { rows: p.M, batch: p.batch };
}

function gemvCode(
  rows: number,
  p: MatmulProblem,
  bDtype: "f32" | "f16",
  bias: string,
  plan: RowPlan,
  vector: boolean,
): string {
  const ms = Array.from({ length: rows }, (_, m) => m);
  const cs = Array.from({ length: COLS }, (_, j) => j);
  const loop = vector ? vectorLoop(ms, cs, bDtype, plan) : scalarLoop(ms, cs, p, bDtype, plan);
  return `
${GemvParams.wgsl}${loop.decls}
${declareOutput(3, "C")}
${bias ? declareInput(4, "bias", bias as "f32") : ""}
${plan.reduce}
@compute @workgroup_size(${plan.workgroupSize})
fn main(${WG_BUILTINS}) {
  ${plan.prologue}
  if (row >= P.groups) { return; }
  let col0 = row * ${COLS}u;
  let aBase = wid.z * P.aBatch;
  let bBase = wid.z * P.bBatch;
  ${loop.body}
  ${
    cs.map((j) =>
      `let bias${j} = ${bias ? `ld_bias(P.colOffset + min(col0 + ${j}u, P.N - 1u))` : "0.0"};`
    ).join("\n  ")
  }
  let cBase = wid.z * P.cBatch;
  ${
    ms.map((m) =>
      cs.map((j) =>
        `{ let s = wg_sum(${loop.sum(m, j)}, t) + bias${j};
    if (t == 0u && col0 + ${j}u < P.N) { C[cBase + ${m}u * P.ldc + P.colOffset + col0 + ${j}u] = s; } }`
      ).join("\n  ")
    ).join("\n  ")
  }
}
`;
}

/** The K loop in any layout, one element of K at a time; `acc<m>_<j>` is output (m, col0 + j). */
function scalarLoop(
  ms: number[],
  cs: number[],
  p: MatmulProblem,
  bDtype: "f32" | "f16",
  plan: RowPlan,
) {
  // Element (m, k) of A and (k, n_j) of B (n_j clamped: columns past N are computed, not stored).
  const aAt = (m: number) =>
    p.transposeA ? `aBase + k * ${ms.length}u + ${m}u` : `aBase + ${m}u * P.K + k`;
  const bAt = (j: number) => p.transposeB ? `b${j} + k` : `b${j} + k * P.N`;
  return {
    decls: declareInput(1, "A", "f32") + declareInput(2, "B", bDtype),
    body: `${
      cs.map((j) =>
        `let b${j} = bBase + min(col0 + ${j}u, P.N - 1u)${p.transposeB ? " * P.K" : ""};`
      ).join("\n  ")
    }
  ${ms.flatMap((m) => cs.map((j) => `var acc${m}_${j} = 0.0;`)).join(" ")}
  for (var k = t; k < P.K; k += ${plan.lanes}u) {
    ${cs.map((j) => `let v${j} = ld_B(${bAt(j)});`).join(" ")}
    ${
      ms.map((m) =>
        `let a${m}v = ld_A(${aAt(m)}); ${
          cs.map((j) => `acc${m}_${j} += a${m}v * v${j};`).join(" ")
        }`
      ).join("\n    ")
    }
  }`,
    sum: (m: number, j: number) => `acc${m}_${j}`,
  };
}

/**
 * The K loop of the layer form (A [rows, K], B [N, K]) when K is a multiple of the vector
 * width: 4 elements of K per load (f32), 8 (f16, one vec4<u32>); on llvmpipe a load costs about
 * the same whatever its width, so this does a quarter (an eighth) of the scalar loop's loads.
 * `acc<m>_<j>` holds four partial sums of output (m, col0 + j).
 */
function vectorLoop(ms: number[], cs: number[], bDtype: "f32" | "f16", plan: RowPlan) {
  const f16 = bDtype === "f16";
  const width = f16 ? 8 : 4;
  const decls = `@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<${f16 ? "u32" : "f32"}>>;
`;
  const loadsB = cs.map((j) =>
    f16
      ? `let w${j} = B[b${j} + k];
    let lo${j} = vec4<f32>(unpack2x16float(w${j}.x), unpack2x16float(w${j}.y));
    let hi${j} = vec4<f32>(unpack2x16float(w${j}.z), unpack2x16float(w${j}.w));`
      : `let v${j} = B[b${j} + k];`
  ).join("\n    ");
  const fmas = ms.map((m) =>
    f16
      ? `let alo${m} = A[a${m} + 2u * k]; let ahi${m} = A[a${m} + 2u * k + 1u];
    ${cs.map((j) => `acc${m}_${j} += alo${m} * lo${j} + ahi${m} * hi${j};`).join(" ")}`
      : `let a${m}v = A[a${m} + k];
    ${cs.map((j) => `acc${m}_${j} += a${m}v * v${j};`).join(" ")}`
  ).join("\n    ");
  return {
    decls,
    body: `let kv = P.K / ${width}u;
  ${
      cs.map((j) => `let b${j} = bBase / ${width}u + min(col0 + ${j}u, P.N - 1u) * kv;`).join(
        "\n  ",
      )
    }
  ${ms.map((m) => `let a${m} = aBase / 4u + ${m}u * (P.K / 4u);`).join(" ")}
  ${ms.flatMap((m) => cs.map((j) => `var acc${m}_${j} = vec4<f32>(0.0);`)).join(" ")}
  for (var k = t; k < kv; k += ${plan.lanes}u) {
    ${loadsB}
    ${fmas}
  }`,
    sum: (m: number, j: number) => `dot(acc${m}_${j}, vec4<f32>(1.0))`,
  };
}

/** Records `op(A) · op(B) (+ bias)` for a problem {@link gemvFits} takes, into `out`. */
export function recordGemv(
  rec: Recording,
  a: Tensor,
  b: Tensor,
  p: MatmulProblem,
  bias: Tensor | undefined,
  out: Tensor,
): void {
  const { rows, batch } = rowsOf(p);
  const plan = rowPlan(rec.gpu, LANES, p.K);
  const bDtype = b.dtype as "f32" | "f16";
  // The vector loop: the layer form with K a multiple of the vector width (4 f32, 8 f16).
  const vector = p.transposeB && !p.transposeA && p.K > 0 &&
    p.K % (bDtype === "f16" ? 8 : 4) === 0;
  const key = `gemv:${plan.tag}:${vector ? "vec" : "scalar"}:${rows}:${p.transposeA ? "T" : "N"}${
    p.transposeB ? "T" : "N"
  }:${b.dtype}:${bias?.dtype ?? "nobias"}`;
  const pipeline = getPipeline(
    rec.gpu,
    key,
    () => gemvCode(rows, p, bDtype, bias?.dtype ?? "", plan, vector),
  );
  // A chunked weight (rows of [N, K]): one dispatch per chunk, its columns placed by colOffset.
  b.chunks.forEach((chunk, bc) => {
    const chunked = b.chunks.length > 1;
    const N = chunked ? chunk.rows : p.N;
    if (N === 0) return;
    const groups = Math.ceil(N / COLS);
    const resources: GPUBindingResource[] = [bindingOf(a), bindingOf(b, bc), bindingOf(out)];
    if (bias) resources.push(bindingOf(bias));
    const [x, y] = plan.workgroups(groups);
    recordDispatch(
      rec,
      pipeline,
      GemvParams.pack({
        N,
        K: p.K,
        groups,
        aBatch: p.M * p.K,
        bBatch: p.sharedB ? 0 : p.K * p.N,
        cBatch: p.M * p.N,
        ldc: p.N,
        colOffset: chunked ? chunk.rowStart : 0,
      }),
      resources,
      [x, y, batch],
    );
  });
}
