/**
 * The WebGPU compat layer: one shared device for the process, what the adapter offers, and error
 * surfacing (uncaptured errors and device loss become thrown errors, never silent wrong numbers).
 */

import { ensureRuntimeDir } from "./runtime_dir.ts";

/** Which native API the adapter runs on (from `DENO_WEBGPU_BACKEND` or the adapter info). */
export type GpuBackend = "vulkan" | "gl" | "metal" | "dx12" | "unknown";

/** The shared device and what it offers. Obtain it with {@link getGpu}. */
export interface Gpu {
  readonly device: GPUDevice;
  readonly adapterInfo: {
    readonly vendor: string;
    readonly architecture: string;
    readonly device: string;
    readonly description: string;
    readonly isFallbackAdapter: boolean;
  };
  readonly backend: GpuBackend;
  /** True on a software adapter (llvmpipe, lavapipe, SwiftShader, WARP): kernels choose CPU-friendly designs. */
  readonly isSoftware: boolean;
  /** Features granted to the device (a subset of `shader-f16`, `timestamp-query`). */
  readonly features: ReadonlySet<string>;
  /** `shader-f16` was granted. (f16 *storage* works without it: kernels unpack with `unpack2x16float`.) */
  readonly hasF16: boolean;
  readonly hasTimestamps: boolean;
  /** The device limits (requested at the adapter's maximum). */
  readonly limits: GpuLimits;
  /** Per-device caches (pipelines, constant tables); keyed by strings. Internal to core. */
  readonly cache: Map<string, unknown>;
  /** Throws the first error recorded since the last call (uncaptured error or device loss). */
  checkErrors(): void;
  /** Records an error to be thrown by the next {@link Gpu.checkErrors} (used for async GPU reports). */
  reportError(message: string): void;
  /** Set once the device is lost; every later operation throws. */
  readonly lostReason: string | null;
}

/** Numeric device limits used by core (all of them from the device). */
export type GpuLimits = { readonly [K in keyof GPUSupportedLimits]: number };

/** Thrown for anything the GPU reports: validation, out of memory, internal errors, device loss. */
export class GpuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GpuError";
  }
}

/** How to get a WebGPU adapter on a machine that has none. */
export const NO_ADAPTER_HELP =
  "No WebGPU adapter found. On Linux without a GPU install Mesa's software " +
  "Vulkan driver: `sudo apt-get install mesa-vulkan-drivers libvulkan1` (then optionally set " +
  "DENO_WEBGPU_BACKEND=vulkan); on a machine with a GPU install its Vulkan/Metal/D3D12 driver.";

const OPTIONAL_FEATURES = ["shader-f16", "timestamp-query"] as const;

let shared: Promise<Gpu> | null = null;

/**
 * The shared device (created on first call, then the same object). Requests the adapter's
 * maximum limits and the optional features the kernels can use. Throws a {@link GpuError} that says
 * what to install when no adapter exists.
 */
export function getGpu(): Promise<Gpu> {
  if (!shared) {
    shared = createGpu().catch((err) => {
      shared = null;
      throw err;
    });
  }
  return shared;
}

export interface CreateGpuOptions {
  /**
   * Limits for core to keep below the device's (e.g. a small maxStorageBufferBindingSize, to test
   * on llvmpipe how tensors larger than one binding are split). The device itself is still
   * requested with the adapter's limits; values above them are clamped.
   */
  limits?: Partial<Record<keyof GPUSupportedLimits, number>>;
}

/**
 * Creates a new, separate device (tests of device loss and of small limits use it; everything
 * else shares getGpu()).
 */
export async function createGpu(options: CreateGpuOptions = {}): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator) || !navigator.gpu) {
    throw new GpuError(`navigator.gpu is not available in this runtime. ${NO_ADAPTER_HELP}`);
  }
  ensureRuntimeDir(); // before the instance exists: libwayland's probe reads it (runtime_dir.ts)
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (err) {
    throw new GpuError(`requestAdapter failed (${(err as Error).message}). ${NO_ADAPTER_HELP}`);
  }
  if (!adapter) throw new GpuError(NO_ADAPTER_HELP);

  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  const device = await adapter.requestDevice({
    requiredFeatures: requiredFeatures as GPUFeatureName[],
    requiredLimits,
  });

  const info = adapter.info;
  const adapterInfo = {
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    device: info.device ?? "",
    description: info.description ?? "",
    isFallbackAdapter: Boolean(
      (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    ),
  };
  const limits: Record<string, number> = {};
  for (const key in device.limits) {
    const value = (device.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") limits[key] = value;
  }
  // WebGPU never grants less than its defaults, so a smaller limit is core's own: everything
  // core sizes (tensor chunks, textures) follows `gpu.limits`.
  for (const [key, value] of Object.entries(options.limits ?? {})) {
    if (typeof value === "number" && key in limits) {
      limits[key] = key.startsWith("min")
        ? Math.max(value, limits[key]) // alignments: a smaller one is not allowed
        : Math.min(value, limits[key]);
    }
  }

  const errors: string[] = [];
  let lostReason: string | null = null;
  device.addEventListener("uncapturederror", (event) => {
    const e = (event as GPUUncapturedErrorEvent).error;
    errors.push(`${e.constructor?.name ?? "GPUError"}: ${e.message}`);
  });
  device.lost.then((lost) => {
    lostReason = `GPU device lost (${lost.reason}): ${lost.message}`;
  });

  const features = new Set<string>(device.features as unknown as Iterable<string>);
  const gpu: Gpu = {
    device,
    adapterInfo,
    backend: detectBackend(adapterInfo.description, adapter.features.has("shader-f16")),
    isSoftware: isSoftwareAdapter(adapterInfo),
    features,
    hasF16: features.has("shader-f16"),
    hasTimestamps: features.has("timestamp-query"),
    limits: limits as GpuLimits,
    cache: new Map(),
    get lostReason() {
      return lostReason;
    },
    reportError(message: string) {
      errors.push(message);
    },
    checkErrors() {
      if (lostReason) throw new GpuError(lostReason);
      if (errors.length > 0) {
        const all = errors.splice(0, errors.length);
        throw new GpuError(
          `GPU reported ${all.length} error(s): ${all.slice(0, 3).join(" | ")}`,
        );
      }
    },
  };
  return gpu;
}

function detectBackend(description: string, adapterHasF16: boolean): GpuBackend {
  const env = safeEnv("DENO_WEBGPU_BACKEND")?.toLowerCase();
  if (env === "vulkan" || env === "vk") return "vulkan";
  if (env === "gl" || env === "opengl" || env === "gles") return "gl";
  if (env === "metal") return "metal";
  if (env === "dx12" || env === "d3d12") return "dx12";
  const os = Deno.build.os;
  if (os === "darwin") return "metal";
  if (os === "windows") return "dx12";
  // Deno prefers Vulkan on Linux and falls back to GL. Both Mesa software adapters describe
  // themselves as "llvmpipe"; only the Vulkan one (lavapipe) offers `shader-f16`.
  if (/vulkan|lavapipe|radv|anv/i.test(description)) return "vulkan";
  if (os === "linux" && /^llvmpipe/i.test(description)) return adapterHasF16 ? "vulkan" : "gl";
  return "unknown";
}

function isSoftwareAdapter(info: { description: string; isFallbackAdapter: boolean }): boolean {
  return info.isFallbackAdapter ||
    /^(llvmpipe|lavapipe|softpipe|swiftshader)|microsoft basic render|warp/i.test(info.description);
}

function safeEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
