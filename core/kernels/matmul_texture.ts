/**
 * The matmul design for software adapters (llvmpipe/lavapipe), from CONVENTIONS.md's
 * measurements: Mesa turns every storage-buffer load at a run-time address into a bounds-checked
 * scalar loop per lane, while one texture fetch returns 16 bytes per lane. So the activations and
 * the weight are read as textures, each invocation keeps a large register tile, workgroups are 8
 * wide (one SIMD batch) and nothing uses workgroup memory.
 *
 * - Weight W [N, K] is repacked once into a texture of width K ("k-major blocked"): texel (k, g)
 *   holds W[4g..4g+3, k] as rgba32float (f32 weights) or W[8g..8g+7, k] as 8 halves in an
 *   rgba32uint texel (f16 weights). The texture is cached on the weight tensor (see
 *   `Tensor.meta`) and rebuilt when the weight is written.
 * - Activations A [M, K] are copied per call into an rgba32float texture of width K/4.
 * - "tile" kernel: 16 rows × 16 columns per invocation (prefill, large M).
 * - "rows" kernel: 1 row × 32 columns per invocation (decode: M ≤ 3).
 */

import { getPipeline } from "../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../gpu/recording.ts";
import { bindingOf, type DType, type Tensor } from "../tensor/tensor.ts";
import { declareInput, declareOutput, WG_BUILTINS, WG_INDEX } from "./common.ts";
import type { MatmulProblem } from "./matmul.ts";

const WG = 8;

/** Which texture kernel a problem gets (or null: use the generic kernel). */
export type TextureKernel = { kind: "tile" } | { kind: "rows"; rows: 1 };

/** Chooses the texture kernel for a problem, or null when its shape does not fit the design. */
export function textureKernelFor(
  rec: Recording,
  a: Tensor,
  b: Tensor,
  p: MatmulProblem,
  out: Tensor,
): TextureKernel | null {
  if (!p.transposeB || !p.sharedB || p.transposeA) return null;
  if (a.chunks.length > 1 || out.chunks.length > 1) return null;
  const rows = p.batch * p.M;
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  if (p.K % 4 !== 0 || p.K === 0 || p.K > maxDim || p.K / 4 > maxDim || rows > maxDim) return null;
  const per = b.dtype === "f16" ? 8 : 4;
  for (const c of b.chunks) {
    if (c.rows % per !== 0 || c.rows / per > maxDim) return null;
  }
  // Two variants only: each costs a cold compile of 0.1–5 s on llvmpipe. Measured (4096×12288,
  // f16 weights): the tile kernel costs the same for any M ≤ 16, about 3.5× one "rows" pass.
  if (rows <= 3) return { kind: "rows", rows: 1 };
  return { kind: "tile" };
}

interface PackedWeight {
  version: number;
  textures: GPUTexture[];
  /** The recording that packs it; usable by others only once that one was submitted. */
  rec: Recording;
  ready: boolean;
  destroy(): void;
}

/** The texture form of each chunk of weight `w` [N, K], packed in this recording if stale. */
function packedWeight(rec: Recording, w: Tensor, K: number): GPUTexture[] {
  const key = `matmul-texture:${w.shape.join("x")}`;
  const cached = w.meta.attachments.get(key) as PackedWeight | undefined;
  if (cached && cached.version === w.meta.version && (cached.ready || cached.rec === rec)) {
    return cached.textures;
  }
  cached?.destroy();
  const f16 = w.dtype === "f16";
  const per = f16 ? 8 : 4;
  const device = rec.gpu.device;
  const format: GPUTextureFormat = f16 ? "rgba32uint" : "rgba32float";
  const pipeline = getPipeline(rec.gpu, `matmul-texture:pack:${w.dtype}`, () => `
struct Params { N: u32, K: u32, pad0: u32, pad1: u32 };
@group(0) @binding(0) var<uniform> P: Params;
${declareInput(1, "W", f16 ? "u32" : "f32")}
@group(0) @binding(2) var T: texture_storage_2d<${format}, write>;
${f16 ? "fn half_bits(e: u32) -> u32 { return (W[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu; }" : ""}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;       // one texel per invocation
  let groups = P.N / ${per}u;
  if (e >= groups * P.K) { return; }
  let g = e / P.K;
  let k = e - g * P.K;
  let n = g * ${per}u;
  ${
    f16
      ? `var t: vec4<u32>;
  for (var q = 0u; q < 4u; q++) {
    t[q] = half_bits((n + 2u * q) * P.K + k) | (half_bits((n + 2u * q + 1u) * P.K + k) << 16u);
  }
  textureStore(T, vec2<u32>(k, g), t);`
      : `textureStore(T, vec2<u32>(k, g), vec4<f32>(W[n * P.K + k], W[(n + 1u) * P.K + k],
    W[(n + 2u) * P.K + k], W[(n + 3u) * P.K + k]));`
  }
}
`);
  const textures = w.chunks.map((c, i) => {
    const texture = device.createTexture({
      size: [K, c.rows / per],
      format,
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
      label: `${w.label ?? "weight"} texture ${i}`,
    });
    recordDispatch(
      rec,
      pipeline,
      [c.rows, K, 0, 0],
      [bindingOf(w, i), texture.createView()],
      grid(rec.gpu, Math.ceil(((c.rows / per) * K) / 64)),
    );
    return texture;
  });
  const packed: PackedWeight = {
    version: w.meta.version,
    textures,
    rec,
    ready: false,
    destroy: () => textures.forEach((t) => t.destroy()),
  };
  rec.onSubmit.push(() => {
    packed.ready = rec.state === "submitted";
  });
  w.meta.attachments.set(key, packed);
  return textures;
}

/**
 * A reusable rgba32float texture holding activations of `rows × K`. Heights are rounded up to a
 * power of two so that varying sequence lengths share a few textures (kernels clamp row reads to
 * the real M, so the unused rows are never read).
 */
function activationTexture(rec: Recording, a: Tensor, rows: number, K: number): GPUTexture {
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  const height = Math.min(maxDim, 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
  const key = `matmul-texture:act:${K}x${height}`;
  let texture = rec.gpu.cache.get(key) as GPUTexture | undefined;
  if (!texture) {
    texture = rec.gpu.device.createTexture({
      size: [K / 4, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
      label: key,
    });
    rec.gpu.cache.set(key, texture);
  }
  const pipeline = getPipeline(rec.gpu, "matmul-texture:act", () => `
struct Params { rows: u32, K4: u32, pad0: u32, pad1: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
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
    [rows, K / 4, 0, 0],
    [bindingOf(a), texture.createView()],
    grid(rec.gpu, Math.ceil((rows * K) / 4 / 64)),
  );
  return texture;
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

/** Column vectors of B at k-index expression `k` and column group base `g` (vec4 each). */
function loadB(f16: boolean, count: number, k: string, g: string): string {
  const lines: string[] = [];
  if (f16) {
    for (let q = 0; q < count / 2; q++) {
      lines.push(
        `let t${q} = textureLoad(Bt, vec2<u32>(${k}, min(${g} + ${q}u, P.G - 1u)), 0);`,
        `let b${2 * q} = vec4<f32>(unpack2x16float(t${q}.x), unpack2x16float(t${q}.y));`,
        `let b${2 * q + 1} = vec4<f32>(unpack2x16float(t${q}.z), unpack2x16float(t${q}.w));`,
      );
    }
  } else {
    for (let c = 0; c < count; c++) {
      lines.push(`let b${c} = textureLoad(Bt, vec2<u32>(${k}, min(${g} + ${c}u, P.G - 1u)), 0);`);
    }
  }
  return lines.join("\n      ");
}

function kernelCode(kind: TextureKernel, f16: boolean, bias: DType): string {
  const R = kind.kind === "tile" ? 16 : kind.rows;
  const C4 = kind.kind === "tile" ? 4 : 8; // vec4 column groups per invocation
  const cols = C4 * 4;
  const accDecl: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) accDecl.push(`var acc${r}_${c} = vec4<f32>(0.0);`);
  }
  const aLoads = Array.from(
    { length: R },
    (_, r) => `let a${r} = textureLoad(At, vec2<u32>(kk, min(m0 + ${r}u, P.M - 1u)), 0);`,
  );
  // The tile kernel keeps the 4 k-steps of a texel as a loop (unrolled, its compile took
  // seconds longer for no measurable gain); the small rows kernel unrolls them.
  const g = f16 ? "n0 / 8u" : "n0 / 4u";
  const step = (j: string) => {
    const body: string[] = [loadB(f16, C4, `kk * 4u + ${j}`, g)];
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C4; c++) body.push(`acc${r}_${c} += a${r}[${j}] * b${c};`);
    }
    return body.join("\n      ");
  };
  const steps = kind.kind === "tile"
    ? [`for (var j = 0u; j < 4u; j++) {\n      ${step("j")}\n    }`]
    : [0, 1, 2, 3].map((j) => `{\n      ${step(`${j}u`)}\n    }`);
  const stores: string[] = [];
  for (let r = 0; r < R; r++) {
    stores.push(`if (m0 + ${r}u < P.M) {`);
    for (let c = 0; c < C4; c++) {
      stores.push(`  store4(m0 + ${r}u, n0 + ${c * 4}u, acc${r}_${c});`);
    }
    stores.push("}");
  }
  return `
struct Params { M: u32, N: u32, K4: u32, G: u32, ldc: u32, colOffset: u32, hasBias: u32, pad1: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var At: texture_2d<f32>;
@group(0) @binding(2) var Bt: texture_2d<${f16 ? "u32" : "f32"}>;
${declareOutput(3, "C")}
${declareInput(4, "bias", bias)}
fn store4(m: u32, n: u32, v: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    if (n + j < P.N) {
      var bj = 0.0;
      if (P.hasBias == 1u) { bj = ld_bias(P.colOffset + n + j); }
      C[m * P.ldc + P.colOffset + n + j] = v[j] + bj;
    }
  }
}
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * ${cols}u;
  let m0 = gid.y * ${R}u;
  if (n0 >= P.N || m0 >= P.M) { return; }
  ${accDecl.join("\n  ")}
  for (var kk = 0u; kk < P.K4; kk++) {
    ${aLoads.join("\n    ")}
    ${steps.join("\n    ")}
  }
  ${stores.join("\n  ")}
}
`;
}

/** Records the texture matmul `out = A · Wᵀ (+ bias)`; the caller checked {@link textureKernelFor}. */
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
  const f16 = b.dtype === "f16";
  const weights = packedWeight(rec, b, p.K);
  const act = activationTexture(rec, a, rows, p.K);
  const variant = kind.kind === "tile" ? "tile" : `rows${kind.rows}`;
  // No bias: bind a zero word in its place, so both cases share one pipeline.
  const biasBinding = bias ? bindingOf(bias) : zeroWord(rec);
  const biasDtype = bias?.dtype ?? "f32";
  const pipeline = getPipeline(
    rec.gpu,
    `matmul-texture:${variant}:${b.dtype}:${biasDtype}`,
    () => kernelCode(kind, f16, biasDtype),
  );
  const R = kind.kind === "tile" ? 16 : kind.rows;
  const cols = kind.kind === "tile" ? 16 : 32;
  const actView = act.createView();
  b.chunks.forEach((c, i) => {
    const resources = [actView, weights[i].createView(), bindingOf(out), biasBinding];
    recordDispatch(
      rec,
      pipeline,
      [rows, c.rows, p.K / 4, c.rows / (f16 ? 8 : 4), p.N, c.rowStart, bias ? 1 : 0, 0],
      resources,
      [Math.ceil(c.rows / cols / WG), Math.ceil(rows / R)],
    );
  });
}
