/**
 * The matmul design for software adapters (llvmpipe/lavapipe), from CONVENTIONS.md's
 * measurements: Mesa turns every storage-buffer load at a run-time address into a bounds-checked
 * scalar loop per lane, while one texture fetch returns 16 bytes per lane. So the activations and
 * the weight are read as textures, each invocation keeps a large register tile and workgroups are
 * 8 wide (one SIMD batch).
 *
 * - Weight W [N, K] is repacked once into a texture of width K ("k-major blocked"): texel (k, g)
 *   holds W[4g..4g+3, k] as rgba32float (f32 weights) or W[8g..8g+7, k] as 8 halves in an
 *   rgba32uint texel (f16 weights). The texture is cached on the weight tensor (see
 *   `Tensor.meta`) and rebuilt when the weight is written.
 * - Activations A [M, K] are copied per call into an rgba32float texture of width ⌈K/4⌉.
 * - The gradient forms pack their operands the same way from the other storage orders, so that
 *   they too run here instead of on the generic kernel (4–5× slower on llvmpipe): B stored [K, N]
 *   (dx = dy · W) and A stored [K, M] (dW = dyᵀ · x). K need not be a multiple of 4: the packs
 *   fill the texels past K with zeros.
 * - Split K: the 8 invocations of a workgroup share one output tile and take every 8th texel of
 *   K, so the lanes of a SIMD batch read neighbouring texels of the same weight rows; the partial
 *   tiles are summed through workgroup memory once at the end. Measured against one tile per
 *   invocation (whole K): +25–60% at M = 1, +10–25% at M = 16 and 512.
 * - "tile" kernel: 16 rows × 16 columns per workgroup (prefill: M ≥ 9); "tile-shortk" for K ≤ 128.
 * - "rows" kernels: 1 or 4 rows × 32 columns per workgroup (decode, batched decode: M ≤ 8).
 */

import type { Gpu } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording, whenIdle } from "../../gpu/recording.ts";
import { bindingOf, type DType, type Tensor } from "../../tensor/tensor.ts";
import { declareInput, declareOutput, WG_BUILTINS, WG_INDEX } from "../common.ts";
import type { MatmulProblem } from "./problem.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 8;

/** Weight pack: `N` rows of `K`, texture width `KP`; the K slice [k0, k0 + len). */
const PackParams = uniformLayout({ N: "u32", K: "u32", KP: "u32", k0: "u32", len: "u32" });
/** Activation copy: `rows` rows of `K4` texels. */
const ActParams = uniformLayout({ rows: "u32", K4: "u32" });
/** Activation gather: as the weight pack, `K4` texels per row. */
const GatherParams = uniformLayout({ rows: "u32", K: "u32", K4: "u32", k0: "u32", len: "u32" });
/**
 * The texture matmul: `M` rows × `N` columns of this column block, `K4` texels of K, `G` texel
 * columns of the weight; output row stride `ldc` and column `colOffset`; `hasBias`, and
 * `accumulate` (add into C: K slices after the first).
 */
const TextureParams = uniformLayout({
  M: "u32",
  N: "u32",
  K4: "u32",
  G: "u32",
  ldc: "u32",
  colOffset: "u32",
  hasBias: "u32",
  accumulate: "u32",
});

/** One texture kernel variant: `R` rows × `4·C4` columns of the output per workgroup. */
export interface TextureKernel {
  name: string;
  R: number;
  C4: number;
  /** The workgroup's invocations share one tile and split K (else each has its own tile). */
  splitK: boolean;
}

/** Prefill (M ≥ 9): 16 × 16 output tile. */
export const TILE_KERNEL: TextureKernel = { name: "tile", R: 16, C4: 4, splitK: true };
/**
 * Prefill with a short K (M ≥ 9, K ≤ 4·{@link SHORT_K4}): an 8 × 8 tile per invocation over the
 * whole K, no workgroup memory. Splitting a short K leaves each invocation a few texels, and the
 * workgroup's reduction (a barrier: every invocation switched on llvmpipe) dominated. Measured at
 * M 480, K 128 (the demo's layers): 1.3× the split design; a 16 × 16 tile was 1.5× but took 4 s
 * to compile per variant, and from K ≈ 480 up the split design is faster.
 */
export const SHORT_K_KERNEL: TextureKernel = { name: "tile-shortk", R: 8, C4: 2, splitK: false };
/** Texels of K up to which prefill takes {@link SHORT_K_KERNEL}. */
export const SHORT_K4 = 32;
/** Short prompts and batched decode (2 ≤ M ≤ 8): 4 rows × 32 columns. */
export const ROWS4_KERNEL: TextureKernel = { name: "rows", R: 4, C4: 8, splitK: true };
/** Decode (M = 1): one row × 32 columns. */
export const ROWS_KERNEL: TextureKernel = { name: "rows", R: 1, C4: 8, splitK: true };

/** Chooses the texture kernel for a problem, or null when its shape does not fit the design. */
export function textureKernelFor(
  rec: Recording,
  a: Tensor,
  b: Tensor,
  p: MatmulProblem,
  out: Tensor,
): TextureKernel | null {
  if (!p.sharedB || (p.transposeA && p.batch !== 1)) return null;
  if (a.chunks.length > 1 || out.chunks.length > 1) return null;
  if (!p.transposeB && b.chunks.length > 1) return null;
  const rows = p.batch * p.M;
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  if (p.K === 0 || rows > maxDim) return null;
  const per = texelWidth(weightLayout(b.dtype));
  for (const cols of columnBlocks(b, p).map((c) => c.cols)) {
    if (cols % per !== 0 || cols / per > maxDim) return null;
  }
  // Three variants only: each costs a cold compile of 0.1–1 s on llvmpipe. Measured (4096×12288,
  // f16 weights, GFLOP/s): M = 1: 1×32 4.7, 4×32 3.7; M = 4: 1×32 5.3, 4×32 13.4, 16×16 5.6;
  // M = 8: 4×32 15.0, 16×16 11.7; M = 12: both 15–16.
  if (rows === 1) return ROWS_KERNEL;
  if (rows <= 8) return ROWS4_KERNEL;
  const sliceLen = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  return paddedK(Math.min(p.K, sliceLen)) / 4 <= SHORT_K4 ? SHORT_K_KERNEL : TILE_KERNEL;
}

/**
 * How a weight is stored as a texture: "f32" rgba32float (4 weights per texel) or "f16x8" 8 halves
 * per rgba32uint texel, unpacked in the kernel. (Measured on both Vulkan and GL: rgba16float,
 * widened by the texture unit, was no faster than f32 and slower than f16x8.)
 */
type WeightLayout = "f32" | "f16x8";

function weightLayout(dtype: DType): WeightLayout {
  return dtype === "f16" ? "f16x8" : "f32";
}

/** K rounded up to whole texels of A (the packs zero the padding). */
function paddedK(K: number): number {
  return Math.ceil(K / 4) * 4;
}

/** The output columns each B chunk provides: B's row chunks when stored [N, K], else all of N. */
function columnBlocks(b: Tensor, p: MatmulProblem): { cols: number; start: number }[] {
  return p.transposeB
    ? b.chunks.map((c) => ({ cols: c.rows, start: c.rowStart }))
    : [{ cols: p.N, start: 0 }];
}

/** Weights per texel. */
function texelWidth(layout: WeightLayout): number {
  return layout === "f16x8" ? 8 : 4;
}

interface PackedWeight {
  version: number;
  textures: GPUTexture[];
  /** The recording that packs it; usable by others only once that one was submitted. */
  rec: Recording | null;
  ready: boolean;
  destroy(): void;
}

/** A slice [k0, k0 + len) of the reduction dimension. */
interface KSlice {
  k0: number;
  len: number;
}

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 0;

function bufferId(buffer: GPUBuffer): number {
  let id = bufferIds.get(buffer);
  if (id === undefined) bufferIds.set(buffer, id = nextBufferId++);
  return id;
}

/** The attachment key of a packed weight. */
function packedKey(w: Tensor, layout: WeightLayout, kMajor: boolean, slice: KSlice): string {
  const order = kMajor ? "kn" : "nk";
  // Views of one tensor share its attachments: buffer and offset tell row slices apart.
  const at0 = `${bufferId(w.buffer)}+${w.byteOffset}`;
  return `matmul-texture:${w.shape.join("x")}@${at0}:${layout}:${order}:${slice.k0}+${slice.len}`;
}

/**
 * The texture form of each chunk of weight `w` ([N, K], or [K, N] when `kMajor`), packed in this
 * recording if stale.
 */
function packedWeight(
  rec: Recording,
  w: Tensor,
  K: number,
  N: number,
  layout: WeightLayout,
  kMajor: boolean,
  slice: KSlice,
): GPUTexture[] {
  const order = kMajor ? "kn" : "nk";
  const key = packedKey(w, layout, kMajor, slice);
  const cached = w.meta.attachments.get(key) as PackedWeight | undefined;
  if (cached && cached.version === w.meta.version && (cached.ready || cached.rec === rec)) {
    return cached.textures;
  }
  cached?.destroy();
  const f16 = layout === "f16x8";
  const per = texelWidth(layout);
  const device = rec.gpu.device;
  const format: GPUTextureFormat = f16 ? "rgba32uint" : "rgba32float";
  // Element (n, k0 + k) of W; texels past the slice's end are zero.
  const at = (n: string, k: string) =>
    kMajor ? `(P.k0 + ${k}) * P.N + ${n}` : `(${n}) * P.K + P.k0 + ${k}`;
  const pipeline = getPipeline(rec.gpu, `matmul-texture:pack:${layout}:${order}`, () => `
${PackParams.wgsl}${declareInput(1, "W", f16 ? "u32" : "f32")}
@group(0) @binding(2) var T: texture_storage_2d<${format}, write>;
${f16 ? "fn half_bits(e: u32) -> u32 { return (W[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu; }" : ""}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;       // one texel per invocation
  let groups = P.N / ${per}u;
  if (e >= groups * P.KP) { return; }
  let g = e / P.KP;
  let k = e - g * P.KP;
  let n = g * ${per}u;
  ${
    f16
      ? `var t = vec4<u32>(0u);
  if (k < P.len) {
    for (var q = 0u; q < 4u; q++) {
      t[q] = half_bits(${at("n + 2u * q", "k")}) | (half_bits(${
        at("n + 2u * q + 1u", "k")
      }) << 16u);
    }
  }
  textureStore(T, vec2<u32>(k, g), t);`
      : `var t = vec4<f32>(0.0);
  if (k < P.len) {
    t = vec4<f32>(W[${at("n", "k")}], W[${at("n + 1u", "k")}], W[${at("n + 2u", "k")}],
      W[${at("n + 3u", "k")}]);
  }
  textureStore(T, vec2<u32>(k, g), t);`
  }
}
`);
  const KP = paddedK(slice.len);
  const blocks = kMajor ? [{ rows: N }] : w.chunks;
  const textures = blocks.map((c, i) => {
    const texture = device.createTexture({
      size: [KP, c.rows / per],
      format,
      // COPY_SRC: the packed form can be read back (tests compare the two ways of packing).
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
        GPUTextureUsage.COPY_SRC,
      label: `${w.label ?? "weight"} texture ${i}`,
    });
    recordDispatch(
      rec,
      pipeline,
      PackParams.pack({ N: c.rows, K, KP, k0: slice.k0, len: slice.len }),
      [bindingOf(w, i), texture.createView()],
      grid(rec.gpu, Math.ceil(((c.rows / per) * KP) / 64)),
    );
    return texture;
  });
  const packed: PackedWeight = {
    version: w.meta.version,
    textures,
    rec,
    ready: false,
    // The weight may be released while a recording that samples the texture is still open.
    destroy: () => whenIdle(rec.gpu, () => textures.forEach((t) => t.destroy())),
  };
  rec.onSubmit.push(() => {
    packed.ready = rec.state === "submitted";
  });
  w.meta.attachments.set(key, packed);
  return textures;
}

/**
 * A reusable rgba32float texture holding activations of `rows × K` (A stored [K, rows] when
 * `transposed`). Heights are rounded up to a power of two so that varying sequence lengths share
 * a few textures (kernels clamp row reads to the real M, so the unused rows are never read).
 */
function activationTexture(
  rec: Recording,
  a: Tensor,
  rows: number,
  K: number,
  transposed: boolean,
  slice: KSlice,
): GPUTexture {
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  const height = Math.min(maxDim, 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
  const K4 = paddedK(slice.len) / 4;
  const key = `matmul-texture:act:${K4}x${height}`;
  let texture = rec.gpu.cache.get(key) as GPUTexture | undefined;
  if (!texture) {
    texture = rec.gpu.device.createTexture({
      size: [K4, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
      label: key,
    });
    rec.gpu.cache.set(key, texture);
  }
  if (transposed || K % 4 !== 0 || slice.len !== K) {
    recordGatherActivations(rec, a, texture, rows, K, transposed, slice);
    return texture;
  }
  const pipeline = getPipeline(rec.gpu, "matmul-texture:act", () => `
${ActParams.wgsl}@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var T: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.rows * P.K4) { return; }
  textureStore(T, vec2<u32>(e % P.K4, e / P.K4), A[e]);
}
`);
  recordDispatch(
    rec,
    pipeline,
    ActParams.pack({ rows, K4: K / 4 }),
    [bindingOf(a), texture.createView()],
    grid(rec.gpu, Math.ceil((rows * K) / 4 / 64)),
  );
  return texture;
}

/** The activation pack for A stored [K, rows] or with K % 4 ≠ 0: one texel of 4 gathered k's. */
function recordGatherActivations(
  rec: Recording,
  a: Tensor,
  texture: GPUTexture,
  rows: number,
  K: number,
  transposed: boolean,
  slice: KSlice,
): void {
  const at = transposed ? "(P.k0 + k) * P.rows + m" : "m * P.K + P.k0 + k";
  const pipeline = getPipeline(
    rec.gpu,
    `matmul-texture:act:gather:${transposed ? "km" : "mk"}`,
    () => `
${GatherParams.wgsl}${declareInput(1, "A", "f32")}
@group(0) @binding(2) var T: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.rows * P.K4) { return; }
  let m = e / P.K4;
  let k0 = (e % P.K4) * 4u;
  var t = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let k = k0 + j;
    if (k < P.len) { t[j] = A[${at}]; }
  }
  textureStore(T, vec2<u32>(e % P.K4, m), t);
}
`,
  );
  const K4 = paddedK(slice.len) / 4;
  recordDispatch(
    rec,
    pipeline,
    GatherParams.pack({ rows, K, K4, k0: slice.k0, len: slice.len }),
    [bindingOf(a), texture.createView()],
    grid(rec.gpu, Math.ceil((rows * K4) / 64)),
  );
}

function zeroWord(rec: Recording): GPUBufferBinding {
  let buffer = rec.gpu.cache.get("zero-word") as GPUBuffer | undefined;
  if (!buffer) {
    // Created zero-filled by WebGPU; never written.
    buffer = rec.gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    rec.gpu.cache.set("zero-word", buffer);
  }
  return { buffer, offset: 0, size: 16 };
}

/** Column vectors `b{c}{sfx}` of B at k-index expression `k`, column group base `g` (vec4 each). */
function loadB(f16: boolean, count: number, k: string, g: string, sfx: string): string {
  const lines: string[] = [];
  if (f16) {
    for (let q = 0; q < count / 2; q++) {
      const t = `t${q}${sfx}`;
      lines.push(
        `let ${t} = textureLoad(Bt, vec2<u32>(${k}, min(${g} + ${q}u, P.G - 1u)), 0);`,
        `let b${2 * q}${sfx} = vec4<f32>(unpack2x16float(${t}.x), unpack2x16float(${t}.y));`,
        `let b${2 * q + 1}${sfx} = vec4<f32>(unpack2x16float(${t}.z), unpack2x16float(${t}.w));`,
      );
    }
  } else {
    for (let c = 0; c < count; c++) {
      lines.push(
        `let b${c}${sfx} = textureLoad(Bt, vec2<u32>(${k}, min(${g} + ${c}u, P.G - 1u)), 0);`,
      );
    }
  }
  return lines.join("\n      ");
}

function kernelCode(kind: TextureKernel, layout: WeightLayout, bias: DType): string {
  const f16 = layout === "f16x8";
  const { R, C4 } = kind;
  const cols = C4 * 4;
  const accDecl: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) accDecl.push(`var acc${r}_${c} = vec4<f32>(0.0);`);
  }
  const aLoads = Array.from(
    { length: R },
    (_, r) => `let a${r} = textureLoad(At, vec2<u32>(kk, min(m0 + ${r}u, P.M - 1u)), 0);`,
  );
  // Per texel of K (4 k-steps): the 4 B vectors of each column group form a mat4x4, so each
  // accumulator is read and written once per 4 k-steps (`acc += B·a`) instead of once per k-step:
  // llvmpipe keeps only a few accumulators in registers, so that traffic was the limit (measured
  // +20–50% at every shape). Two texels per iteration measured no better and compiled slower.
  const g = f16 ? "n0 / 8u" : "n0 / 4u";
  const body: string[] = [];
  for (let j = 0; j < 4; j++) body.push(loadB(f16, C4, `kk * 4u + ${j}u`, g, `_${j}`));
  for (let c = 0; c < C4; c++) {
    body.push(`let B${c} = mat4x4<f32>(b${c}_0, b${c}_1, b${c}_2, b${c}_3);`);
  }
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) body.push(`acc${r}_${c} += B${c} * a${r};`);
  }
  return `
${TextureParams.wgsl}@group(0) @binding(1) var At: texture_2d<f32>;
@group(0) @binding(2) var Bt: texture_2d<${f16 ? "u32" : "f32"}>;
${declareOutput(3, "C")}
${declareInput(4, "bias", bias)}
fn store4(m: u32, n: u32, v: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    if (n + j < P.N) {
      var bj = 0.0;
      if (P.hasBias == 1u) { bj = ld_bias(P.colOffset + n + j); }
      let c = m * P.ldc + P.colOffset + n + j;
      if (P.accumulate == 1u) { bj += C[c]; }
      C[c] = v[j] + bj;
    }
  }
}
${
    kind.splitK
      ? `var<workgroup> part: array<vec4<f32>, ${WG * R * C4}>;
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  // One workgroup per output tile; its invocations take every ${WG}th texel of K.
  let n0 = wid.x * ${cols}u;
  let m0 = wid.y * ${R}u;
  if (n0 >= P.N || m0 >= P.M) { return; }
  ${accDecl.join("\n  ")}
  for (var kk = lid.x; kk < P.K4; kk += ${WG}u) {
    ${aLoads.join("\n    ")}
    ${body.join("\n    ")}
  }
  ${splitKStores(R, C4)}
}`
      : `@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  // ${WG} output tiles side by side per workgroup, each invocation its own over the whole K.
  let n0 = (wid.x * ${WG}u + lid.x) * ${cols}u;
  let m0 = wid.y * ${R}u;
  // Only a uniform exit: the loads clamp and the stores check n < N, so invocations past N
  // compute values nobody stores.
  if (m0 >= P.M) { return; }
  ${accDecl.join("\n  ")}
  for (var kk = 0u; kk < P.K4; kk++) {
    ${aLoads.join("\n    ")}
    ${body.join("\n    ")}
  }
  ${wholeTileStores(R, C4)}
}`
  }
`;
}

/** Each invocation stores its own tile (through one loop rather than a call per accumulator). */
function wholeTileStores(R: number, C4: number): string {
  const T = R * C4;
  const parts: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) parts.push(`tile[${r * C4 + c}] = acc${r}_${c};`);
  }
  return `var tile: array<vec4<f32>, ${T}>;
  ${parts.join("\n  ")}
  for (var t = 0u; t < ${T}u; t++) {
    let r = t / ${C4}u;
    if (m0 + r < P.M) { store4(m0 + r, n0 + (t % ${C4}u) * 4u, tile[t]); }
  }`;
}

/**
 * The split-K epilogue: the partial tiles of the workgroup's invocations meet in workgroup memory
 * (slow on llvmpipe, but read once per tile) and each invocation sums and stores a few vectors.
 */
function splitKStores(R: number, C4: number): string {
  const T = R * C4;
  const parts: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) parts.push(`part[lid.x * ${T}u + ${r * C4 + c}u] = acc${r}_${c};`);
  }
  return `${parts.join("\n  ")}
  workgroupBarrier();
  for (var t = lid.x; t < ${T}u; t += ${WG}u) {
    let r = t / ${C4}u;
    if (m0 + r < P.M) {
      var s = vec4<f32>(0.0);
      for (var l = 0u; l < ${WG}u; l++) { s += part[l * ${T}u + t]; }
      store4(m0 + r, n0 + (t % ${C4}u) * 4u, s);
    }
  }`;
}

/**
 * Records the texture matmul `out = op(A) · op(B) (+ bias)`; the caller checked
 * {@link textureKernelFor}.
 */
export function recordTextureMatmul(
  rec: Recording,
  a: Tensor,
  b: Tensor,
  p: MatmulProblem,
  bias: Tensor | undefined,
  out: Tensor,
  kind: TextureKernel,
): void {
  const rows = p.batch * p.M;
  const layout = weightLayout(b.dtype);
  const variant = `${kind.name}${kind.R}x${kind.C4}`;
  // No bias: bind a zero word in its place (zero in either dtype), so both cases share the
  // pipeline of the weight's dtype: every variant costs seconds of cold compile on llvmpipe.
  const biasBinding = bias ? bindingOf(bias) : zeroWord(rec);
  const biasDtype = bias?.dtype ?? b.dtype;
  const pipeline = getPipeline(
    rec.gpu,
    `matmul-texture:${variant}:${layout}:${biasDtype}`,
    () => kernelCode(kind, layout, biasDtype),
  );
  const R = kind.R;
  const cols = kind.C4 * 4;
  // A texture row holds at most maxTextureDimension2D texels: a longer K (the lm_head's
  // vocabulary in dx = dy · W) runs as slices, each adding into the output.
  const sliceLen = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  for (let k0 = 0; k0 < p.K; k0 += sliceLen) {
    const slice = { k0, len: Math.min(sliceLen, p.K - k0) };
    const weights = packedWeight(rec, b, p.K, p.N, layout, !p.transposeB, slice);
    const actView = activationTexture(rec, a, rows, p.K, p.transposeA, slice).createView();
    columnBlocks(b, p).forEach((c, i) => {
      const resources = [actView, weights[i].createView(), bindingOf(out), biasBinding];
      recordDispatch(
        rec,
        pipeline,
        TextureParams.pack({
          M: rows,
          N: c.cols,
          K4: paddedK(slice.len) / 4,
          G: c.cols / texelWidth(layout),
          ldc: p.N,
          colOffset: c.start,
          hasBias: bias && k0 === 0 ? 1 : 0,
          accumulate: k0 === 0 ? 0 : 1,
        }),
        resources,
        [Math.ceil(c.cols / (kind.splitK ? cols : cols * WG)), Math.ceil(rows / R)],
      );
    });
  }
}

/**
 * Packs weight `w` ([N, K], the way `linear` reads it: y = x·Wᵀ) into the textures the forward
 * kernels sample, in `rec`, exactly as a first forward would (same slices, same cache keys), so
 * that loading pays for it instead of the first forward. Returns false, packing nothing, when the
 * texture kernels cannot take the weight's shape. The caller first checks that the forward reads
 * this weight as a texture at all (`forwardPacksWeight` in matmul.ts: a software adapter, a
 * weight big enough, no other design forced).
 */
export function prepackWeight(rec: Recording, w: Tensor): boolean {
  if (w.shape.length !== 2 || w.base || w.shape[1] === 0) return false;
  const [N, K] = w.shape;
  const layout = weightLayout(w.dtype);
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  const per = texelWidth(layout);
  if (w.chunks.some((c) => c.rows % per !== 0 || c.rows / per > maxDim)) return false;
  for (let k0 = 0; k0 < K; k0 += maxDim) {
    packedWeight(rec, w, K, N, layout, false, { k0, len: Math.min(maxDim, K - k0) });
  }
  return true;
}

let packScratch = new Uint32Array(0);

/** Fills the packed textures of a weight from host memory, chunk by chunk (see below). */
export interface HostPackedWeight {
  /**
   * Packs chunk `i` of the weight from its row-major bytes (the weight's dtype: f16 bits or f32)
   * and writes it into its textures. The bytes may be reused by the caller afterwards.
   */
  writeChunk(i: number, bytes: Uint8Array): void;
}

/**
 * Packs weight `w` ([N, K], read as y = x·Wᵀ) on the CPU straight into the textures the forward
 * kernels sample, registered under the same keys {@link prepackWeight} uses: a loader streams a
 * weight chunk by chunk from its file into its texture, and the weight never needs a storage
 * buffer. The packing is a transposition of 8 (f16) or 4 (f32) rows at a time, done 32 bits at
 * a time (two halves per read). Returns null when the texture kernels cannot take the weight's
 * shape (the caller checks `forwardPacksWeight` first, as for {@link prepackWeight}).
 */
export function hostPackedWeight(gpu: Gpu, w: Tensor): HostPackedWeight | null {
  if (w.shape.length !== 2 || w.base || w.shape[1] === 0) return null;
  const K = w.shape[1];
  const layout = weightLayout(w.dtype);
  const maxDim = gpu.limits.maxTextureDimension2D ?? 8192;
  const per = texelWidth(layout);
  if (w.chunks.some((c) => c.rows % per !== 0 || c.rows / per > maxDim)) return null;
  const f16 = layout === "f16x8";
  const format: GPUTextureFormat = f16 ? "rgba32uint" : "rgba32float";
  const slices: { slice: KSlice; textures: GPUTexture[] }[] = [];
  for (let k0 = 0; k0 < K; k0 += maxDim) {
    const slice = { k0, len: Math.min(maxDim, K - k0) };
    const KP = paddedK(slice.len);
    const textures = w.chunks.map((c, i) =>
      gpu.device.createTexture({
        size: [KP, Math.max(1, c.rows / per)],
        format,
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
          GPUTextureUsage.COPY_DST | GPUTextureUsage.COPY_SRC,
        label: `${w.label ?? "weight"} texture ${i}`,
      })
    );
    slices.push({ slice, textures });
    const packed: PackedWeight = {
      version: w.meta.version,
      textures,
      rec: null,
      ready: true,
      destroy: () => whenIdle(gpu, () => textures.forEach((t) => t.destroy())),
    };
    w.meta.attachments.get(packedKey(w, layout, false, slice))?.destroy();
    w.meta.attachments.set(packedKey(w, layout, false, slice), packed);
  }
  return {
    writeChunk(i: number, bytes: Uint8Array) {
      const c = w.chunks[i];
      const el = f16 ? 2 : 4;
      if (bytes.byteLength !== c.rows * K * el) {
        throw new RangeError(
          `hostPackedWeight ${w.label ?? ""}: chunk ${i} needs ${c.rows * K * el} bytes, got ` +
            `${bytes.byteLength}`,
        );
      }
      if (c.rows === 0) return;
      for (const { slice, textures } of slices) {
        const KP = paddedK(slice.len);
        const G = c.rows / per;
        // One buffer for every weight of the process (a fresh one per weight is garbage the
        // engine frees only at its next GC: measured, a load then held each weight twice).
        // Texels past the slice's end are never written: a padded slice (KP > len) clears them.
        const words = G * KP * 4;
        if (packScratch.length < words) packScratch = new Uint32Array(words);
        const out = packScratch.subarray(0, words);
        if (KP !== slice.len) out.fill(0);
        if (f16) packF16x8(bytes, K, G, slice, KP, out);
        else packF32x4(bytes, K, G, slice, KP, out);
        gpu.device.queue.writeTexture(
          { texture: textures[i] },
          out,
          { offset: 0, bytesPerRow: KP * 16, rowsPerImage: G },
          [KP, G],
        );
      }
    },
  };
}

/** Texel (k, g) = rows 8g..8g+7 at column k0 + k, two halves per u32 (row 2q low, 2q+1 high). */
function packF16x8(
  bytes: Uint8Array,
  K: number,
  G: number,
  slice: KSlice,
  KP: number,
  out: Uint32Array,
): void {
  const { k0, len } = slice;
  const aligned = K % 2 === 0 && k0 % 2 === 0 && bytes.byteOffset % 4 === 0;
  if (aligned) {
    // Each u32 of the source holds columns k, k + 1 of one row: one read serves two texels,
    // and the 8 rows of a group are walked together so that the output is written in order.
    const src = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
    const half = len & ~1;
    const H = K >> 1;
    for (let g = 0; g < G; g++) {
      const r = (8 * g * K + k0) >> 1;
      let o = g * KP * 4;
      for (let k = 0; k < half >> 1; k++) {
        const a0 = src[r + k], a1 = src[r + H + k], a2 = src[r + 2 * H + k];
        const a3 = src[r + 3 * H + k], a4 = src[r + 4 * H + k], a5 = src[r + 5 * H + k];
        const a6 = src[r + 6 * H + k], a7 = src[r + 7 * H + k];
        out[o] = (a0 & 0xffff) | (a1 << 16);
        out[o + 1] = (a2 & 0xffff) | (a3 << 16);
        out[o + 2] = (a4 & 0xffff) | (a5 << 16);
        out[o + 3] = (a6 & 0xffff) | (a7 << 16);
        out[o + 4] = (a0 >>> 16) | (a1 & 0xffff0000);
        out[o + 5] = (a2 >>> 16) | (a3 & 0xffff0000);
        out[o + 6] = (a4 >>> 16) | (a5 & 0xffff0000);
        out[o + 7] = (a6 >>> 16) | (a7 & 0xffff0000);
        o += 8;
      }
    }
    if (half === len) return;
  }
  // The general case (odd K) and an odd slice's last column, one half at a time.
  const src = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  const from = aligned ? len & ~1 : 0;
  for (let g = 0; g < G; g++) {
    for (let q = 0; q < 4; q++) {
      const ra = (8 * g + 2 * q) * K + k0, rb = ra + K;
      for (let k = from; k < len; k++) {
        out[(g * KP + k) * 4 + q] = src[ra + k] | (src[rb + k] << 16);
      }
    }
  }
}

/** Texel (k, g) = rows 4g..4g+3 at column k0 + k as f32 bits. */
function packF32x4(
  bytes: Uint8Array,
  K: number,
  G: number,
  slice: KSlice,
  KP: number,
  out: Uint32Array,
): void {
  const src = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
  for (let g = 0; g < G; g++) {
    for (let q = 0; q < 4; q++) {
      const r = (4 * g + q) * K + slice.k0;
      let o = g * KP * 4 + q;
      for (let k = 0; k < slice.len; k++) {
        out[o] = src[r + k];
        o += 4;
      }
    }
  }
}
