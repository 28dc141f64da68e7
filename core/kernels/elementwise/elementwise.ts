/**
 * Elementwise kernels: activations (GeLU tanh form, SiLU), scale, add / mul / `a·α + b·β` with
 * a broadcast second operand, casts f32↔f16, fill and copy.
 *
 * One design on every adapter (an invocation per element). Backward: elementwise_grad.ts (GeLU,
 * and the training-only dropout, forward and backward).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordCopy, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  type DType,
  emptyTensor,
  markWritten,
  numel,
  type Tensor,
} from "../../tensor/tensor.ts";
import {
  declareInput,
  declareOutput,
  expectDtype,
  outputTensor,
  storageType,
  WG_BUILTINS,
  WG_INDEX,
} from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;

const CountParams = uniformLayout({ n: "u32" });
const UnaryParams = uniformLayout({ n: "u32", alpha: "f32" });
/** `nb`: elements of the broadcast second operand. */
const BinaryParams = uniformLayout({ n: "u32", nb: "u32", alpha: "f32", beta: "f32" });
const FillParams = {
  f32: uniformLayout({ n: "u32", v: "f32" }),
  i32: uniformLayout({ n: "u32", v: "i32" }),
  u32: uniformLayout({ n: "u32", v: "u32" }),
};

export type UnaryOp = "gelu" | "silu" | "scale" | "relu";

const UNARY: Record<UnaryOp, string> = {
  // The ChatGLM/GPT-2 tanh approximation, exactly as the spec writes it.
  gelu: "0.5 * x * (1.0 + tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))",
  silu: "x / (1.0 + exp(-x))",
  scale: "x * P.alpha",
  relu: "max(x, 0.0)",
};

/** `op(x)` elementwise; `alpha` is the factor of "scale". f32 in (f16 accepted), f32 out. */
export function unary(
  rec: Recording,
  op: UnaryOp,
  x: Tensor,
  alpha = 1,
  out?: Tensor,
): Tensor {
  expectDtype(x, op, "x", ["f32", "f16"]);
  assertUnchunked(x, op, "x");
  const y = outputTensor(rec, op, x.shape, out);
  const n = numel(x.shape);
  if (n === 0) return y;
  // tanh in WGSL overflows to NaN for large |x| on some drivers; clamp its argument (tanh(±15) = ±1 in f32).
  const expr = UNARY[op].replace("tanh(", "tanh_safe(");
  const pipeline = getPipeline(rec.gpu, `unary:${op}:${x.dtype}`, () => `
${UnaryParams.wgsl}${declareInput(1, "X", x.dtype)}
${declareOutput(2, "Y")}
fn tanh_safe(v: f32) -> f32 { return tanh(clamp(v, -15.0, 15.0)); }
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  let x = ld_X(i);
  Y[i] = ${expr};
}
`);
  recordDispatch(
    rec,
    pipeline,
    UnaryParams.pack({ n, alpha }),
    [bindingOf(x), bindingOf(y)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return y;
}

/** GeLU, tanh form: `0.5·x·(1 + tanh(0.7978845608028654·x·(1 + 0.044715·x·x)))`. */
export function gelu(rec: Recording, x: Tensor, out?: Tensor): Tensor {
  return unary(rec, "gelu", x, 1, out);
}

/** SiLU: `x·sigmoid(x)`. */
export function silu(rec: Recording, x: Tensor, out?: Tensor): Tensor {
  return unary(rec, "silu", x, 1, out);
}

/** `x·alpha`. */
export function scale(rec: Recording, x: Tensor, alpha: number, out?: Tensor): Tensor {
  return unary(rec, "scale", x, alpha, out);
}

export type BinaryOp = "axpby" | "mul";

/**
 * `a·alpha + b·beta` ("axpby") or `a·b·alpha` ("mul"). `b` broadcasts when its element count
 * divides a's and equals a's trailing dims (e.g. a bias [N] over [..., N]). f32 out.
 */
export function binary(
  rec: Recording,
  op: BinaryOp,
  a: Tensor,
  b: Tensor,
  alpha = 1,
  beta = 1,
  out?: Tensor,
): Tensor {
  expectDtype(a, op, "a", ["f32", "f16"]);
  expectDtype(b, op, "b", ["f32", "f16"]);
  assertUnchunked(a, op, "a");
  assertUnchunked(b, op, "b");
  const n = numel(a.shape);
  const nb = numel(b.shape);
  const trailing = a.shape.slice(a.shape.length - b.shape.length);
  const broadcastOk = nb === n ||
    (b.shape.length <= a.shape.length && b.shape.every((d, i) => d === trailing[i]));
  if (!broadcastOk || (n > 0 && nb === 0)) {
    throw new GpuError(
      `${op}: cannot broadcast b [${b.shape.join(", ")}] over a [${a.shape.join(", ")}]`,
    );
  }
  const y = outputTensor(rec, op, a.shape, out);
  if (n === 0) return y;
  const expr = op === "axpby"
    ? "ld_A(i) * P.alpha + ld_B(i % P.nb) * P.beta"
    : "ld_A(i) * ld_B(i % P.nb) * P.alpha";
  const pipeline = getPipeline(rec.gpu, `binary:${op}:${a.dtype}:${b.dtype}`, () => `
${BinaryParams.wgsl}${declareInput(1, "A", a.dtype)}
${declareInput(2, "B", b.dtype)}
${declareOutput(3, "Y")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  Y[i] = ${expr};
}
`);
  recordDispatch(
    rec,
    pipeline,
    BinaryParams.pack({ n, nb, alpha, beta }),
    [bindingOf(a), bindingOf(b), bindingOf(y)],
    grid(rec.gpu, Math.ceil(n / WG)),
  );
  return y;
}

/** `a + b` (b may broadcast). */
export function add(rec: Recording, a: Tensor, b: Tensor, out?: Tensor): Tensor {
  return binary(rec, "axpby", a, b, 1, 1, out);
}

/** `a·b` elementwise (b may broadcast). */
export function mul(rec: Recording, a: Tensor, b: Tensor, out?: Tensor): Tensor {
  return binary(rec, "mul", a, b, 1, 1, out);
}

/** `a·alpha + b` — the ChatGLM residual `LN_out·α + branch`. */
export function addScaled(
  rec: Recording,
  a: Tensor,
  alpha: number,
  b: Tensor,
  out?: Tensor,
): Tensor {
  return binary(rec, "axpby", a, b, alpha, 1, out);
}

/** `a·alpha + b·beta`. */
export function axpby(
  rec: Recording,
  a: Tensor,
  alpha: number,
  b: Tensor,
  beta: number,
  out?: Tensor,
): Tensor {
  return binary(rec, "axpby", a, b, alpha, beta, out);
}

/**
 * Converts f32↔f16 (round to nearest even; also i32/u32 → f32). Chunked tensors are converted
 * chunk by chunk (the output gets the same chunking). Same dtype → a copy.
 */
export function cast(rec: Recording, x: Tensor, dtype: DType, out?: Tensor): Tensor {
  expectDtype(x, "cast", "x", ["f32", "f16", "i32", "u32"]);
  if (dtype !== "f32" && dtype !== "f16") {
    if (dtype !== x.dtype) throw new GpuError(`cast: to ${dtype} is not supported`);
  }
  if (x.dtype !== "f32" && x.dtype !== "f16" && dtype !== "f32") {
    throw new GpuError(`cast: ${x.dtype} -> ${dtype} is not supported`);
  }
  const y = out ?? outputLike(rec, x, dtype);
  if (out) {
    expectDtype(out, "cast", "out", [dtype]);
    markWritten(out);
  }
  if (y.chunks.length !== x.chunks.length || y.chunks.some((c, i) => c.rows !== x.chunks[i].rows)) {
    throw new GpuError("cast: out must have the same chunking as x");
  }
  if (dtype === x.dtype) {
    x.chunks.forEach((c, i) => {
      const o = y.chunks[i];
      recordCopy(
        rec,
        c.buffer,
        c.byteOffset,
        o.buffer,
        o.byteOffset,
        Math.ceil(c.byteLength / 4) * 4,
      );
    });
    return y;
  }
  const toHalf = dtype === "f16";
  const pipeline = getPipeline(rec.gpu, `cast:${x.dtype}:${dtype}`, () => `
${CountParams.wgsl}${declareInput(1, "X", x.dtype)}
${declareOutput(2, "Y", toHalf ? "u32" : "f32")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  ${
    toHalf
      ? `// one invocation packs two halves (a u32 word); the odd tail gets a zero high half
  if (2u * i >= P.n) { return; }
  let lo = ld_X(2u * i);
  let hi = select(0.0, ld_X(min(2u * i + 1u, P.n - 1u)), 2u * i + 1u < P.n);
  Y[i] = pack2x16float(vec2<f32>(lo, hi));`
      : `if (i >= P.n) { return; }
  Y[i] = f32(ld_X(i));`
  }
}
`);
  x.chunks.forEach((c, i) => {
    const n = c.rows * x.rowLength;
    if (n === 0) return;
    const threads = toHalf ? Math.ceil(n / 2) : n;
    recordDispatch(
      rec,
      pipeline,
      CountParams.pack({ n }),
      [bindingOf(x, i), bindingOf(y, i)],
      grid(rec.gpu, Math.ceil(threads / WG)),
    );
  });
  return y;
}

function outputLike(rec: Recording, x: Tensor, dtype: DType): Tensor {
  if (x.chunks.length === 1) return outputTensor(rec, "cast", x.shape, undefined, dtype);
  return emptyTensor(rec.gpu, x.shape, dtype, {
    rec,
    rowsPerChunk: x.chunks[0].rows,
    label: "cast out",
  });
}

/** Sets every element of an f32/i32/u32 tensor to `value` (chunk by chunk). */
export function fill(rec: Recording, t: Tensor, value: number): Tensor {
  expectDtype(t, "fill", "t", ["f32", "i32", "u32"]);
  markWritten(t);
  const type = storageType(t.dtype) as "f32" | "i32" | "u32";
  const params = FillParams[type];
  const pipeline = getPipeline(rec.gpu, `fill:${type}`, () => `
${params.wgsl}${declareOutput(1, "Y", type)}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let i = ${WG_INDEX} * ${WG}u + lid.x;
  if (i >= P.n) { return; }
  Y[i] = P.v;
}
`);
  t.chunks.forEach((c, i) => {
    const n = c.rows * t.rowLength;
    if (n === 0) return;
    recordDispatch(
      rec,
      pipeline,
      params.pack({ n, v: value }),
      [bindingOf(t, i)],
      grid(rec.gpu, Math.ceil(n / WG)),
    );
  });
  return t;
}

/** Copies src into dst (same dtype and element count, same chunking), in recording order. */
export function copyTensor(rec: Recording, src: Tensor, dst: Tensor): Tensor {
  expectDtype(dst, "copyTensor", "dst", [src.dtype]);
  markWritten(dst);
  if (numel(src.shape) !== numel(dst.shape) || src.chunks.length !== dst.chunks.length) {
    throw new GpuError("copyTensor: src and dst differ in size or chunking");
  }
  src.chunks.forEach((c, i) => {
    const d = dst.chunks[i];
    if (d.byteLength !== c.byteLength) throw new GpuError("copyTensor: chunk sizes differ");
    recordCopy(
      rec,
      c.buffer,
      c.byteOffset,
      d.buffer,
      d.byteOffset,
      Math.ceil(c.byteLength / 4) * 4,
    );
  });
  return dst;
}
