/**
 * Compute pipelines, created once per (kernel, variant, dtype) on a device and cached. The key
 * must name everything the WGSL depends on; the code is only generated on a cache miss.
 */

import type { Gpu } from "./device.ts";

/** Returns the cached pipeline for `key`, compiling `makeCode()` on first use. */
export function getPipeline(gpu: Gpu, key: string, makeCode: () => string): GPUComputePipeline {
  const cacheKey = `pipeline:${key}`;
  const cached = gpu.cache.get(cacheKey) as GPUComputePipeline | undefined;
  if (cached) return cached;
  const code = makeCode();
  const device = gpu.device;
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code, label: key });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
    label: key,
  });
  const scope = device.popErrorScope();
  gpu.cache.set(cacheKey, pipeline);
  // A WGSL error is a bug in core; make it loud, naming the kernel, at the next submit/read.
  scope.then((err) => {
    if (err) {
      gpu.cache.delete(cacheKey);
      gpu.reportError(`kernel ${key} failed to compile: ${err.message}`);
    }
  });
  return pipeline;
}

/** Number of pipelines compiled on this device so far (for tests of caching). */
export function pipelineCount(gpu: Gpu): number {
  let n = 0;
  for (const key of gpu.cache.keys()) if (key.startsWith("pipeline:")) n++;
  return n;
}
