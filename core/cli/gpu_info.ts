/**
 * `deno task gpu-info`: prints the WebGPU adapter the kernels run on — description, backend,
 * software or not, granted features and the limits that matter to core. Exits 1 with the
 * install hint when there is no adapter.
 */

import { parseArgs } from "node:util";
import { getGpu, type Gpu } from "../gpu/device.ts";
import { SOFTWARE_F32_MEMORY_SHARE, weightDtypeChoice } from "../models/chatglm/weights.ts";

const KEY_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxTextureDimension2D",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
] as const;

/** The report as plain lines (or as an object for --json). */
export function describeGpu(gpu: Gpu): Record<string, unknown> {
  const limits: Record<string, number> = {};
  for (const k of KEY_LIMITS) limits[k] = gpu.limits[k];
  return {
    adapter: gpu.adapterInfo.description || "(no description)",
    vendor: gpu.adapterInfo.vendor,
    architecture: gpu.adapterInfo.architecture,
    backend: gpu.backend,
    software: gpu.isSoftware,
    features: [...gpu.features].sort(),
    f16Compute: gpu.hasF16,
    timestamps: gpu.hasTimestamps,
    limits,
  };
}

function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(0)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { json: { type: "boolean", default: false }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(
      "usage: deno task gpu-info [--json]\nPrints the WebGPU adapter, backend, features and limits.",
    );
    return 0;
  }
  let gpu: Gpu;
  try {
    gpu = await getGpu();
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
  const info = describeGpu(gpu);
  if (values.json) {
    console.log(JSON.stringify(info, null, 2));
    return 0;
  }
  const lines = [
    `adapter:   ${info.adapter}`,
    `vendor:    ${info.vendor || "-"}${info.architecture ? ` (${info.architecture})` : ""}`,
    `backend:   ${info.backend}`,
    `software:  ${
      info.software ? "yes (CPU rasterizer: kernels use the CPU-friendly designs)" : "no"
    }`,
    `features:  ${
      (info.features as string[]).join(", ") || "(none of shader-f16, timestamp-query)"
    }`,
    `f16 math:  ${
      gpu.hasF16 ? "yes (shader-f16)" : "no (f16 weights still work: unpacked to f32)"
    }`,
    `weights:   ${weightsLine(gpu)} (--dtype f16|f32)${
      gpu.isSoftware
        ? "; read as textures in the checkpoint's row order (f16: 8 per texel, half the fetches " +
          "of f32), loaded without conversion"
        : ""
    }`,
    `int8/int4: ${
      gpu.isSoftware
        ? "yes (--quantize 8|4: packed weights in rgba32uint textures, 16/32 per fetch)"
        : "yes (--quantize 8|4: packed weights in storage buffers)"
    }, dequantized in registers, f32 math`,
    "limits:",
    ...KEY_LIMITS.map((k) => {
      const v = gpu.limits[k];
      const bytes = /Size|Alignment/.test(k) ? ` (${formatBytes(v)})` : "";
      return `  ${k.padEnd(36)} ${v}${bytes}`;
    }),
  ];
  console.log(lines.join("\n"));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));

/**
 * The default weight dtype's rule on this adapter (`defaultWeightDtype`): on a software adapter
 * with shader-f16 it depends on the model's size, so both sides of the rule are printed.
 */
function weightsLine(gpu: { hasF16: boolean; isSoftware: boolean }): string {
  if (!gpu.hasF16 || !gpu.isSoftware) {
    const c = weightDtypeChoice(gpu);
    return `${c.dtype} by default (${c.reason})`;
  }
  const host = Deno.systemMemoryInfo().total;
  const limit = (SOFTWARE_F32_MEMORY_SHARE * host) / 4;
  return `f32 by default for models up to ${(limit / 1e9).toFixed(1)}B parameters (f32 weights ` +
    `within ${SOFTWARE_F32_MEMORY_SHARE * 100}% of host memory: f16 weights measured slower than ` +
    "f32 on this software adapter at prefill and small-model decode), f16 for larger ones";
}
