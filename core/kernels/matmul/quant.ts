/**
 * Weight-only quantized matmul `y = x · Wᵀ + b` for int8 / int4 weights (ChatGLM-6B's format,
 * core/quant), dequantizing in registers with f32 accumulation; the weight stays quantized in
 * memory. Two designs, chosen by how the weight was uploaded (core/quant/gpu_weight.ts):
 *
 * - texture (software adapters): weight texels row-major as the checkpoint stores them (texel
 *   (j, n) = 16 bytes of row n: 32 int4 or 16 int8 values along K), read as read-only storage
 *   textures: on llvmpipe a fetch is the cost (measured: the weight fetches were ~2/3 of the int4
 *   kernel's time, and a storage-texture fetch is ~1.4× cheaper than a sampled one), and a fetch
 *   brings 4× (int4) or 2× (int8) the weights of an f16 texel. The rest is the unpacking, 2
 *   operations per weight (see `positions`): mask, convert, with activations stored pre-multiplied
 *   per position and the zero point taken out of the sum once. A group of 4 output rows' word w
 *   is one vec4<u32>, so each position's 4 values multiply one activation scalar (4 FMAs). Each
 *   workgroup of 8 shares one output tile and splits K (every 8th texel column); tiles per
 *   `tileOf`.
 * - buffer (hardware adapters): storage buffers; 64 invocations split a row's words (coalesced
 *   reads), each keeping 4 output rows × 1 or 4 activation rows, summed through workgroup memory.
 *
 * Per-row scales multiply the finished sums; group-wise scales multiply each group's partial.
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import { bindingOf, type DType, numel, type Tensor } from "../../tensor/tensor.ts";
import type { QuantBufferStorage, QuantTextureStorage } from "../../quant/gpu_weight.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";

const WG = 8;

/** A texture-design tile: `R` activation rows × `C4` groups of 4 output rows per workgroup. */
interface Tile {
  R: number;
  C4: number;
}
type TileName = "decode" | "small" | "prefill";
/**
 * Measured at M = 1 (ChatGLM-6B's shapes, llvmpipe): int4 16 output rows per workgroup beat 32 by
 * 5–15%, int8 32 beat 16 by 10–20%. Prefill (4096², M 64 and 256): about the f16 kernel's time,
 * 16 × 16 no worse than 16 × 8 or 8 × 16 within the noise of a loaded machine.
 */
function tileOf(name: TileName, bits: 4 | 8): Tile {
  if (name === "decode") return { R: 1, C4: bits === 4 ? 4 : 8 };
  return name === "small" ? { R: 4, C4: 4 } : { R: 16, C4: 4 };
}

/** True when `w` is a quantized weight (dtype q8/q4). */
export function isQuantized(w: Tensor): boolean {
  return w.quant !== undefined;
}

/** `x[..., K] · Wᵀ (+ bias)` for a quantized W [N, K] → f32 [..., N]. */
export function quantLinear(
  rec: Recording,
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  out?: Tensor,
  options: { tile?: "decode" | "small" | "prefill" } = {},
): Tensor {
  const q = w.quant;
  if (!q) throw new GpuError(`quantLinear: ${w.label ?? "weight"} is not quantized`);
  expectDtype(x, "quantLinear", "x", ["f32"]);
  const [N, K] = w.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== K) {
    throw new GpuError(
      `quantLinear: x [${x.shape.join(", ")}] does not end in the weight's input width ${K}`,
    );
  }
  if (bias) {
    expectDtype(bias, "quantLinear", "bias", ["f32", "f16"]);
    if (numel(bias.shape) !== N) {
      throw new GpuError(`quantLinear: bias has ${numel(bias.shape)} elements, expected ${N}`);
    }
  }
  if (x.chunks.length > 1) throw new GpuError("quantLinear: x must not be chunked");
  const M = numel(x.shape) / K;
  const y = outputTensor(rec, "quantLinear", [...x.shape.slice(0, -1), N], out);
  if (y.chunks.length > 1) {
    throw new GpuError(
      `quantLinear: the output [${y.shape.join(", ")}] is larger than one binding; run fewer rows`,
    );
  }
  if (M === 0 || N === 0) return y;
  if (q.design === "texture") {
    const name = options.tile ?? (M === 1 ? "decode" : M <= 8 ? "small" : "prefill");
    const tile = tileOf(name, q.bits);
    recordTextureQuant(rec, x, q as QuantTextureStorage, M, N, K, bias, y, tile);
  } else {
    recordBufferQuant(rec, x, w, q as QuantBufferStorage, M, N, K, bias, y);
  }
  return y;
}

// --- texture design -------------------------------------------------------------------------------

/** WGSL helpers: sign-extended int8 / int4 values of a word as vec4<f32> (embedding, dx, buffers). */
const UNPACK = `
fn q8(w: u32) -> vec4<f32> {
  return vec4<f32>((vec4<i32>(bitcast<i32>(w)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
// Byte j holds column 2j in its high nibble and 2j + 1 in its low nibble.
fn q4lo(w: u32) -> vec4<f32> {
  return vec4<f32>((vec4<i32>(bitcast<i32>(w)) << vec4<u32>(24u, 28u, 16u, 20u)) >> vec4<u32>(28u));
}
fn q4hi(w: u32) -> vec4<f32> {
  return vec4<f32>((vec4<i32>(bitcast<i32>(w)) << vec4<u32>(8u, 12u, 0u, 4u)) >> vec4<u32>(28u));
}
`;

/**
 * The texture kernels' unpacking ("masked positions"), per bit width. A word holds `per` values
 * at bit positions p = 0..per−1 (bits [p·b, p·b + b)). XOR with `flip` turns each two's-complement
 * value q into the unsigned u = q + zero (zero = 2^(b−1)); masking position p then gives
 * u · 2^(p·b) as an integer that converts to f32 exactly, in 2 operations per weight (against 3
 * for sign extension by two shifts). The factor 2^(p·b) is cancelled by activations stored
 * pre-multiplied by 2^(−p·b) (exact: powers of two), and the zero point leaves the sum once:
 * Σ a·q = Σ a·u − zero · Σ a. The last position is shifted down instead (its mask would set the
 * sign bit), so its activation is stored unscaled.
 */
interface Positions {
  bits: 4 | 8;
  /** Values (positions) per 32-bit word. */
  per: number;
  flip: string;
  zero: number;
  /** The column of K (within its word) held at position p: int4 stores column 2j at the high
   * nibble of byte j, so position p holds column p ^ 1; int8 byte p holds column p. */
  column: (p: number) => number;
  /** WGSL f32 vector of position p of the XOR-ed words `x` (vec4<i32>). */
  value: (x: string, p: number) => string;
}

function positions(bits: 4 | 8): Positions {
  const per = 32 / bits;
  const mask = (1 << bits) - 1;
  return {
    bits,
    per,
    flip: bits === 8 ? "0x80808080u" : "0x88888888u",
    zero: 1 << (bits - 1),
    column: (p) => (bits === 4 ? p ^ 1 : p),
    value: (x, p) =>
      p === per - 1
        ? `vec4<f32>(bitcast<vec4<u32>>(${x}) >> vec4<u32>(${32 - bits}u))`
        : `vec4<f32>(${x} & vec4<i32>(${mask * 2 ** (bits * p)}))`,
  };
}

/** The pre-multiplier of position p's activation (see {@link positions}). */
function positionScale(pos: Positions, p: number): number {
  return p === pos.per - 1 ? 1 : 2 ** (-pos.bits * p);
}

/**
 * WGSL for one word of 4 output rows `t` (vec4<u32>) against activation texels `act(r, h)`
 * (h = position / 4): per position, the 4 rows' values as one vector times the activation scalar,
 * summed into `prod{r}{sfx}` for each activation row r (the unpacking is shared by all R rows).
 * The one unpacking generator of the texture matmul kernels, whatever the tile.
 */
function texelProducts(
  pos: Positions,
  t: string,
  sfx: string,
  R: number,
  act: (r: number, h: number) => string,
): string[] {
  const x = `x${sfx}`;
  const lines = [`let ${x} = bitcast<vec4<i32>>(${t} ^ vec4<u32>(${pos.flip}));`];
  for (let p = 0; p < pos.per; p++) lines.push(`let v${sfx}_${p} = ${pos.value(x, p)};`);
  for (let r = 0; r < R; r++) {
    const terms = Array.from(
      { length: pos.per },
      (_, p) => `v${sfx}_${p} * ${act(r, p >> 2)}.${"xyzw"[p & 3]}`,
    );
    lines.push(`let prod${r}${sfx} = ${terms.join(" + ")};`);
  }
  return lines;
}

/** WGSL vec4 turning activation texel h's pre-multiplied values back (for Σ a). */
function unscale(pos: Positions, h: number): string {
  const f = [0, 1, 2, 3].map((i) => 1 / positionScale(pos, 4 * h + i));
  return `vec4<f32>(${f.map((v) => v.toFixed(1)).join(", ")})`;
}

/**
 * The texture matmul. Weight texels are row-major (core/quant/gpu_weight.ts: texel (j, n) = words
 * 4j..4j+3 of row n), so per texel column j a workgroup fetches 4 texels for each group of 4
 * output rows and takes their word w side by side: the 4 rows' word w as one vec4<u32>. The 8
 * invocations split the texel columns of K (every 8th) and meet in workgroup memory at the end.
 */
function textureCode(tile: Tile, bits: 4 | 8, grouped: boolean, bias: DType): string {
  const { R, C4 } = tile;
  const T = R * C4;
  const pos = positions(bits);
  const H = pos.per / 4;
  const acc: string[] = [];
  for (let r = 0; r < R; r++) {
    acc.push(`var sa${r} = 0.0;`);
    for (let c = 0; c < C4; c++) acc.push(`var acc${r}_${c} = vec4<f32>(0.0);`);
  }
  const row = (r: number) => `min(m0 + ${r}u, P.M - 1u)`;
  /** Activations of word w for row r, and this word's Σ a (`sk{r}_{w}`). */
  const loadAct = (w: number, r: number) => {
    const lines: string[] = [];
    const sum: string[] = [];
    for (let h = 0; h < H; h++) {
      lines.push(
        `let a${r}_${w}_${h} = textureLoad(At, vec2<u32>(${4 * H}u * j + ${w * H + h}u, ${
          row(r)
        }));`,
      );
      sum.push(`dot(a${r}_${w}_${h}, ${unscale(pos, h)})`);
    }
    lines.push(`let sk${r}_${w} = ${sum.join(" + ")};`);
    if (!grouped) lines.push(`sa${r} += sk${r}_${w};`);
    return lines;
  };
  const loadWeights = (c: number) =>
    [0, 1, 2, 3].map((i) =>
      `let t${c}_${i} = textureLoad(Bt, vec2<u32>(j, min(4u * (g0 + ${c}u) + ${i}u, P.rows - 1u)));`
    );
  const products = (c: number, w: number) => {
    const comp = "xyzw"[w];
    const word = `vec4<u32>(t${c}_0.${comp}, t${c}_1.${comp}, t${c}_2.${comp}, t${c}_3.${comp})`;
    const lines = texelProducts(pos, word, `${c}_${w}`, R, (r, h) => `a${r}_${w}_${h}`);
    if (grouped) {
      // Each word's own group (a group may be shorter than a texel's 4 words).
      lines.push(
        `let s${c}_${w} = textureLoad(St, vec2<u32>(min((4u * j + ${w}u) / P.wordsPerGroup, P.groups - 1u), min(g0 + ${c}u, P.G - 1u)));`,
      );
    }
    for (let r = 0; r < R; r++) {
      lines.push(
        grouped
          ? `acc${r}_${c} += (prod${r}${c}_${w} - ${pos.zero}.0 * sk${r}_${w}) * s${c}_${w};`
          : `acc${r}_${c} += prod${r}${c}_${w};`,
      );
    }
    return lines;
  };
  const body: string[] = [];
  if (R === 1) {
    // Decode: the texel column's activations first (4·H texels), then each group of rows.
    for (let w = 0; w < 4; w++) body.push(...loadAct(w, 0));
    for (let c = 0; c < C4; c++) {
      body.push(...loadWeights(c));
      for (let w = 0; w < 4; w++) body.push(...products(c, w));
    }
  } else {
    // Several activation rows: the weight texels first, then word by word, so that only one
    // word's activations of the R rows are live at a time.
    for (let c = 0; c < C4; c++) body.push(...loadWeights(c));
    for (let w = 0; w < 4; w++) {
      for (let r = 0; r < R; r++) body.push(...loadAct(w, r));
      for (let c = 0; c < C4; c++) body.push(...products(c, w));
    }
  }
  const parts: string[] = [];
  for (let r = 0; r < R; r++) {
    parts.push(`psa[lid.x * ${R}u + ${r}u] = sa${r};`);
    for (let c = 0; c < C4; c++) parts.push(`part[lid.x * ${T}u + ${r * C4 + c}u] = acc${r}_${c};`);
  }
  return `
struct Params { M: u32, N: u32, J: u32, G: u32, ldc: u32, colOffset: u32, hasBias: u32,
  wordsPerGroup: u32, rows: u32, groups: u32, pad0: u32, pad1: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var At: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var Bt: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(3) var St: texture_storage_2d<rgba32float, read>;
${declareOutput(4, "C")}
${declareInput(5, "bias", bias)}
var<workgroup> part: array<vec4<f32>, ${WG * T}>;
var<workgroup> psa: array<f32, ${WG * R}>;
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let g0 = wid.x * ${C4}u;
  let m0 = wid.y * ${R}u;
  if (g0 >= P.G || m0 >= P.M) { return; }
  ${acc.join("\n  ")}
  for (var j = lid.x; j < P.J; j += ${WG}u) {
    ${body.join("\n    ")}
  }
  ${parts.join("\n  ")}
  workgroupBarrier();
  for (var t = lid.x; t < ${T}u; t += ${WG}u) {
    let r = t / ${C4}u;
    let c = t % ${C4}u;
    if (m0 + r < P.M) {
      var s = vec4<f32>(0.0);
      var z = 0.0;
      for (var l = 0u; l < ${WG}u; l++) {
        s += part[l * ${T}u + t];
        z += psa[l * ${R}u + r];
      }
      ${
    grouped
      ? ""
      : `s = (s - ${pos.zero}.0 * z) * textureLoad(St, vec2<u32>(0u, min(g0 + c, P.G - 1u)));`
  }
      let n = (g0 + c) * 4u;
      for (var j = 0u; j < 4u; j++) {
        if (n + j < P.N) {
          var b = 0.0;
          if (P.hasBias == 1u) { b = ld_bias(P.colOffset + n + j); }
          C[(m0 + r) * P.ldc + P.colOffset + n + j] = s[j] + b;
        }
      }
    }
  }
}
`;
}

/**
 * The activations [M, K] as an rgba32float texture of `per / 4` texels per weight word, each value
 * pre-multiplied for its position in the word (see {@link positions}), zero past K.
 */
function activationTexture(
  rec: Recording,
  x: Tensor,
  M: number,
  K: number,
  bits: 4 | 8,
  words: number,
): GPUTexture {
  const pos = positions(bits);
  const H = pos.per / 4;
  const width = words * H;
  const maxDim = rec.gpu.limits.maxTextureDimension2D ?? 8192;
  if (M > maxDim || width > maxDim) {
    throw new GpuError(`quantLinear: ${M} rows of ${K} exceed the texture limit ${maxDim}`);
  }
  const height = Math.min(maxDim, 2 ** Math.ceil(Math.log2(Math.max(M, 1))));
  const key = `quant-matmul:act:${width}x${height}`;
  let texture = rec.gpu.cache.get(key) as GPUTexture | undefined;
  if (!texture) {
    texture = rec.gpu.device.createTexture({
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
      label: key,
    });
    rec.gpu.cache.set(key, texture);
  }
  // Texel (H·w + h, m) component i: position p = 4h + i of word w.
  const cols: string[] = [];
  const scales: string[] = [];
  for (let h = 0; h < H; h++) {
    const ps = [0, 1, 2, 3].map((i) => 4 * h + i);
    cols.push(`vec4<u32>(${ps.map((p) => `${pos.column(p)}u`).join(", ")})`);
    scales.push(`vec4<f32>(${ps.map((p) => positionScale(pos, p).toExponential()).join(", ")})`);
  }
  const pick = (list: string[]) =>
    list.length === 1 ? list[0] : `select(${list[0]}, ${list[1]}, h == 1u)`;
  const pipeline = getPipeline(rec.gpu, `quant-matmul:act:q${bits}`, () => `
struct Params { M: u32, K: u32, W: u32, pad0: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var T: texture_storage_2d<rgba32float, write>;
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.M * P.W) { return; }
  let m = e / P.W;
  let t = e - m * P.W;
  let h = t % ${H}u;
  let cols = (t / ${H}u) * ${pos.per}u + ${pick(cols)};
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (cols[j] < P.K) { v[j] = A[m * P.K + cols[j]]; }
  }
  textureStore(T, vec2<u32>(t, m), v * ${pick(scales)});
}
`);
  recordDispatch(
    rec,
    pipeline,
    [M, K, width, 0],
    [bindingOf(x), texture.createView()],
    grid(rec.gpu, Math.ceil((M * width) / 64)),
  );
  return texture;
}

function zeroWord(rec: Recording): GPUBufferBinding {
  let buffer = rec.gpu.cache.get("quant-matmul:zero") as GPUBuffer | undefined;
  if (!buffer) {
    buffer = rec.gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    rec.gpu.cache.set("quant-matmul:zero", buffer);
  }
  return { buffer, offset: 0, size: 16 };
}

function recordTextureQuant(
  rec: Recording,
  x: Tensor,
  q: QuantTextureStorage,
  M: number,
  N: number,
  K: number,
  bias: Tensor | undefined,
  y: Tensor,
  tile: Tile,
): void {
  const grouped = q.groups > 1;
  const biasDtype: DType = bias?.dtype ?? "f32";
  const pipeline = getPipeline(
    rec.gpu,
    `quant-matmul:texture:${tile.R}x${tile.C4}:q${q.bits}:${grouped ? "g" : "row"}:${biasDtype}`,
    () => textureCode(tile, q.bits, grouped, biasDtype),
  );
  const texels = Math.ceil(q.wordsPerRow / 4);
  const act = activationTexture(rec, x, M, K, q.bits, 4 * texels).createView();
  const valuesPerWord = 32 / q.bits;
  const wordsPerGroup = grouped ? q.groupSize / valuesPerWord : 1;
  const biasBinding = bias ? bindingOf(bias) : zeroWord(rec);
  for (const b of q.blocks) {
    const G = Math.ceil(b.rows / 4);
    recordDispatch(
      rec,
      pipeline,
      [M, b.rows, texels, G, N, b.rowStart, bias ? 1 : 0, wordsPerGroup, b.rows, q.groups, 0, 0],
      [act, b.weights.createView(), b.scales.createView(), bindingOf(y), biasBinding],
      [Math.ceil(G / tile.C4), Math.ceil(M / tile.R)],
    );
  }
}

// --- buffer design --------------------------------------------------------------------------------

const BWG = 64;
const NB = 4;

function bufferCode(MR: number, bits: 4 | 8, grouped: boolean, bias: DType): string {
  const per = 32 / bits;
  const acc: string[] = [];
  for (let r = 0; r < MR; r++) for (let j = 0; j < NB; j++) acc.push(`var acc${r}_${j} = 0.0;`);
  const body: string[] = [];
  for (let r = 0; r < MR; r++) {
    for (let v = 0; v < per / 4; v++) {
      const comps = [0, 1, 2, 3].map((i) => `ldx(m0 + ${r}u, k0 + ${v * 4 + i}u)`);
      body.push(`let x${r}_${v} = vec4<f32>(${comps.join(", ")});`);
    }
  }
  for (let j = 0; j < NB; j++) {
    body.push(`let wd${j} = Q[min(n0 + ${j}u, P.rows - 1u) * P.W + w];`);
    const vecs = bits === 8 ? [`q8(wd${j})`] : [`q4lo(wd${j})`, `q4hi(wd${j})`];
    if (grouped) {
      body.push(
        `let s${j} = scale((P.rowStart + min(n0 + ${j}u, P.rows - 1u)) * P.groups + w / P.wordsPerGroup);`,
      );
    }
    for (let r = 0; r < MR; r++) {
      const dot = vecs.map((v, i) => `dot(${v}, x${r}_${i})`).join(" + ");
      body.push(`acc${r}_${j} += ${grouped ? `(${dot}) * s${j}` : dot};`);
    }
  }
  const T = MR * NB;
  const parts: string[] = [];
  for (let r = 0; r < MR; r++) {
    for (let j = 0; j < NB; j++) {
      parts.push(`red[${r * NB + j}u * ${BWG}u + lid.x] = acc${r}_${j};`);
    }
  }
  return `
struct Params { M: u32, N: u32, K: u32, W: u32, rowStart: u32, rows: u32, hasBias: u32, groups: u32,
  wordsPerGroup: u32, pad0: u32, pad1: u32, pad2: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Q: array<u32>;
@group(0) @binding(3) var<storage, read> S: array<u32>;
${declareOutput(4, "C")}
${declareInput(5, "bias", bias)}
${UNPACK}
fn scale(i: u32) -> f32 { return unpack2x16float(S[i >> 1u])[i & 1u]; }
fn ldx(m: u32, k: u32) -> f32 {
  if (k >= P.K) { return 0.0; }
  return X[min(m, P.M - 1u) * P.K + k];
}
var<workgroup> red: array<f32, ${T * BWG}>;
@compute @workgroup_size(${BWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let n0 = wid.x * ${NB}u;
  let m0 = wid.y * ${MR}u;
  ${acc.join("\n  ")}
  for (var w = lid.x; w < P.W; w += ${BWG}u) {
    let k0 = w * ${per}u;
    ${body.join("\n    ")}
  }
  ${parts.join("\n  ")}
  workgroupBarrier();
  for (var s = ${BWG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      for (var t = 0u; t < ${T}u; t++) { red[t * ${BWG}u + lid.x] += red[t * ${BWG}u + lid.x + s]; }
    }
    workgroupBarrier();
  }
  if (lid.x < ${T}u) {
    let r = lid.x / ${NB}u;
    let j = lid.x % ${NB}u;
    let m = m0 + r;
    let n = n0 + j;
    if (m < P.M && n < P.rows) {
      var v = red[lid.x * ${BWG}u];
      ${grouped ? "" : "v *= scale(P.rowStart + n);"}
      if (P.hasBias == 1u) { v += ld_bias(P.rowStart + n); }
      C[m * P.N + P.rowStart + n] = v;
    }
  }
}
`;
}

function recordBufferQuant(
  rec: Recording,
  x: Tensor,
  w: Tensor,
  q: QuantBufferStorage,
  M: number,
  N: number,
  K: number,
  bias: Tensor | undefined,
  y: Tensor,
): void {
  const grouped = q.groups > 1;
  const MR = M === 1 ? 1 : 4;
  const biasDtype: DType = bias?.dtype ?? "f32";
  const pipeline = getPipeline(
    rec.gpu,
    `quant-matmul:buffer:${MR}:q${q.bits}:${grouped ? "g" : "row"}:${biasDtype}`,
    () => bufferCode(MR, q.bits, grouped, biasDtype),
  );
  const wordsPerGroup = grouped ? q.groupSize / (32 / q.bits) : 1;
  const biasBinding = bias ? bindingOf(bias) : zeroWord(rec);
  const scales = { buffer: q.scales, offset: 0, size: q.scales.size };
  w.chunks.forEach((c, i) => {
    recordDispatch(
      rec,
      pipeline,
      [M, N, K, q.wordsPerRow, c.rowStart, c.rows, bias ? 1 : 0, q.groups, wordsPerGroup, 0, 0, 0],
      [bindingOf(x), bindingOf(w, i), scales, bindingOf(y), biasBinding],
      [Math.ceil(c.rows / NB), Math.ceil(M / MR)],
    );
  });
}

/**
 * One dispatch per row chunk of a buffer-design weight `w`, bound as (chunk words, scales,
 * ...rest) after the parameters `params(chunk, index)`.
 */
function dispatchWordChunks(
  rec: Recording,
  pipeline: GPUComputePipeline,
  w: Tensor,
  params: (c: Tensor["chunks"][number], i: number) => number[],
  rest: GPUBufferBinding[],
  workgroups: readonly [number, number?, number?],
): void {
  const scales = (w.quant as QuantBufferStorage).scales;
  w.chunks.forEach((c, i) => {
    recordDispatch(
      rec,
      pipeline,
      params(c, i),
      [bindingOf(w, i), { buffer: scales, offset: 0, size: scales.size }, ...rest],
      workgroups,
    );
  });
}

// --- embedding rows of a quantized table ----------------------------------------------------------

/** Rows of a quantized table [V, h] at `ids` → f32 [...ids.shape, h] (`quantization_embeddings`). */
export function quantEmbedding(rec: Recording, table: Tensor, ids: Tensor, out?: Tensor): Tensor {
  const q = table.quant;
  if (!q) throw new GpuError(`quantEmbedding: ${table.label ?? "table"} is not quantized`);
  expectDtype(ids, "embedding", "ids", ["i32", "u32"]);
  const [V, h] = table.shape;
  const n = numel(ids.shape);
  const y = outputTensor(rec, "embedding", [...ids.shape, h], out);
  if (n === 0 || h === 0) return y;
  const per = 32 / q.bits;
  const value = q.bits === 8
    ? "let v = (bitcast<i32>(wd) << (24u - 8u * (j % 4u))) >> 24u;"
    // Column j of a word: byte j/2, high nibble for even j.
    : "let v = (bitcast<i32>(wd) << (28u - 8u * ((j % 8u) / 2u) - 4u * (1u - (j % 2u)))) >> 28u;";
  const idCheck = `
  let id = i32(I[i]);
  if (id < 0 || u32(id) >= P.V) { Y[e] = bitcast<f32>(0x7fc00000u); return; }
  let row = u32(id);
  if (row < P.rowStart || row >= P.rowStart + P.rows) { return; }
  let r = row - P.rowStart;`;
  if (q.design === "texture") {
    const tq = q as QuantTextureStorage;
    const pipeline = getPipeline(rec.gpu, `quant-embedding:texture:q${q.bits}:${ids.dtype}`, () => `
struct Params { n: u32, h: u32, rowStart: u32, rows: u32, V: u32, groupSize: u32, pad0: u32, pad1: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var Bt: texture_2d<u32>;
@group(0) @binding(2) var St: texture_2d<f32>;
@group(0) @binding(3) var<storage, read> I: array<${ids.dtype}>;
${declareOutput(4, "Y")}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.n * P.h) { return; }
  let i = e / P.h;
  let j = e - i * P.h;
  ${idCheck}
  let word = j / ${per}u;
  let wd = textureLoad(Bt, vec2<u32>(word / 4u, r), 0)[word % 4u];
  ${value}
  Y[e] = f32(v) * textureLoad(St, vec2<u32>(j / P.groupSize, r / 4u), 0)[r % 4u];
}
`);
    for (const b of tq.blocks) {
      recordDispatch(
        rec,
        pipeline,
        [n, h, b.rowStart, b.rows, V, q.groupSize, 0, 0],
        [b.weights.createView(), b.scales.createView(), bindingOf(ids), bindingOf(y)],
        grid(rec.gpu, Math.ceil((n * h) / 64)),
      );
    }
  } else {
    const bq = q as QuantBufferStorage;
    const pipeline = getPipeline(rec.gpu, `quant-embedding:buffer:q${q.bits}:${ids.dtype}`, () => `
struct Params { n: u32, h: u32, rowStart: u32, rows: u32, V: u32, groupSize: u32, W: u32, groups: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
@group(0) @binding(3) var<storage, read> I: array<${ids.dtype}>;
${declareOutput(4, "Y")}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  if (e >= P.n * P.h) { return; }
  let i = e / P.h;
  let j = e - i * P.h;
  ${idCheck}
  let wd = Q[r * P.W + j / ${per}u];
  ${value}
  let si = row * P.groups + j / P.groupSize;
  Y[e] = f32(v) * unpack2x16float(S[si >> 1u])[si & 1u];
}
`);
    dispatchWordChunks(
      rec,
      pipeline,
      table,
      (c) => [n, h, c.rowStart, c.rows, V, q.groupSize, bq.wordsPerRow, bq.groups],
      [bindingOf(ids), bindingOf(y)],
      grid(rec.gpu, Math.ceil((n * h) / 64)),
    );
  }
  return y;
}

// --- input gradient: dx = dy · W (training a LoRA on a quantized, frozen base) -----------------

/** Rows of dy per invocation the input gradient may take (a pipeline per tile). */
export type InputGradRows = 1 | 2 | 4 | 8;

/**
 * Rows of dy per invocation for `M` rows: each invocation reads and unpacks its weight words once
 * for the whole tile, so the weight is read ⌈M / R⌉ times instead of M (the QLoRA step's cost).
 */
function inputGradRows(M: number): InputGradRows {
  return M >= 8 ? 8 : M >= 4 ? 4 : M >= 2 ? 2 : 1;
}

/**
 * WGSL of the input gradient for a tile of `R` rows of dy per invocation. One invocation owns a
 * tile of rows and a span of K (texture: a texel column, 4 words; buffer: one word) and walks all
 * of the weight's rows n: each word is fetched and unpacked once, then multiplied into the R rows'
 * accumulators (`acc{r}_{w}_{h}`: row r, word w, values 4h..4h+3 of the word), dy · scale per row.
 */
function inputGradCode(design: "texture" | "buffer", bits: 4 | 8, R: number): string {
  const per = 32 / bits;
  const halves = bits === 8 ? ["q8"] : ["q4lo", "q4hi"];
  const words = design === "texture" ? 4 : 1;
  const acc: string[] = [];
  for (let r = 0; r < R; r++) {
    for (let w = 0; w < words; w++) {
      for (let h = 0; h < halves.length; h++) acc.push(`var acc${r}_${w}_${h} = vec4<f32>(0.0);`);
    }
  }
  /** Word `w` (of 4 rows as a vec4<u32> `t`, texture; one row's u32 `t`, buffer) into the tile. */
  const products = (w: number, t: string, s: string, dy: (r: number) => string) => {
    const lines: string[] = [];
    halves.forEach((f, h) => {
      lines.push(
        design === "texture"
          ? `let u${w}_${h} = mat4x4<f32>(${f}(${t}.x), ${f}(${t}.y), ${f}(${t}.z), ${f}(${t}.w));`
          : `let u${w}_${h} = ${f}(${t});`,
      );
    });
    for (let r = 0; r < R; r++) {
      lines.push(`let ds${r}_${w} = ${dy(r)} * ${s};`);
      halves.forEach((_, h) => lines.push(`acc${r}_${w}_${h} += u${w}_${h} * ds${r}_${w};`));
    }
    return lines;
  };
  const body: string[] = [];
  let head: string;
  let decl: string;
  if (design === "texture") {
    // 4 rows n0..n0+3 per step: their texels of column jt, word w of each side by side.
    decl = `@group(0) @binding(1) var Bt: texture_2d<u32>;
@group(0) @binding(2) var St: texture_2d<f32>;`;
    head = `let TW = (P.W + 3u) / 4u;
  if (e >= tiles * TW) { return; }
  let mt = e / TW;
  let kw0 = 4u * (e - mt * TW);`;
    for (let i = 0; i < 4; i++) {
      body.push(
        `let t_${i} = textureLoad(Bt, vec2<u32>(kw0 / 4u, min(4u * g + ${i}u, P.rows - 1u)), 0);`,
      );
    }
    body.push("let n0 = P.rowStart + 4u * g;");
    for (let r = 0; r < R; r++) {
      body.push(
        `let dy${r} = vec4<f32>(${
          [0, 1, 2, 3].map((i) => `ldy(m0 + ${r}u, n0 + ${i}u)`).join(", ")
        });`,
      );
    }
    for (let w = 0; w < 4; w++) {
      const comp = "xyzw"[w];
      body.push(
        `let sg${w} = min((kw0 + ${w}u) / P.wordsPerGroup, P.groups - 1u);`,
        `let s${w} = textureLoad(St, vec2<u32>(sg${w}, g), 0);`,
        `let t${w} = vec4<u32>(t_0.${comp}, t_1.${comp}, t_2.${comp}, t_3.${comp});`,
        ...products(w, `t${w}`, `s${w}`, (r) => `dy${r}`),
      );
    }
  } else {
    decl = `@group(0) @binding(1) var<storage, read> Q: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
fn scale(i: u32) -> f32 { return unpack2x16float(S[i >> 1u])[i & 1u]; }`;
    head = `if (e >= tiles * P.W) { return; }
  let mt = e / P.W;
  let kw0 = e - mt * P.W;
  let sg = min(kw0 / P.wordsPerGroup, P.groups - 1u);`;
    body.push(
      "let row = P.rowStart + g;",
      "let s = scale(row * P.groups + sg);",
      "let t = Q[g * P.W + kw0];",
      ...products(0, "t", "s", (r) => `ldy(m0 + ${r}u, row)`),
    );
  }
  const stores: string[] = [];
  for (let r = 0; r < R; r++) {
    const rowStores: string[] = [];
    for (let w = 0; w < words; w++) {
      halves.forEach((_, h) => {
        rowStores.push(`put(m0 + ${r}u, (kw0 + ${w}u) * ${per}u + ${4 * h}u, acc${r}_${w}_${h});`);
      });
    }
    stores.push(`if (m0 + ${r}u < P.M) {\n    ${rowStores.join("\n    ")}\n  }`);
  }
  return `
struct Params { M: u32, N: u32, K: u32, W: u32, rowStart: u32, rows: u32,
  accumulate: u32, wordsPerGroup: u32, groups: u32, pad0: u32, pad1: u32, pad2: u32 };
@group(0) @binding(0) var<uniform> P: Params;
${decl}
@group(0) @binding(3) var<storage, read> DY: array<f32>;
${declareOutput(4, "DX")}
${UNPACK}
// dy[m, n], 0 past this block's rows (the last step of 4 rows may run over); a tile's rows past
// M read row M − 1 and are not stored.
fn ldy(m: u32, n: u32) -> f32 {
  if (n >= P.rowStart + P.rows) { return 0.0; }
  return DY[min(m, P.M - 1u) * P.N + n];
}
// dx[m, k..k+3] (those below K), added to what an earlier block wrote.
fn put(m: u32, k: u32, v: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) {
    if (k + j < P.K) {
      let o = m * P.K + k + j;
      var x = v[j];
      if (P.accumulate == 1u) { x += DX[o]; }
      DX[o] = x;
    }
  }
}
@compute @workgroup_size(64)
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * 64u + lid.x;
  let tiles = (P.M + ${R - 1}u) / ${R}u;
  ${head}
  let m0 = mt * ${R}u;
  ${acc.join("\n  ")}
  for (var g = 0u; g < ${design === "texture" ? "(P.rows + 3u) / 4u" : "P.rows"}; g++) {
    ${body.join("\n    ")}
  }
  ${stores.join("\n  ")}
}
`;
}

/**
 * `dy[..., N] · W` for a quantized W [N, K] → f32 [..., K]: the input gradient through a frozen
 * int8/int4 weight; written into `out` when given (e.g. a row slice). One invocation per (tile of
 * `rows` rows of dy, span of K) walks all N, so the weight is read once per tile of rows (default:
 * up to 8 rows, by M); `rows: 1` reads it once per row (the kernel before tiling, kept for the A/B
 * in bench/quant.ts).
 */
export function quantInputGrad(
  rec: Recording,
  w: Tensor,
  dy: Tensor,
  out?: Tensor,
  options: { rows?: InputGradRows } = {},
): Tensor {
  const q = w.quant;
  if (!q) throw new GpuError(`quantInputGrad: ${w.label ?? "weight"} is not quantized`);
  expectDtype(dy, "quantInputGrad", "dy", ["f32"]);
  const [N, K] = w.shape;
  if (dy.rowLength !== N || dy.chunks.length > 1) {
    throw new GpuError(
      `quantInputGrad: dy [${dy.shape.join(", ")}] must be unchunked rows of ${N} (W [${N}, ${K}])`,
    );
  }
  const M = numel(dy.shape) / N;
  const dx = outputTensor(rec, "quantInputGrad", [...dy.shape.slice(0, -1), K], out);
  if (M === 0 || K === 0) return dx;
  const R = options.rows ?? inputGradRows(M);
  const tiles = Math.ceil(M / R);
  const per = 32 / q.bits;
  const groups = (q as QuantTextureStorage | QuantBufferStorage).groups;
  const wordsPerGroup = groups > 1 ? q.groupSize / per : Number.MAX_SAFE_INTEGER >>> 0;
  const W = (q as QuantTextureStorage | QuantBufferStorage).wordsPerRow;
  const pipeline = getPipeline(
    rec.gpu,
    `quant-input-grad:${q.design}:q${q.bits}:r${R}`,
    () => inputGradCode(q.design as "texture" | "buffer", q.bits, R),
  );
  const params = (rowStart: number, rows: number, i: number) => [
    M,
    N,
    K,
    W,
    rowStart,
    rows,
    i === 0 ? 0 : 1,
    wordsPerGroup,
    groups,
    0,
    0,
    0,
  ];
  if (q.design === "texture") {
    const TW = Math.ceil(W / 4);
    (q as QuantTextureStorage).blocks.forEach((b, i) => {
      recordDispatch(
        rec,
        pipeline,
        params(b.rowStart, b.rows, i),
        [b.weights.createView(), b.scales.createView(), bindingOf(dy), bindingOf(dx)],
        grid(rec.gpu, Math.ceil((tiles * TW) / 64)),
      );
    });
  } else {
    dispatchWordChunks(
      rec,
      pipeline,
      w,
      (c, i) => params(c.rowStart, c.rows, i),
      [bindingOf(dy), bindingOf(dx)],
      grid(rec.gpu, Math.ceil((tiles * W) / 64)),
    );
  }
  return dx;
}
