/**
 * Reading f32 regions of GPU buffers back to the host in as few round trips as possible: every
 * region is copied into one staging buffer (a new one each 64 MiB), and each staging buffer is
 * mapped once. Used for checkpoints (parameters, m, v) and for the step result.
 */

import type { Gpu } from "../../core/mod.ts";
import type { BufferRegion } from "./chunks.ts";

const STAGING_BYTES = 64 << 20;

/** Copies `regions` to the host; returns one Float32Array per region, in order. */
export async function readRegions(
  gpu: Gpu,
  regions: readonly BufferRegion[],
  stagingBytes = STAGING_BYTES,
): Promise<Float32Array[]> {
  const out: Float32Array[] = regions.map((r) => new Float32Array(r.length));
  // Group consecutive regions (split big ones) into staging buffers of at most stagingBytes.
  type Piece = { region: number; elemStart: number; elems: number; stagingOffset: number };
  const groups: Piece[][] = [[]];
  let used = 0;
  regions.forEach((r, ri) => {
    for (let start = 0; start < r.length;) {
      if (used >= stagingBytes) {
        groups.push([]);
        used = 0;
      }
      const elems = Math.min(r.length - start, Math.floor((stagingBytes - used) / 4));
      groups[groups.length - 1].push({ region: ri, elemStart: start, elems, stagingOffset: used });
      used += elems * 4;
      start += elems;
    }
  });
  for (const group of groups) {
    if (group.length === 0) continue;
    const last = group[group.length - 1];
    const size = last.stagingOffset + last.elems * 4;
    const staging = gpu.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "train-readback",
    });
    try {
      const enc = gpu.device.createCommandEncoder();
      for (const p of group) {
        const r = regions[p.region];
        enc.copyBufferToBuffer(
          r.buffer,
          (r.byteOffset ?? 0) + p.elemStart * 4,
          staging,
          p.stagingOffset,
          p.elems * 4,
        );
      }
      gpu.device.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const all = new Float32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      for (const p of group) {
        out[p.region].set(
          all.subarray(p.stagingOffset / 4, p.stagingOffset / 4 + p.elems),
          p.elemStart,
        );
      }
    } finally {
      staging.destroy();
    }
  }
  gpu.checkErrors();
  return out;
}

/** Uploads `data` into a region (queue write; ordered before the next submission). */
export function writeRegion(gpu: Gpu, region: BufferRegion, data: Float32Array): void {
  if (data.length !== region.length) {
    throw new RangeError(`writeRegion: ${data.length} values for a region of ${region.length}`);
  }
  gpu.device.queue.writeBuffer(
    region.buffer,
    region.byteOffset ?? 0,
    data.buffer as ArrayBuffer,
    data.byteOffset,
    data.byteLength,
  );
}
