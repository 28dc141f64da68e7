/**
 * Dispatch overhead: the cost of one dispatch of an empty kernel (many in one submit), of one
 * submit, of one GPU→JS round trip, and of each kernel wrapper on a tiny input (where the
 * fixed cost per dispatch dominates: what a decode step pays per layer).
 *
 * `deno run --allow-all bench/dispatch.ts`
 */

import {
  add,
  attention,
  beginRecording,
  crossEntropy,
  embedding,
  emptyTensor,
  gelu,
  getGpu,
  getPipeline,
  type Gpu,
  layerNorm,
  linear,
  qkvRotary,
  readTensor,
  recordDispatch,
  type Recording,
  releaseTensor,
  softmax,
  submit,
  sync,
  type Tensor,
  uploadTensor,
} from "../core/mod.ts";

/** Microseconds per item: records `n` items with `body`, submits once, waits for the GPU. */
async function perDispatch(
  gpu: Gpu,
  n: number,
  body: (rec: Recording, outs: Tensor[]) => void,
): Promise<{ record: number; total: number }> {
  const measure = async (count: number) => {
    const outs: Tensor[] = [];
    const t0 = performance.now();
    const rec = beginRecording(gpu);
    for (let i = 0; i < count; i++) body(rec, outs);
    const t1 = performance.now();
    await submit(rec);
    await sync(gpu);
    const t2 = performance.now();
    for (const o of outs) releaseTensor(o);
    return { record: ((t1 - t0) * 1000) / count, total: ((t2 - t0) * 1000) / count };
  };
  await measure(2); // compile
  return await measure(n);
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(`dispatch overhead — ${gpu.adapterInfo.description} (${gpu.backend})`);
  const empty = getPipeline(gpu, "bench:empty", () => `
struct Params { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> Y: array<u32>;
@compute @workgroup_size(1) fn main() { if (P.n == 12345u) { Y[0] = 1u; } }
`);
  const sink = emptyTensor(gpu, [4], "u32");
  const rows: [string, number, number][] = [];
  const e = await perDispatch(gpu, 1000, (rec) => {
    recordDispatch(rec, empty, [0, 0, 0, 0], [{ buffer: sink.buffer, offset: 0, size: 16 }], [1]);
  });
  rows.push(["empty kernel (1000 in one submit)", e.record, e.total]);

  // One submit per dispatch.
  const submits = 100;
  let t0 = performance.now();
  for (let i = 0; i < submits; i++) {
    const rec = beginRecording(gpu);
    recordDispatch(rec, empty, [0, 0, 0, 0], [{ buffer: sink.buffer, offset: 0, size: 16 }], [1]);
    await submit(rec);
  }
  await sync(gpu);
  const perSubmit = ((performance.now() - t0) * 1000) / submits;
  rows.push(["submit of one empty dispatch", NaN, perSubmit]);

  t0 = performance.now();
  for (let i = 0; i < 10; i++) await readTensor(sink);
  rows.push(["GPU→JS round trip (readTensor 16 B)", NaN, ((performance.now() - t0) * 1000) / 10]);

  // Kernel wrappers on tiny inputs (h = 64, 4 heads of 16, vocab 512).
  const h = 64, heads = 4, d = 16, V = 512;
  const x = uploadTensor(gpu, new Float32Array(h).fill(0.5), [1, 1, h]);
  const w = uploadTensor(gpu, new Float32Array(h).fill(1), [h]);
  const b = uploadTensor(gpu, new Float32Array(h), [h]);
  const wqkv = uploadTensor(gpu, new Float32Array(3 * h * h).fill(0.01), [3 * h, h]);
  const qkv = uploadTensor(gpu, new Float32Array(3 * h).fill(0.1), [1, 1, 3 * h]);
  const pos = uploadTensor(gpu, new Int32Array([3, 1]), [1, 2, 1]);
  const kc = uploadTensor(gpu, new Float32Array(heads * 32 * d), [1, heads, 32, d]);
  const vc = uploadTensor(gpu, new Float32Array(heads * 32 * d), [1, heads, 32, d]);
  const q = uploadTensor(gpu, new Float32Array(heads * d), [1, heads, 1, d]);
  const info = uploadTensor(gpu, new Int32Array([0, 8]), [1, 2]);
  const table = uploadTensor(gpu, new Float32Array(V * h), [V, h]);
  const ids = uploadTensor(gpu, new Int32Array([5]), [1]);
  const logits = uploadTensor(gpu, new Float32Array(V), [1, V]);
  const labels = uploadTensor(gpu, new Int32Array([7]), [1]);
  const kernels: [string, (rec: Recording, outs: Tensor[]) => void][] = [
    ["layerNorm [1, 64]", (rec, o) => o.push(layerNorm(rec, x, w, b, 1e-5))],
    ["gelu [64]", (rec, o) => o.push(gelu(rec, x))],
    ["add [64]", (rec, o) => o.push(add(rec, x, x))],
    ["softmax [1, 64]", (rec, o) => o.push(softmax(rec, x))],
    ["linear 1×64 · 192×64ᵀ", (rec, o) => o.push(linear(rec, x, wqkv))],
    ["embedding 1 id", (rec, o) => o.push(embedding(rec, table, ids))],
    [
      "qkvRotary 2d decode",
      (rec, o) => o.push(qkvRotary(rec, qkv, pos, kc, vc, { heads, past: 8, mode: "2d" })),
    ],
    [
      "attention decode, 9 keys",
      (rec, o) => o.push(attention(rec, q, kc, vc, { keys: 9, maskInfo: info })),
    ],
    [
      "crossEntropy [1, 512] (2 dispatches)",
      (rec, o) => {
        const r = crossEntropy(rec, logits, labels);
        o.push(r.loss, r.lse, r.mean);
      },
    ],
  ];
  for (const [name, body] of kernels) {
    const r = await perDispatch(gpu, 200, body);
    rows.push([name, r.record, r.total]);
  }
  console.log(`${"what".padEnd(40)}${"record µs".padStart(11)}${"total µs".padStart(11)}`);
  for (const [name, rec, total] of rows) {
    console.log(
      `${name.padEnd(40)}${(Number.isNaN(rec) ? "-" : rec.toFixed(1)).padStart(11)}${
        total.toFixed(1).padStart(11)
      }`,
    );
  }
  for (const t of [sink, x, w, b, wqkv, qkv, pos, kc, vc, q, info, table, ids, logits, labels]) {
    releaseTensor(t);
  }
}

if (import.meta.main) await bench();
