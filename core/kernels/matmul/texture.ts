/**
 * The matmul design for software adapters (llvmpipe/lavapipe), from CONVENTIONS.md's
 * measurements: Mesa turns every storage-buffer load at a run-time address into a bounds-checked
 * scalar loop per lane, while one texture fetch returns 16 bytes per lane. So the activations and
 * the weight are read as textures, each invocation keeps a large register tile and workgroups are
 * 8 wide (one SIMD batch).
 *
 * - B (the weight) is a texture in its storage's own row-major order: texel (j, y) holds
 *   B[y, 8j..8j+7] as 8 halves in a 16-byte texel (f16, see `f16Texel`) or B[y, 4j..4j+3] as rgba32float
 *   (f32); texture height = rows of the block, width = ⌈row length / 8 (or 4)⌉, zero past the
 *   row's end. A loader therefore uploads a weight with `writeTexture` straight from the file's
 *   bytes, without transforming them on the CPU (the former k-major layout was a transposition
 *   in JavaScript that bounded the load at ~0.2 GB/s). The texture is cached on the tensor (see
 *   `Tensor.meta`) and rebuilt when the tensor is written. Blocks: each storage chunk is split
 *   into textures of at most `maxTextureDimension2D` rows, and rows longer than
 *   {@link sliceElements} into column slices.
 * - Two kernel forms read that texture:
 *   - "nk" (B stored [N, K], `linear`'s y = x·Wᵀ): a texel holds 8 (4) contraction values of one
 *     output column, dotted with two activation texels (one for f32). Column blocks of the
 *     texture are output columns; column slices are K slices adding into the output.
 *   - "kn" (B stored [K, N]: the gradient dx = dy·W reads W this way, and dW = dyᵀ·x reads x): a
 *     texel holds 8 (4) outputs at one contraction index; row blocks are K slices.
 * - Activations A [M, K] are copied per call into an rgba32float texture of ⌈K/4⌉ texels per row
 *   (a whole number of weight texels in the nk form), zero past K; A stored [K, M] (transposeA,
 *   dW = dyᵀ·x) is gathered the same way.
 * - Split K: the 8 invocations of a workgroup share one output tile and take every 8th texel of
 *   K, so the lanes of a SIMD batch read neighbouring texels; the partial tiles are summed through
 *   workgroup memory once at the end. Measured against one tile per invocation (whole K):
 *   +25–60% at M = 1, +10–25% at M = 16 and 512.
 * - "tile" kernel: 16 rows × 16 columns per workgroup (prefill: M ≥ 9; 16 × 8 for f16 weights in
 *   the nk form); "tile-shortk" for short K.
 * - "rows" kernels: 1 or 4 rows × 32 columns per workgroup (decode, batched decode: M ≤ 8; 1 × 16
 *   at M = 1 for f16 weights in the nk form).
 * - Both textures are bound as read-only storage textures: llvmpipe's image-load path is much
 *   cheaper per fetch than its sampler path (measured, same run: M = 1 2.1–2.7×, M = 16 1.3–2.3×
 *   over the sampled `texture_2d` reads this design began with).
 * - Decode (M = 1) is bound by that image load itself: one 8-lane load of rgba32float texels is
 *   ~45 x86 instructions in llvmpipe's code (bounds mask, y·stride, eight 16-byte loads and
 *   inserts, a 4×8 transpose; read from its JIT code with perf), against 4 multiply-adds per
 *   texel. Measured (standalone kernels, same run, f32 weights 1024×4096 … 1024×16384): a kernel
 *   that only sums the same texels is no faster than the matmul; 1–8 column groups per
 *   workgroup, two K texels per iteration, a fully unrolled K loop (no loop mask), lanes split
 *   over N with one shared activation texel, and explicit fma() were all equal or slower. With
 *   f16x8 texels the same loads carry twice the weights, but unpacking them (vpmovdw +
 *   vcvtph2ps per half, plus the multiply-adds, which LLVM does not contract) costs about as much
 *   again: without the unpack (wrong values, timing only) f16 ran 1.3–2.5× faster.
 */

import type { Gpu } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording, whenIdle } from "../../gpu/recording.ts";
import { bindingOf, type DType, type Tensor } from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import type { MatmulProblem } from "./problem.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 8;

/**
 * Weight pack from a storage chunk: `count` rows of `rowLen` elements from row `y0` of the chunk,
 * columns [c0, c0 + len), `width` texels per row.
 */
const PackParams = uniformLayout({
  rowLen: "u32",
  y0: "u32",
  c0: "u32",
  len: "u32",
  width: "u32",
  count: "u32",
});
/** Activation copy: `rows` rows of `K4` texels. */
const ActParams = uniformLayout({ rows: "u32", K4: "u32" });
/** Activation gather: `rows` rows of the K slice [k0, k0 + len) into `K4` texels per row. */
const GatherParams = uniformLayout({ rows: "u32", K: "u32", K4: "u32", k0: "u32", len: "u32" });
/**
 * The texture matmul: `M` rows × `N` columns of this column block, `K4` loop steps (texels of B
 * in the nk form, of A in the kn form), `G` texel columns of B (kn) and `KB` rows of B (kn: the
 * K slice's length); output row stride `ldc` and column `colOffset`; `hasBias`, and `accumulate`
 * (add into C: K slices after the first).
 */
const TextureParams = uniformLayout({
  M: "u32",
  N: "u32",
  K4: "u32",
  G: "u32",
  KB: "u32",
  ldc: "u32",
  colOffset: "u32",
  hasBias: "u32",
  accumulate: "u32",
  /** vec4s per activation row, when the kernel reads them from the storage buffer. */
  AK4: "u32",
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
/**
 * The forward (nk) form with f16 weights has its own tiles: its loop body holds a texel's 8
 * unpacked weights beside the accumulators, and on llvmpipe a 16 × 16 tile of those spills.
 * Measured with read-only storage textures (GFLOP/s, same run, K×N 4096×16384 / 4096×12288 /
 * 16384×4096): M = 1, 1×16 vs 1×32: 5.1 vs 4.5, 3.0 vs 2.1, 4.5 vs 2.9; M = 16, 16×8 vs 16×16:
 * 18.2 vs 9.6, 13.3 vs 10.0, 25.6 vs 19.2; M = 128 (4096×4096) 13.3 vs 9.5 and 20.2 (best) —
 * while f32 weights keep their 16 × 16 tile (16 × 8 at M = 16: 19.6 vs 22.8, 14.0 vs 16.4).
 */
export const ROWS_KERNEL_F16: TextureKernel = { name: "rows", R: 1, C4: 4, splitK: true };
/** Prefill and M ≥ 9 with f16 weights in the nk form: 16 × 8 (see {@link ROWS_KERNEL_F16}). */
export const TILE_KERNEL_F16: TextureKernel = { name: "tile", R: 16, C4: 2, splitK: true };

/**
 * How a weight is stored as a texture: "f32" rgba32float (4 weights per texel) or "f16x8" 8 halves
 * per 16-byte texel (see {@link f16Texel}), unpacked in the kernel. (Measured on both Vulkan and GL: rgba16float,
 * widened by the texture unit, was no faster than f32 and slower than f16x8.)
 */
type WeightLayout = "f32" | "f16x8";

/**
 * WGSL: f16x8 texels are rgba32float textures too, holding the bits of 8 halves, only moved and
 * bitcast to words in the kernels (never used as floats, so llvmpipe's flush-to-zero of denormal
 * operands does not touch them: a zero half beside a non-zero one is such a "denormal"; tested).
 * llvmpipe's image load of rgba32float is its cheap path: f16 ÷ f32 weights at M = 16 (h→4h, the
 * same harness, alternating rounds) was 0.65–0.8 with the texels read as rgba32uint and 0.9–1.0
 * read as rgba32float. Returns the WGSL of such a fetched texel as its 4 words.
 */
function f16Texel(fetch: string): string {
  return `bitcast<vec4<u32>>(${fetch})`;
}

function weightLayout(dtype: DType): WeightLayout {
  return dtype === "f16" ? "f16x8" : "f32";
}

/** Weights per texel. */
function texelWidth(layout: WeightLayout): number {
  return layout === "f16x8" ? 8 : 4;
}

function maxTexture(gpu: Gpu): number {
  return gpu.limits.maxTextureDimension2D ?? 8192;
}

/**
 * Elements of a row per column slice: the activations of a K slice (4 per texel) must fit one
 * texture row too, and the slice is a whole number of weight texels.
 */
function sliceElements(gpu: Gpu): number {
  return 4 * maxTexture(gpu);
}

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
  if (p.K === 0 || rows > maxTexture(rec.gpu)) return null;
  // kn: a texel holds outputs, so N is a whole number of texels in one column slice.
  const per = texelWidth(weightLayout(b.dtype));
  if (!p.transposeB && (p.N % per !== 0 || p.N > sliceElements(rec.gpu))) return null;
  // Three variants only: each costs a cold compile of 0.1–1 s on llvmpipe. Measured (4096×12288,
  // f16 weights, GFLOP/s): M = 1: 1×32 4.7, 4×32 3.7; M = 4: 1×32 5.3, 4×32 13.4, 16×16 5.6;
  // M = 8: 4×32 15.0, 16×16 11.7; M = 12: both 15–16.
  const nkF16 = p.transposeB && b.dtype === "f16";
  if (rows === 1) return nkF16 ? ROWS_KERNEL_F16 : ROWS_KERNEL;
  if (rows <= 8) return ROWS4_KERNEL;
  if (Math.ceil(Math.min(p.K, sliceElements(rec.gpu)) / 4) <= SHORT_K4) return SHORT_K_KERNEL;
  return nkF16 ? TILE_KERNEL_F16 : TILE_KERNEL;
}

/** Rows [start, start + count) of storage chunk `chunk`, from its row `y0`: one texture height. */
interface RowBlock {
  chunk: number;
  y0: number;
  start: number;
  count: number;
}

/** Columns [c0, c0 + len) of a storage row: one texture width. */
interface ColSlice {
  c0: number;
  len: number;
}

/** A 2-D tensor's texture blocks: `textures[r * cols.length + c]`. */
interface TextureGrid {
  rows: RowBlock[];
  cols: ColSlice[];
  textures: GPUTexture[];
}

function gridShape(gpu: Gpu, w: Tensor): { rows: RowBlock[]; cols: ColSlice[] } {
  const maxDim = maxTexture(gpu);
  const rows: RowBlock[] = [];
  w.chunks.forEach((c, chunk) => {
    for (let y0 = 0; y0 < c.rows; y0 += maxDim) {
      rows.push({ chunk, y0, start: c.rowStart + y0, count: Math.min(maxDim, c.rows - y0) });
    }
  });
  const rowLen = w.shape[1];
  const step = sliceElements(gpu);
  const cols: ColSlice[] = [];
  for (let c0 = 0; c0 < rowLen; c0 += step) cols.push({ c0, len: Math.min(step, rowLen - c0) });
  return { rows, cols };
}

interface PackedWeight extends TextureGrid {
  version: number;
  /** The recording that packs it; usable by others only once that one was submitted. */
  rec: Recording | null;
  ready: boolean;
  destroy(): void;
}

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 0;

function bufferId(buffer: GPUBuffer): number {
  let id = bufferIds.get(buffer);
  if (id === undefined) bufferIds.set(buffer, id = nextBufferId++);
  return id;
}

/** The attachment key of a tensor's texture (one per tensor: both kernel forms read it). */
function packedKey(w: Tensor, layout: WeightLayout): string {
  // Views of one tensor share its attachments: buffer and offset tell row slices apart.
  const at0 = `${bufferId(w.buffer)}+${w.byteOffset}`;
  return `matmul-texture:${w.shape.join("x")}@${at0}:${layout}:nk:rows`;
}

/** Creates the textures of a grid (not filled). */
function createGrid(
  gpu: Gpu,
  w: Tensor,
  layout: WeightLayout,
  extraUsage: number,
): TextureGrid {
  const { rows, cols } = gridShape(gpu, w);
  const per = texelWidth(layout);
  const format: GPUTextureFormat = "rgba32float"; // either layout: see f16Texel
  const textures: GPUTexture[] = [];
  for (const r of rows) {
    for (const c of cols) {
      textures.push(gpu.device.createTexture({
        size: [Math.ceil(c.len / per), Math.max(1, r.count)],
        format,
        // COPY_SRC: the texture can be read back (tests compare the two ways of filling it).
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
          GPUTextureUsage.COPY_SRC | extraUsage,
        label: `${w.label ?? "weight"} texture ${textures.length}`,
      }));
    }
  }
  return { rows, cols, textures };
}

/** Registers a grid on the tensor, replacing (and destroying) a stale one. */
function attachGrid(
  gpu: Gpu,
  w: Tensor,
  layout: WeightLayout,
  g: TextureGrid,
  rec: Recording | null,
): PackedWeight {
  const packed: PackedWeight = {
    ...g,
    version: w.meta.version,
    rec,
    ready: rec === null,
    // The weight may be released while a recording that samples the texture is still open.
    destroy: () => whenIdle(gpu, () => g.textures.forEach((t) => t.destroy())),
  };
  const key = packedKey(w, layout);
  (w.meta.attachments.get(key) as PackedWeight | undefined)?.destroy();
  w.meta.attachments.set(key, packed);
  if (rec) {
    rec.onSubmit.push(() => {
      packed.ready = rec.state === "submitted";
    });
  }
  return packed;
}

/** The texture grid of 2-D tensor `w` (any storage order), packed in this recording if stale. */
function packedWeight(rec: Recording, w: Tensor, layout: WeightLayout): TextureGrid {
  const cached = w.meta.attachments.get(packedKey(w, layout)) as PackedWeight | undefined;
  if (cached && cached.version === w.meta.version && (cached.ready || cached.rec === rec)) {
    return cached;
  }
  const f16 = layout === "f16x8";
  const per = texelWidth(layout);
  const format: GPUTextureFormat = "rgba32float"; // either layout: see f16Texel
  // Element (y, c0 + x) of the chunk; texels past the slice's end are zero.
  const pipeline = getPipeline(rec.gpu, `matmul-texture:pack:${layout}:rows`, () => `
${PackParams.wgsl}${declareInput(1, "W", f16 ? "u32" : "f32")}
@group(0) @binding(2) var T: texture_storage_2d<${format}, write>;
${f16 ? "fn half_bits(e: u32) -> u32 { return (W[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu; }" : ""}
fn el(y: u32, x: u32) -> ${f16 ? "u32" : "f32"} {
  if (x >= P.len) { return ${f16 ? "0u" : "0.0"}; }
  let e = (P.y0 + y) * P.rowLen + P.c0 + x;
  return ${f16 ? "half_bits(e)" : "W[e]"};
}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;       // one texel per invocation
  if (e >= P.width * P.count) { return; }
  let y = e / P.width;
  let x = (e - y * P.width) * ${per}u;
  ${
    f16
      ? `var t = vec4<u32>(0u);
  for (var q = 0u; q < 4u; q++) { t[q] = el(y, x + 2u * q) | (el(y, x + 2u * q + 1u) << 16u); }`
      : "let t = vec4<f32>(el(y, x), el(y, x + 1u), el(y, x + 2u), el(y, x + 3u));"
  }
  textureStore(T, vec2<u32>(e - y * P.width, y), ${f16 ? "bitcast<vec4<f32>>(t)" : "t"});
}
`);
  const g = createGrid(rec.gpu, w, layout, GPUTextureUsage.STORAGE_BINDING);
  g.rows.forEach((r, ri) => {
    g.cols.forEach((c, ci) => {
      const texture = g.textures[ri * g.cols.length + ci];
      const width = texture.width;
      recordDispatch(
        rec,
        pipeline,
        PackParams.pack({
          rowLen: w.shape[1],
          y0: r.y0,
          c0: c.c0,
          len: c.len,
          width,
          count: r.count,
        }),
        [bindingOf(w, r.chunk), texture.createView()],
        grid(rec.gpu, Math.ceil((width * r.count) / 64)),
      );
    });
  });
  return attachGrid(rec.gpu, w, layout, g, rec);
}

/**
 * A reusable rgba32float texture holding activations of `rows × K` (A stored [K, rows] when
 * `transposed`), the K slice [k0, k0 + len) in `K4` texels per row (zero past the slice). Heights
 * are rounded up to a power of two so that varying sequence lengths share a few textures
 * (kernels clamp row reads to the real M, so the unused rows are never read).
 */
function activationTexture(
  rec: Recording,
  a: Tensor,
  rows: number,
  K: number,
  transposed: boolean,
  slice: ColSlice,
  K4: number,
): GPUTexture {
  const maxDim = maxTexture(rec.gpu);
  const height = Math.min(maxDim, 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
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
  if (transposed || K4 * 4 !== K || slice.len !== K) {
    recordGatherActivations(rec, a, texture, rows, K, transposed, slice, K4);
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
    ActParams.pack({ rows, K4 }),
    [bindingOf(a), texture.createView()],
    grid(rec.gpu, Math.ceil((rows * K4) / 64)),
  );
  return texture;
}

/** The activation pack for A stored [K, rows], a K slice or padding: 4 gathered k's per texel. */
function recordGatherActivations(
  rec: Recording,
  a: Tensor,
  texture: GPUTexture,
  rows: number,
  K: number,
  transposed: boolean,
  slice: ColSlice,
  K4: number,
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
  recordDispatch(
    rec,
    pipeline,
    GatherParams.pack({ rows, K, K4, k0: slice.c0, len: slice.len }),
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

/** The two kernel forms (see the module doc): B stored [N, K] ("nk") or [K, N] ("kn"). */
type Form = "nk" | "kn";

/**
 * The kn loop body (per texel kk of A: 4 k-steps): column vectors of B at row k, texel column
 * base `g`, as vec4 `b{c}_{j}`; the 4 vectors of each column group form a mat4x4, so each
 * accumulator is read and written once per 4 k-steps (`acc += B·a`) instead of once per k-step:
 * llvmpipe keeps only a few accumulators in registers, so that traffic was the limit (measured
 * +20–50% at every shape).
 */
function knBody(f16: boolean, R: number, C4: number): string[] {
  const body: string[] = [];
  const g = f16 ? "n0 / 8u" : "n0 / 4u";
  for (let j = 0; j < 4; j++) {
    const k = `min(kk * 4u + ${j}u, P.KB - 1u)`;
    if (f16) {
      for (let q = 0; q < C4 / 2; q++) {
        const t = `t${q}_${j}`;
        body.push(
          `let ${t} = ${
            f16Texel(`textureLoad(Bt, vec2<u32>(min(${g} + ${q}u, P.G - 1u), ${k}))`)
          };`,
          `let b${2 * q}_${j} = vec4<f32>(unpack2x16float(${t}.x), unpack2x16float(${t}.y));`,
          `let b${2 * q + 1}_${j} = vec4<f32>(unpack2x16float(${t}.z), unpack2x16float(${t}.w));`,
        );
      }
    } else {
      for (let c = 0; c < C4; c++) {
        body.push(
          `let b${c}_${j} = textureLoad(Bt, vec2<u32>(min(${g} + ${c}u, P.G - 1u), ${k}));`,
        );
      }
    }
  }
  for (let c = 0; c < C4; c++) {
    body.push(`let B${c} = mat4x4<f32>(b${c}_0, b${c}_1, b${c}_2, b${c}_3);`);
  }
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) body.push(`acc${r}_${c} += B${c} * a${r};`);
  }
  return body;
}

/**
 * The nk loop body (per texel kk of B: 8 k-steps in f16, 4 in f32): each output column's texel
 * holds its contraction values, so 4 columns' texels form mat4x4s whose columns are dotted with
 * the activation texels (`a · B`): again one accumulator update per 4 k-steps. Column groups are
 * emitted one after the other so that only one group's weights are live at a time.
 */
function nkBody(f16: boolean, R: number, C4: number, aLoad: ALoad): string[] {
  const body: string[] = [];
  const n = (c: number, i: number) => `min(n0 + ${4 * c + i}u, P.N - 1u)`;
  const mat = (v: string, c: number) =>
    `mat4x4<f32>(${v}${c}_0, ${v}${c}_1, ${v}${c}_2, ${v}${c}_3)`;
  if (!f16) {
    for (let c = 0; c < C4; c++) {
      for (let i = 0; i < 4; i++) {
        body.push(`let l${c}_${i} = textureLoad(Bt, vec2<u32>(kk, ${n(c, i)}));`);
      }
      body.push(`let L${c} = ${mat("l", c)};`);
      for (let r = 0; r < R; r++) body.push(`acc${r}_${c} += a${r} * L${c};`);
    }
    return body;
  }
  // f16: the weight texels first, then the low halves against the first activation texels and
  // the high halves against the second, so only one activation texel per row is live at a time.
  for (let c = 0; c < C4; c++) {
    for (let i = 0; i < 4; i++) {
      body.push(`let t${c}_${i} = ${f16Texel(`textureLoad(Bt, vec2<u32>(kk, ${n(c, i)}))`)};`);
    }
  }
  for (const [half, lanes, sfx] of [["l", "xy", ""], ["h", "zw", "h"]] as const) {
    for (let r = 0; r < R; r++) {
      const row = `min(m0 + ${r}u, P.M - 1u)`;
      const x = sfx ? "2u * kk + 1u" : "2u * kk";
      body.push(`let a${r}${sfx} = ${aLoad(x, row)};`);
    }
    for (let c = 0; c < C4; c++) {
      for (let i = 0; i < 4; i++) {
        const t = `t${c}_${i}`;
        body.push(
          `let ${half}${c}_${i} = vec4<f32>(unpack2x16float(${t}.${
            lanes[0]
          }), unpack2x16float(${t}.${lanes[1]}));`,
        );
      }
      const M = `${half.toUpperCase()}${c}`;
      body.push(`let ${M} = ${mat(half, c)};`);
      for (let r = 0; r < R; r++) body.push(`acc${r}_${c} += a${r}${sfx} * ${M};`);
    }
  }
  return body;
}

/**
 * Where the kernels read the activations: the packed texture, or (the rows kernels in the nk form,
 * {@link actFromBuffer}) the f32 storage buffer itself, `P.AK4` vec4s per row.
 */
type ALoad = (x: string, row: string) => string;
const textureALoad: ALoad = (x, row) => `textureLoad(At, vec2<u32>(${x}, ${row}))`;
const bufferALoad: ALoad = (x, row) => `A[${row} * P.AK4 + ${x}]`;

function kernelCode(
  kind: TextureKernel,
  layout: WeightLayout,
  form: Form,
  bias: DType,
  actBuffer = false,
): string {
  const f16 = layout === "f16x8";
  const aLoad = actBuffer ? bufferALoad : textureALoad;
  const { R, C4 } = kind;
  const cols = C4 * 4;
  const accDecl: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) accDecl.push(`var acc${r}_${c} = vec4<f32>(0.0);`);
  }
  // A's texels of this step: one (kn; nk f32) or two (nk f16: 8 k's per weight texel).
  // (nk f16 loads its two activation texels per row inside its body.)
  const aLoads: string[] = [];
  for (let r = 0; r < R && !(form === "nk" && f16); r++) {
    aLoads.push(`let a${r} = ${aLoad("kk", `min(m0 + ${r}u, P.M - 1u)`)};`);
  }
  const body = [...aLoads, ...(form === "nk" ? nkBody(f16, R, C4, aLoad) : knBody(f16, R, C4))];
  return `
${TextureParams.wgsl}@group(0) @binding(1) ${
    actBuffer
      ? "var<storage, read> A: array<vec4<f32>>;"
      : "var At: texture_storage_2d<rgba32float, read>;"
  }
@group(0) @binding(2) var Bt: texture_storage_2d<rgba32float, read>;
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
 * Whether the kernel reads the activations straight from their storage buffer instead of a packed
 * texture: decode (one row, {@link ROWS_KERNEL}) with f32 weights in the layer form, when the row is
 * whole texels of one column slice. There the weight texels are 32 of the kernel's 33 loads per
 * step, so the activation's load path hardly matters to the kernel, while its pack was one more
 * dispatch per matmul (33 of the ~100 of the small model's decode step; llvmpipe pays ~40 µs to
 * start one). Not at 2–8 rows (4 of 36 loads; the per-lane storage loads were slower than the
 * texture's there: h→4h and the head at M = 4, 1024 wide, 0.5–0.6× in the same run) nor for f16
 * weights (2 of 18 loads; mixed results at M = 1).
 */
function actFromBuffer(
  kind: TextureKernel,
  layout: WeightLayout,
  form: Form,
  a: Tensor,
  p: MatmulProblem,
  slices: number,
): boolean {
  return kind === ROWS_KERNEL && layout === "f32" && form === "nk" && !p.transposeA &&
    slices === 1 && p.K % 4 === 0 && a.dtype === "f32";
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
  const per = texelWidth(layout);
  const form: Form = p.transposeB ? "nk" : "kn";
  const g = packedWeight(rec, b, layout);
  const actBuffer = actFromBuffer(kind, layout, form, a, p, g.cols.length);
  const variant = `${kind.name}${kind.R}x${kind.C4}${actBuffer ? ":abuf" : ""}`;
  // No bias: bind a zero word in its place (zero in either dtype), so both cases share the
  // pipeline of the weight's dtype: every variant costs seconds of cold compile on llvmpipe.
  const biasBinding = bias ? bindingOf(bias) : zeroWord(rec);
  const biasDtype = bias?.dtype ?? b.dtype;
  const pipeline = getPipeline(
    rec.gpu,
    `matmul-texture:${variant}:${layout}:${form}:${biasDtype}`,
    () => kernelCode(kind, layout, form, biasDtype, actBuffer),
  );
  const cols = kind.C4 * 4;
  let first = true;
  const dispatch = (texture: GPUTexture, act: GPUTexture | null, n: number, start: number, params: {
    K4: number;
    G: number;
    KB: number;
  }) => {
    recordDispatch(
      rec,
      pipeline,
      TextureParams.pack({
        M: rows,
        N: n,
        ...params,
        ldc: p.N,
        colOffset: start,
        hasBias: bias && first ? 1 : 0,
        accumulate: first ? 0 : 1,
        AK4: actBuffer ? p.K / 4 : 0,
      }),
      [act ? act.createView() : bindingOf(a), texture.createView(), bindingOf(out), biasBinding],
      [Math.ceil(n / (kind.splitK ? cols : cols * WG)), Math.ceil(rows / kind.R)],
    );
  };
  if (form === "nk") {
    // Column slices of W are K slices (each adds into the output); row blocks are output columns.
    g.cols.forEach((slice, ci) => {
      const texels = Math.ceil(slice.len / per);
      const act = actBuffer
        ? null
        : activationTexture(rec, a, rows, p.K, p.transposeA, slice, texels * (per / 4));
      g.rows.forEach((r, ri) => {
        dispatch(g.textures[ri * g.cols.length + ci], act, r.count, r.start, {
          K4: texels,
          G: 0,
          KB: 0,
        });
      });
      first = false;
    });
  } else {
    // Row blocks of B [K, N] are K slices; N is one column slice (textureKernelFor).
    for (const [ri, r] of g.rows.entries()) {
      const K4 = Math.ceil(r.count / 4);
      const slice = { c0: r.start, len: r.count };
      const act = activationTexture(rec, a, rows, p.K, p.transposeA, slice, K4);
      dispatch(g.textures[ri], act, p.N, 0, { K4, G: p.N / per, KB: r.count });
      first = false;
    }
  }
}

/**
 * Packs weight `w` ([N, K], the way `linear` reads it: y = x·Wᵀ) into the textures the forward
 * kernels sample, in `rec`, exactly as a first forward would (same cache key), so that loading
 * pays for it instead of the first forward. Returns false, packing nothing, when the texture
 * kernels cannot take it. The caller first checks that the forward reads this weight as a
 * texture at all (`forwardPacksWeight` in matmul.ts: a software adapter, a weight big enough, no
 * other design forced).
 */
export function prepackWeight(rec: Recording, w: Tensor): boolean {
  if (w.shape.length !== 2 || w.base || w.shape[1] === 0) return false;
  packedWeight(rec, w, weightLayout(w.dtype));
  return true;
}

/** Fills the textures of a weight from host memory, row range by row range (see below). */
export interface HostPackedWeight {
  /**
   * Writes rows [row, row + n) of the weight from their row-major bytes (the weight's dtype: f16
   * bits or f32; n = bytes / row bytes) into its textures, whatever chunks and texture blocks
   * they span. The bytes may be reused by the caller afterwards.
   */
  writeRows(row: number, bytes: Uint8Array): void;
  /** Writes storage chunk `i`'s rows (its bytes, as {@link writeRows}). */
  writeChunk(i: number, bytes: Uint8Array): void;
}

/**
 * Bytes per write (`writeTexture`, `writeBuffer`) of a loaded weight. The runtime copies each into a
 * staging buffer of its size: small ones are recycled, large ones are fresh memory whose page faults
 * the copy pays. Measured (llvmpipe, 128 MiB weight, CPU seconds per GB, fresh texture): 2–8 MiB
 * pieces 0.82–0.89, 32 MiB 0.97–1.27, 128 MiB 1.34–1.42.
 */
export const WRITE_PIECE_BYTES = 8 * 2 ** 20;

/** Scratch for rows that are not a whole number of texels (shared: see writeRows). */
let padScratch = new Uint8Array(0);

/**
 * The textures the forward kernels sample for weight `w` ([N, K], read as y = x·Wᵀ), registered
 * under the key {@link prepackWeight} uses, filled from host memory: a loader streams a weight
 * piece by piece from its file into its textures, and the weight never needs a storage buffer.
 * The texture is the storage's own row-major order, so each block is one `writeTexture` of the
 * file's bytes per WRITE_PIECE_BYTES (rows are copied only when a row is not a whole number of
 * texels, to add the zero padding). Returns null when the texture kernels cannot take the weight
 * (the caller checks `forwardPacksWeight` first, as for {@link prepackWeight}).
 */
export function hostPackedWeight(gpu: Gpu, w: Tensor): HostPackedWeight | null {
  if (w.shape.length !== 2 || w.base || w.shape[1] === 0) return null;
  const [N, K] = w.shape;
  const layout = weightLayout(w.dtype);
  const per = texelWidth(layout);
  const el = layout === "f16x8" ? 2 : 4;
  const rowBytes = K * el;
  const g = createGrid(gpu, w, layout, GPUTextureUsage.COPY_DST);
  attachGrid(gpu, w, layout, g, null);
  const queue = gpu.device.queue;
  const writeRows = (row: number, bytes: Uint8Array) => {
    const n = bytes.byteLength / rowBytes;
    if (!Number.isInteger(n) || row < 0 || row + n > N) {
      throw new RangeError(
        `hostPackedWeight ${w.label ?? ""}: ${bytes.byteLength} bytes at row ${row} are not ` +
          `whole rows of ${rowBytes} bytes within ${N} rows`,
      );
    }
    g.rows.forEach((r, ri) => {
      // The part of [row, row + n) in this texture block.
      const lo = Math.max(row, r.start), hi = Math.min(row + n, r.start + r.count);
      if (lo >= hi) return;
      const y0 = lo - r.start, count = hi - lo;
      g.cols.forEach((s, ci) => {
        const texture = g.textures[ri * g.cols.length + ci];
        const width = texture.width;
        const first = (lo - row) * rowBytes + s.c0 * el;
        if (s.len === width * per) {
          // Whole texels: the file's bytes as they are, row stride = the stored row, in pieces
          // of WRITE_PIECE_BYTES, each submitted (see there).
          const rowsPer = Math.max(1, Math.floor(WRITE_PIECE_BYTES / rowBytes));
          for (let y = 0; y < count; y += rowsPer) {
            const h = Math.min(rowsPer, count - y);
            const at = first + y * rowBytes;
            queue.writeTexture(
              { texture, origin: [0, y0 + y] },
              bytes.subarray(at, at + (h - 1) * rowBytes + s.len * el) as Uint8Array<ArrayBuffer>,
              { bytesPerRow: rowBytes, rowsPerImage: h },
              [width, h],
            );
            queue.submit([]);
          }
          return;
        }
        // A row's last texel runs past its end: copy rows, zero-padded to whole texels.
        const paddedRow = width * 16;
        if (padScratch.length < paddedRow * count) padScratch = new Uint8Array(paddedRow * count);
        const out = padScratch.subarray(0, paddedRow * count);
        out.fill(0);
        for (let y = 0; y < count; y++) {
          const from = first + y * rowBytes;
          out.set(bytes.subarray(from, from + s.len * el), y * paddedRow);
        }
        queue.writeTexture(
          { texture, origin: [0, y0] },
          out,
          { bytesPerRow: paddedRow, rowsPerImage: count },
          [width, count],
        );
      });
    });
  };
  return {
    writeRows,
    writeChunk(i: number, bytes: Uint8Array) {
      const c = w.chunks[i];
      if (bytes.byteLength !== c.rows * rowBytes) {
        throw new RangeError(
          `hostPackedWeight ${w.label ?? ""}: chunk ${i} needs ${c.rows * rowBytes} bytes, got ` +
            `${bytes.byteLength}`,
        );
      }
      writeRows(c.rowStart, bytes);
    },
  };
}

/**
 * Row gather from a weight's texture: `n` ids, rows of `h`; this texture holds rows
 * [rowStart, rowStart + rows) of `V`, columns [c0, c0 + len) in `W` texels; `first` is 1 on the
 * first dispatch (it marks out-of-range ids).
 */
const GatherRowsParams = uniformLayout({
  n: "u32",
  h: "u32",
  W: "u32",
  c0: "u32",
  len: "u32",
  rowStart: "u32",
  rows: "u32",
  V: "u32",
  first: "u32",
});

/**
 * `out[i, :] = table[ids[i], :]` read from the texture of a [V, h] weight whose storage was
 * dropped (a tied output layer on a software adapter: the lookup and the head share one copy,
 * the texture the head's matmul reads). Same results as the buffer lookup (embedding.ts): ids
 * outside [0, V) give rows of NaN. Returns null when the table has no texture.
 */
export function textureEmbedding(
  rec: Recording,
  table: Tensor,
  ids: Tensor,
  out?: Tensor,
): Tensor | null {
  if (table.shape.length !== 2 || table.base) return null;
  const layout = weightLayout(table.dtype);
  const g = table.meta.attachments.get(packedKey(table, layout)) as PackedWeight | undefined;
  if (!g || g.version !== table.meta.version || !(g.ready || g.rec === rec)) return null;
  expectDtype(ids, "embedding", "ids", ["i32", "u32"]);
  const [V, h] = table.shape;
  const n = ids.shape.reduce((a, b) => a * b, 1);
  const y = outputTensor(rec, "embedding", [...ids.shape, h], out);
  if (n === 0 || h === 0) return y;
  const f16 = layout === "f16x8";
  const per = texelWidth(layout);
  const pipeline = getPipeline(rec.gpu, `matmul-texture:rows-gather:${layout}:${ids.dtype}`, () => `
${GatherRowsParams.wgsl}@group(0) @binding(1) var Tt: texture_2d<f32>;
${declareInput(2, "I", ids.dtype)}
${declareOutput(3, "Y")}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;       // one texel of one output row per invocation
  if (e >= P.n * P.W) { return; }
  let i = e / P.W;
  let j = e - i * P.W;
  let base = i * P.h + P.c0 + j * ${per}u;
  let count = min(${per}u, P.len - j * ${per}u);
  let id = i32(ld_I(i));
  if (id < 0 || u32(id) >= P.V) {
    if (P.first == 1u) {
      for (var q = 0u; q < count; q++) { Y[base + q] = bitcast<f32>(0x7fc00000u); }
    }
    return;
  }
  let r = u32(id);
  if (r < P.rowStart || r >= P.rowStart + P.rows) { return; }
  let t = ${
    f16
      ? f16Texel("textureLoad(Tt, vec2<u32>(j, r - P.rowStart), 0)")
      : "textureLoad(Tt, vec2<u32>(j, r - P.rowStart), 0)"
  };
  ${
    f16
      ? `let v = array<vec2<f32>, 4>(unpack2x16float(t.x), unpack2x16float(t.y),
    unpack2x16float(t.z), unpack2x16float(t.w));
  for (var q = 0u; q < count; q++) { Y[base + q] = v[q / 2u][q % 2u]; }`
      : "for (var q = 0u; q < count; q++) { Y[base + q] = t[q]; }"
  }
}
`);
  g.rows.forEach((r, ri) => {
    g.cols.forEach((c, ci) => {
      const texture = g.textures[ri * g.cols.length + ci];
      recordDispatch(
        rec,
        pipeline,
        GatherRowsParams.pack({
          n,
          h,
          W: texture.width,
          c0: c.c0,
          len: c.len,
          rowStart: r.start,
          rows: r.count,
          V,
          first: ri === 0 ? 1 : 0,
        }),
        [texture.createView(), bindingOf(ids), bindingOf(y)],
        grid(rec.gpu, Math.ceil((n * texture.width) / 64)),
      );
    });
  });
  return y;
}
