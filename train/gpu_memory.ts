/**
 * What a training run holds on the GPU, for the training summary's "peak GPU memory": the base
 * weights in every form they are held (storage buffers, the packed textures the matmul kernels
 * derive from them, quantized textures and scales), the adapters (LoRA A, B), the gradients, the
 * optimizer's state, and the buffer pool's peak of everything else (activations, temporaries).
 *
 * The pool's peak (`resetPoolPeak` at the run's start) counts every pooled buffer in use at its
 * largest moment, the weights', adapters' and gradients' storage among them: those are held for
 * the whole run, so they are taken out of it once here and the rest is the temporaries' peak.
 */

import {
  type Gpu,
  poolStats,
  type QuantBufferStorage,
  type QuantTextureStorage,
  type Tensor,
} from "../core/mod.ts";

/** Resident GPU bytes by kind; `total` is their sum. */
export interface GpuMemory {
  weights: number;
  adapters: number;
  gradients: number;
  optimizer: number;
  /** The pool's peak less the pooled storage counted above: activations and temporaries. */
  temporaries: number;
  total: number;
}

/** Bytes per texel of the texture formats the kernels create (rgba32*: weights, activations). */
const TEXEL_BYTES: Record<string, number> = {
  rgba32float: 16,
  rgba32uint: 16,
  rgba32sint: 16,
  rgba16float: 8,
  rg32float: 8,
  r32float: 4,
  r32uint: 4,
};

function textureBytes(t: GPUTexture): number {
  const per = TEXEL_BYTES[t.format];
  if (per === undefined) {
    throw new Error(`GPU memory summary: no texel size for texture format ${t.format}`);
  }
  return t.width * t.height * t.depthOrArrayLayers * per;
}

/** Bytes held, split into pooled storage buffers (inside the pool's peak) and everything else. */
interface Held {
  pooled: number;
  other: number;
}

/**
 * Adds what `t` holds to `held`, each GPU object once (`seen`: a tied head shares the embedding's
 * tensor; full fine-tuning trains the weights themselves): its storage chunks unless freed, a
 * quantized weight's textures or scales, and the attachments kernels derived from it (packed
 * textures; a transposed copy, itself a tensor).
 */
function addHeld(t: Tensor, seen: Set<object>, held: Held): void {
  const owner = t.base ?? t;
  if (seen.has(owner)) return;
  seen.add(owner);
  if (!owner.meta.storageDropped) {
    for (const c of owner.chunks) {
      if (seen.has(c.buffer)) continue;
      seen.add(c.buffer);
      held.pooled += c.buffer.size;
    }
  }
  const q = owner.quant;
  if (q?.design === "texture") {
    for (const b of (q as QuantTextureStorage).blocks) {
      held.other += textureBytes(b.weights) + textureBytes(b.scales);
    }
  } else if (q?.design === "buffer") held.other += (q as QuantBufferStorage).scales.size;
  for (const a of owner.meta.attachments.values()) {
    const derived = a as { textures?: GPUTexture[]; tensor?: Tensor };
    for (const tex of derived.textures ?? []) held.other += textureBytes(tex);
    if (derived.tensor) addHeld(derived.tensor, seen, held);
  }
}

/** What `tensors` hold, GPU objects already in `seen` left out. */
function heldBy(tensors: Iterable<Tensor>, seen: Set<object>): Held {
  const held = { pooled: 0, other: 0 };
  for (const t of tensors) addHeld(t, seen, held);
  return held;
}

/**
 * The run's resident GPU memory now, with the temporaries at the pool's peak since
 * `resetPoolPeak`: weights, then adapters, then gradients (each object counted under the first).
 */
export function residentGpuMemory(
  gpu: Gpu,
  parts: {
    weights: Iterable<Tensor>;
    adapters: Iterable<Tensor>;
    gradients: Iterable<Tensor>;
    optimizerBytes: number;
  },
): GpuMemory {
  const seen = new Set<object>();
  const weights = heldBy(parts.weights, seen);
  const adapters = heldBy(parts.adapters, seen);
  const gradients = heldBy(parts.gradients, seen);
  const pooled = weights.pooled + adapters.pooled + gradients.pooled;
  // Held through the whole run, so inside the peak; never below zero (a derived copy made after
  // the peak would otherwise be subtracted from it).
  const temporaries = Math.max(0, poolStats(gpu).peakBytesInUse - pooled);
  const m = {
    weights: weights.pooled + weights.other,
    adapters: adapters.pooled + adapters.other,
    gradients: gradients.pooled + gradients.other,
    optimizer: parts.optimizerBytes,
    temporaries,
  };
  return { ...m, total: m.weights + m.adapters + m.gradients + m.optimizer + m.temporaries };
}
