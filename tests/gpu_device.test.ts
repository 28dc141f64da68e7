// The compat layer: the shared device, what it reports, and errors surfacing as thrown errors.
import assert from "node:assert/strict";
import {
  beginRecording,
  createGpu,
  getGpu,
  getPipeline,
  GpuError,
  NO_ADAPTER_HELP,
  pipelineCount,
  recordDispatch,
  submit,
  uniformParams,
} from "../core/gpu/mod.ts";
import { bindingOf, readTensor, uploadTensor } from "../core/tensor/mod.ts";
import { gelu } from "../core/kernels/mod.ts";
import { main as gpuInfoMain } from "../core/cli/gpu_info.ts";

Deno.test("getGpu: one shared device that reports adapter, backend, features, limits", async () => {
  const gpu = await getGpu();
  assert.equal(await getGpu(), gpu);
  assert.equal(typeof gpu.adapterInfo.description, "string");
  assert.ok(["vulkan", "gl", "metal", "dx12", "unknown"].includes(gpu.backend));
  assert.equal(gpu.hasF16, gpu.features.has("shader-f16"));
  assert.equal(gpu.hasTimestamps, gpu.features.has("timestamp-query"));
  for (const f of gpu.features) assert.ok(["shader-f16", "timestamp-query"].includes(f), f);
  assert.ok(gpu.limits.maxStorageBufferBindingSize >= 128 << 20);
  if (/^llvmpipe/.test(gpu.adapterInfo.description)) assert.equal(gpu.isSoftware, true);
  const env = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (env === "vulkan") assert.equal(gpu.backend, "vulkan");
  if (env === "gl") assert.equal(gpu.backend, "gl");
});

Deno.test("the no-adapter message says what to install", () => {
  assert.match(NO_ADAPTER_HELP, /No WebGPU adapter/);
  assert.match(NO_ADAPTER_HELP, /sudo apt-get install mesa-vulkan-drivers libvulkan1/);
});

Deno.test("pipelines are cached per kernel variant", async () => {
  const gpu = await getGpu();
  const x = uploadTensor(gpu, new Float32Array([1, 2, 3]), [3]);
  const rec = beginRecording(gpu);
  gelu(rec, x);
  const before = pipelineCount(gpu);
  for (let i = 0; i < 5; i++) gelu(rec, x);
  assert.equal(pipelineCount(gpu), before);
  await submit(rec);
});

Deno.test("a bad dispatch makes submit throw a GpuError (no silent wrong numbers)", async () => {
  const gpu = await getGpu();
  const pipeline = getPipeline(gpu, "test:bad-binding", () => `
struct Params { n: u32, a: u32, b: u32, c: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(1) fn main() { Y[0] = f32(P.n); }
`);
  const y = uploadTensor(gpu, new Float32Array(4), [4]);
  const rec = beginRecording(gpu);
  // Binding a uniform buffer where the shader wants storage is a validation error.
  await assert.rejects(async () => {
    recordDispatch(rec, pipeline, [1, 0, 0, 0], [uniformParams(rec, [1, 2, 3, 4])], [1]);
    await submit(rec);
  }, GpuError);
  // The device keeps working afterwards.
  const rec2 = beginRecording(gpu);
  recordDispatch(rec2, pipeline, [7, 0, 0, 0], [bindingOf(y)], [1]);
  await submit(rec2);
  assert.equal((await readTensor(y))[0], 7);
});

Deno.test("a WGSL compile error is reported naming the kernel", async () => {
  const gpu = await getGpu();
  const rec = beginRecording(gpu);
  const y = uploadTensor(gpu, new Float32Array(4), [4]);
  await assert.rejects(async () => {
    const p = getPipeline(gpu, "test:bad-wgsl", () => "this is not wgsl");
    recordDispatch(rec, p, [0], [bindingOf(y)], [1]);
    await submit(rec);
  }, GpuError);
  // The compile error itself names the kernel (reported asynchronously, thrown at the next check).
  await new Promise((r) => setTimeout(r, 50));
  assert.throws(() => gpu.checkErrors(), /kernel test:bad-wgsl failed to compile/);
});

Deno.test("device loss surfaces as an error on the next operation", async () => {
  const gpu = await createGpu();
  const x = uploadTensor(gpu, new Float32Array(8), [2, 4]);
  gpu.device.destroy();
  await gpu.device.lost;
  assert.match(gpu.lostReason ?? "", /device lost/);
  assert.throws(() => beginRecording(gpu), /device lost/);
  await assert.rejects(() => readTensor(x), /device lost/);
  assert.throws(() => gpu.checkErrors(), GpuError);
});

Deno.test("no adapter at all: createGpu throws the install hint", async () => {
  const gpuObj = navigator.gpu as unknown as { requestAdapter: () => Promise<GPUAdapter | null> };
  const original = gpuObj.requestAdapter;
  gpuObj.requestAdapter = () => Promise.resolve(null);
  try {
    await assert.rejects(
      () => createGpu(),
      (err: Error) =>
        err instanceof GpuError && /No WebGPU adapter/.test(err.message) &&
        /mesa-vulkan-drivers libvulkan1/.test(err.message),
    );
  } finally {
    gpuObj.requestAdapter = original;
  }
});

Deno.test("gpu-info prints adapter, backend, features and limits", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    assert.equal(await gpuInfoMain([]), 0);
    assert.equal(await gpuInfoMain(["--json"]), 0);
  } finally {
    console.log = log;
  }
  const text = lines[0];
  assert.match(text, /^adapter: /m);
  assert.match(text, /^backend: +(vulkan|gl|metal|dx12|unknown)/m);
  assert.match(text, /maxStorageBufferBindingSize +\d+/);
  const json = JSON.parse(lines[1]);
  assert.equal(json.backend, (await getGpu()).backend);
  assert.ok(Array.isArray(json.features));
  assert.equal(typeof json.limits.maxBufferSize, "number");
});
