// AdamW kernel, global-norm clipping and the NaN/Inf guard (train/optim) against a float64
// reference and against the fixture's `train` goldens (README §8, §12).
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { beginRecording, submit } from "../core/gpu/recording.ts";
import { decodeSafetensors } from "../core/io/safetensors.ts";
import { adamwStepF64, clipCoefficient, globalNormF64 } from "../train/optim/adamw_reference.ts";
import { accumulationScale } from "../train/optim/accumulate.ts";
import { createOptimizer, tensorRegions, type TrainableTensor } from "../train/optim/optimizer.ts";
import { uploadTensor } from "../core/tensor/tensor.ts";
import { readRegions } from "../train/optim/readback.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny/", import.meta.url);

function upload(gpu: GPUDevice, data: Float32Array): GPUBuffer {
  const buffer = gpu.createBuffer({
    size: Math.max(16, data.byteLength),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  new Float32Array(buffer.getMappedRange(), 0, data.length).set(data);
  buffer.unmap();
  return buffer;
}

/** §12's rule: max|a − b| ≤ 1e-4 · max|golden| + 1e-6. */
function assertClose(
  actual: ArrayLike<number>,
  golden: ArrayLike<number>,
  what: string,
  rtol = 1e-4,
) {
  assert.equal(actual.length, golden.length, `${what}: length`);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < golden.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - golden[i]));
    maxRef = Math.max(maxRef, Math.abs(golden[i]));
  }
  const tol = rtol * maxRef + 1e-6;
  assert.ok(maxDiff <= tol, `${what}: max |Δ| ${maxDiff} > ${tol}`);
}

// deterministic pseudo-random numbers (xorshift), so failures reproduce
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}
function randn(n: number, r: () => number, scale = 1): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

interface Golden {
  name: string;
  values: Record<string, unknown>;
  files: {
    key: string;
    file: string;
    tensors?: { name: string; offset: number; shape: number[] }[];
  }[];
}

async function trainCase(): Promise<Golden> {
  const index = JSON.parse(await Deno.readTextFile(new URL("goldens/index.json", FIX)));
  return index.cases.find((c: Golden) => c.name === "train");
}

async function goldenTensors(c: Golden, key: string): Promise<Map<string, Float32Array>> {
  const f = c.files.find((x) => x.key === key)!;
  const bytes = await Deno.readFile(new URL(`goldens/${f.file}`, FIX));
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const out = new Map<string, Float32Array>();
  for (const t of f.tensors!) {
    out.set(t.name, all.slice(t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1)));
  }
  return out;
}

Deno.test("AdamW step 1 from adapter-qkv with the golden LoRA gradients equals lora_after_step1", async () => {
  const gpu = await getGpu();
  const c = await trainCase();
  const hp = c.values.adamw as {
    lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
  };
  const grads = await goldenTensors(c, "lora_grads");
  const after = await goldenTensors(c, "lora_after_step1");
  const adapter = decodeSafetensors(
    await Deno.readFile(new URL("adapter-qkv/adapter_model.safetensors", FIX)),
  );
  const tensors: TrainableTensor[] = [];
  for (const [name, g] of grads) {
    const t = adapter.tensors.get(name);
    assert.ok(t, `adapter-qkv has ${name}`);
    assert.equal(t.dtype, "F32");
    const p = new Float32Array(t.data.slice().buffer);
    tensors.push({
      name,
      shape: t.shape,
      param: { buffer: upload(gpu.device, p), length: p.length },
      grad: { buffer: upload(gpu.device, g), length: g.length },
    });
  }
  const opt = createOptimizer(gpu, tensors, {
    beta1: hp.betas[0],
    beta2: hp.betas[1],
    eps: hp.eps,
    weightDecay: hp.weight_decay,
  });
  const rec = beginRecording(gpu);
  opt.recordStep(rec, { lr: hp.lr, maxGradNorm: 0 });
  await submit(rec);
  const report = await opt.finishStep();
  assert.equal(report.skipped, false);
  assert.equal(report.step, 1);
  assert.equal(report.clipCoef, 1);
  // the golden records the global gradient norm too
  assertClose([report.gradNorm], [c.values.lora_grad_global_l2_norm as number], "grad norm");
  const params = await readRegions(
    gpu,
    tensors.map((t) => t.param as { buffer: GPUBuffer; length: number }),
  );
  tensors.forEach((t, i) => assertClose(params[i], after.get(t.name)!, t.name));
  opt.destroy();
  for (const t of tensors) {
    (t.param as { buffer: GPUBuffer }).buffer.destroy();
    (t.grad as { buffer: GPUBuffer }).buffer.destroy();
  }
});

Deno.test("AdamW kernel with clipping and accumulation scale matches float64 over 6 steps (chunked tensors)", async () => {
  const gpu = await getGpu();
  const r = rng(7);
  const hyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
  const sizes = [1000, 64 * 5 + 3, 7];
  const ref = sizes.map((n) => ({
    p: Float64Array.from(randn(n, r, 0.1)),
    m: new Float64Array(n),
    v: new Float64Array(n),
  }));
  // one tensor in two parts (as a row-chunked core tensor), the others whole
  const tensors: TrainableTensor[] = sizes.map((n, i) => {
    const p = Float32Array.from(ref[i].p);
    if (i === 0) {
      return {
        name: `t${i}`,
        shape: [n],
        param: [
          { buffer: upload(gpu.device, p.slice(0, 640)), length: 640 },
          { buffer: upload(gpu.device, p.slice(640)), length: n - 640 },
        ],
        grad: [
          { buffer: upload(gpu.device, new Float32Array(640)), length: 640 },
          { buffer: upload(gpu.device, new Float32Array(n - 640)), length: n - 640 },
        ],
      };
    }
    return {
      name: `t${i}`,
      shape: [n],
      param: { buffer: upload(gpu.device, p), length: n },
      grad: { buffer: upload(gpu.device, new Float32Array(n)), length: n },
    };
  });
  // chunks of 128 elements force several bindings per part
  const opt = createOptimizer(gpu, tensors, hyper, { maxChunkElements: 128 });
  const accum = 2;
  const scale = accumulationScale(accum);
  const lrs = [1e-3, 2e-3, 5e-4, 1e-3, 3e-3, 1e-4];
  for (let step = 0; step < lrs.length; step++) {
    const grads = sizes.map((n) => randn(n, r, step % 2 ? 3 : 0.2));
    // upload raw (summed) gradients; the optimizer applies the accumulation scale
    tensors.forEach((t, i) => {
      const parts = Array.isArray(t.grad) ? t.grad : [t.grad];
      let off = 0;
      for (const part of parts) {
        gpu.device.queue.writeBuffer(part.buffer, 0, grads[i].subarray(off, off + part.length));
        off += part.length;
      }
    });
    const scaled = grads.map((g) => Float64Array.from(g, (x) => x * scale));
    const norm = globalNormF64(scaled);
    const maxGradNorm = 10;
    const coef = clipCoefficient(norm, maxGradNorm);
    for (let i = 0; i < sizes.length; i++) {
      adamwStepF64(
        ref[i].p,
        scaled[i],
        ref[i].m,
        ref[i].v,
        step + 1,
        { ...hyper, lr: lrs[step] },
        coef,
      );
    }
    const rec = beginRecording(gpu);
    opt.recordStep(rec, { lr: lrs[step], maxGradNorm, gradScale: scale });
    await submit(rec);
    const report = await opt.finishStep();
    assert.equal(report.skipped, false);
    assert.equal(report.step, step + 1);
    assert.ok(
      Math.abs(report.gradNorm - norm) <= 1e-5 * norm,
      `norm ${report.gradNorm} vs ${norm}`,
    );
    assert.ok(Math.abs(report.clipCoef - coef) <= 1e-5, `coef ${report.clipCoef} vs ${coef}`);
    if (step % 2 === 1) assert.ok(coef < 1, "the large-gradient steps are clipped");
  }
  const state = await opt.exportState();
  for (let i = 0; i < sizes.length; i++) {
    const parts = Array.isArray(tensors[i].param)
      ? tensors[i].param as { buffer: GPUBuffer; length: number }[]
      : [tensors[i].param as { buffer: GPUBuffer; length: number }];
    const read = await readRegions(gpu, parts);
    const p = new Float32Array(sizes[i]);
    let off = 0;
    for (const x of read) {
      p.set(x, off);
      off += x.length;
    }
    assertClose(p, ref[i].p, `param t${i}`, 1e-5);
    assertClose(state.tensors[i].m, ref[i].m, `m t${i}`, 1e-5);
    assertClose(state.tensors[i].v, ref[i].v, `v t${i}`, 1e-5);
    assert.equal(state.tensors[i].step, lrs.length);
  }
  opt.destroy();
});

Deno.test("a NaN or Inf gradient skips the step, names the tensor and changes nothing", async () => {
  const gpu = await getGpu();
  const r = rng(11);
  const n = 300;
  const p0 = randn(n, r, 0.1);
  const mk = (name: string, g: Float32Array): TrainableTensor => ({
    name,
    shape: [n],
    param: { buffer: upload(gpu.device, p0), length: n },
    grad: { buffer: upload(gpu.device, g), length: n },
  });
  const good = randn(n, r);
  const bad = randn(n, r);
  bad[123] = NaN;
  const tensors = [mk("a.lora_A", good), mk("b.lora_B", bad)];
  const opt = createOptimizer(gpu, tensors);
  let rec = beginRecording(gpu);
  opt.recordStep(rec, { lr: 1e-2, maxGradNorm: 1 });
  await submit(rec);
  const rep = await opt.finishStep();
  assert.equal(rep.skipped, true);
  assert.equal(rep.step, 0);
  assert.deepEqual(rep.nonFinite, ["b.lora_B"]);
  assert.match(rep.message!, /skipped.*b\.lora_B/);
  const [pa, pb] = await readRegions(
    gpu,
    tensors.map((t) => t.param as { buffer: GPUBuffer; length: number }),
  );
  assert.deepEqual(pa, p0);
  assert.deepEqual(pb, p0);
  const st = await opt.exportState();
  assert.ok(
    st.tensors.every((t) => t.step === 0 && t.m.every((x) => x === 0) && t.v.every((x) => x === 0)),
  );

  // Inf is caught too
  bad[123] = Infinity;
  gpu.device.queue.writeBuffer((tensors[1].grad as { buffer: GPUBuffer }).buffer, 0, bad);
  rec = beginRecording(gpu);
  opt.recordStep(rec, { lr: 1e-2, maxGradNorm: 1 });
  await submit(rec);
  assert.equal((await opt.finishStep()).skipped, true);

  // after zeroing and fresh finite gradients, the next step is step 1 (bias corrections for t = 1)
  rec = beginRecording(gpu);
  opt.recordZeroGrads(rec);
  await submit(rec);
  const [zeroed] = await readRegions(gpu, [
    tensors[1].grad as { buffer: GPUBuffer; length: number },
  ]);
  assert.ok(zeroed.every((x) => x === 0));
  bad[123] = 0.5;
  gpu.device.queue.writeBuffer((tensors[1].grad as { buffer: GPUBuffer }).buffer, 0, bad);
  gpu.device.queue.writeBuffer((tensors[0].grad as { buffer: GPUBuffer }).buffer, 0, good);
  rec = beginRecording(gpu);
  opt.recordStep(rec, { lr: 1e-2, maxGradNorm: 1 });
  await submit(rec);
  const ok = await opt.finishStep();
  assert.equal(ok.skipped, false);
  assert.equal(ok.step, 1);
  const refP = Float64Array.from(p0), m = new Float64Array(n), v = new Float64Array(n);
  const norm = globalNormF64([good, bad]);
  adamwStepF64(refP, bad, m, v, 1, { lr: 1e-2, ...opt.hyper }, clipCoefficient(norm, 1));
  const [pb2] = await readRegions(gpu, [tensors[1].param as { buffer: GPUBuffer; length: number }]);
  assertClose(pb2, refP, "param after the first real step", 1e-5);
  opt.destroy();
});

Deno.test("optimizer state import checks names and sizes, then restores m, v and steps", async () => {
  const gpu = await getGpu();
  const n = 40;
  const t: TrainableTensor = {
    name: "w",
    shape: [4, 10],
    param: { buffer: upload(gpu.device, new Float32Array(n).fill(1)), length: n },
    grad: { buffer: upload(gpu.device, new Float32Array(n).fill(0.5)), length: n },
  };
  const opt = createOptimizer(gpu, [t]);
  const m = new Float32Array(n).fill(0.25), v = new Float32Array(n).fill(0.0625);
  assert.throws(
    () =>
      opt.importState({ hyper: opt.hyper, tensors: [{ name: "x", shape: [n], step: 1, m, v }] }),
    /does not train: x/,
  );
  assert.throws(
    () =>
      opt.importState({
        hyper: opt.hyper,
        tensors: [{ name: "w", shape: [n], step: 1, m: m.subarray(1), v }],
      }),
    /w: 39 values, expected 40/,
  );
  opt.importState({ hyper: opt.hyper, tensors: [{ name: "w", shape: [4, 10], step: 3, m, v }] });
  const st = await opt.exportState();
  assert.equal(st.tensors[0].step, 3);
  assert.deepEqual(st.tensors[0].m, m);
  assert.deepEqual(st.tensors[0].v, v);
  assert.throws(
    () => createOptimizer(gpu, [{ ...t, shape: [5, 10] }]),
    /shape \[5,10\] has 50 values/,
  );
  opt.destroy();
});

Deno.test("readRegions splits regions over several staging buffers and honours byte offsets", async () => {
  const gpu = await getGpu();
  const data = Float32Array.from({ length: 1200 }, (_, i) => i * 0.5 - 7);
  const buffer = upload(gpu.device, data);
  const regions = [
    { buffer, length: 300 },
    { buffer, byteOffset: 256 * 2, length: 7 },
    { buffer, byteOffset: 256 * 3, length: 1200 - 192 },
  ];
  const out = await readRegions(gpu, regions, 1000);
  assert.deepEqual(out[0], data.slice(0, 300));
  assert.deepEqual(out[1], data.slice(128, 135));
  assert.deepEqual(out[2], data.slice(192));
  buffer.destroy();
});

Deno.test("an optimizer step marks its parameter tensors written (derived copies get rebuilt)", async () => {
  const gpu = await getGpu();
  const n = 64;
  const w = uploadTensor(gpu, randn(n, rng(5), 0.1), [8, 8]);
  const g = uploadTensor(gpu, randn(n, rng(6)), [8, 8]);
  const opt = createOptimizer(gpu, [{
    name: "w",
    shape: [8, 8],
    param: tensorRegions(w),
    grad: tensorRegions(g),
    tensor: w,
  }]);
  const before = w.meta.version;
  const rec = beginRecording(gpu);
  opt.recordStep(rec, { lr: 1e-2, maxGradNorm: 0 });
  await submit(rec);
  await opt.finishStep();
  assert.ok(w.meta.version > before, "the parameter tensor was not marked written");
  opt.destroy();
});
