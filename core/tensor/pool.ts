/**
 * The storage-buffer pool: freed buffers are kept by size class and handed out again, so a model
 * step allocates nothing after the first one.
 *
 * Reuse rule (why buffers are not always free at once): `queue.writeBuffer` (uploads) runs on the
 * queue timeline *before* a recording that is still being built gets submitted. A buffer released
 * while a recording is open may still be read by that recording, so it is only handed to
 * dispatches of the same recording (which run in order after its last use), and becomes free for
 * everything else once no recording is open.
 */

import type { Gpu } from "../gpu/device.ts";
import { openRecordingCount, type Recording } from "../gpu/recording.ts";

/** Usage of every pooled storage buffer. */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Memory accounting of the pool (the trainer prints `bytesInUse`). */
export interface PoolStats {
  /** Bytes of buffers held by live tensors. */
  bytesInUse: number;
  /** Bytes of freed buffers kept for reuse. */
  bytesCached: number;
  buffersInUse: number;
  buffersCached: number;
  /** Buffers created so far / handed out again from the pool. */
  allocations: number;
  reuses: number;
  /** Largest bytesInUse seen. */
  peakBytesInUse: number;
}

interface Pool {
  free: Map<number, GPUBuffer[]>;
  deferred: GPUBuffer[];
  stats: PoolStats;
}

function poolOf(gpu: Gpu): Pool {
  let pool = gpu.cache.get("buffer-pool") as Pool | undefined;
  if (!pool) {
    pool = {
      free: new Map(),
      deferred: [],
      stats: {
        bytesInUse: 0,
        bytesCached: 0,
        buffersInUse: 0,
        buffersCached: 0,
        allocations: 0,
        reuses: 0,
        peakBytesInUse: 0,
      },
    };
    gpu.cache.set("buffer-pool", pool);
  }
  return pool;
}

/** Size class of a request: at most 25% over, so big weights do not waste much. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (b <= 4096) return 2 ** Math.ceil(Math.log2(b));
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 4;
  return Math.ceil(b / step) * step;
}

function recFree(rec: Recording): Map<number, GPUBuffer[]> {
  let free = rec.scratch.get("pool-free") as Map<number, GPUBuffer[]> | undefined;
  if (!free) {
    free = new Map();
    rec.scratch.set("pool-free", free);
    rec.onSubmit.push(() => {
      const gpu = rec.gpu;
      for (const list of free!.values()) for (const b of list) returnBuffer(gpu, b);
      free!.clear();
      flushDeferred(gpu);
    });
  }
  return free;
}

function flushDeferred(gpu: Gpu): void {
  const pool = poolOf(gpu);
  if (openRecordingCount(gpu) > 0 || pool.deferred.length === 0) return;
  for (const b of pool.deferred.splice(0)) returnBuffer(gpu, b);
}

function returnBuffer(gpu: Gpu, buffer: GPUBuffer): void {
  const pool = poolOf(gpu);
  const list = pool.free.get(buffer.size) ?? [];
  list.push(buffer);
  pool.free.set(buffer.size, list);
  pool.stats.bytesCached += buffer.size;
  pool.stats.buffersCached++;
}

/**
 * A storage buffer of at least `bytes` bytes. With `rec`, buffers released earlier in that same
 * recording are eligible too.
 */
export function acquireBuffer(gpu: Gpu, bytes: number, rec?: Recording): GPUBuffer {
  const pool = poolOf(gpu);
  const size = sizeClass(bytes);
  flushDeferred(gpu);
  let buffer: GPUBuffer | undefined;
  if (rec && rec.state === "open") buffer = recFree(rec).get(size)?.pop();
  if (!buffer) {
    buffer = pool.free.get(size)?.pop();
    if (buffer) {
      pool.stats.bytesCached -= size;
      pool.stats.buffersCached--;
    }
  }
  if (buffer) pool.stats.reuses++;
  else {
    const max = gpu.limits.maxBufferSize ?? 268435456;
    if (size > max) {
      throw new RangeError(`buffer of ${bytes} bytes exceeds the device's maxBufferSize ${max}`);
    }
    gpu.device.pushErrorScope("out-of-memory");
    buffer = gpu.device.createBuffer({ size, usage: STORAGE_USAGE });
    gpu.device.popErrorScope().then((err) => {
      if (err) gpu.reportError(`out of GPU memory allocating ${size} bytes: ${err.message}`);
    });
    pool.stats.allocations++;
  }
  pool.stats.bytesInUse += size;
  pool.stats.buffersInUse++;
  pool.stats.peakBytesInUse = Math.max(pool.stats.peakBytesInUse, pool.stats.bytesInUse);
  return buffer;
}

/**
 * Gives a buffer back. With an open `rec`, it is reusable by later dispatches of that recording
 * and by everything after its submission; otherwise once no recording is open.
 */
export function releaseBuffer(gpu: Gpu, buffer: GPUBuffer, rec?: Recording): void {
  const pool = poolOf(gpu);
  pool.stats.bytesInUse -= buffer.size;
  pool.stats.buffersInUse--;
  if (rec && rec.state === "open") {
    const free = recFree(rec);
    const list = free.get(buffer.size) ?? [];
    list.push(buffer);
    free.set(buffer.size, list);
  } else if (openRecordingCount(gpu) > 0) pool.deferred.push(buffer);
  else returnBuffer(gpu, buffer);
}

/**
 * Destroys a buffer a tensor holds instead of pooling it (its memory goes back to the driver at
 * once, e.g. a weight kept only in another form). Destroying after a submission is safe.
 */
export function destroyBuffer(gpu: Gpu, buffer: GPUBuffer): void {
  const pool = poolOf(gpu);
  pool.stats.bytesInUse -= buffer.size;
  pool.stats.buffersInUse--;
  buffer.destroy();
}

/** A snapshot of the pool's accounting. */
export function poolStats(gpu: Gpu): PoolStats {
  flushDeferred(gpu);
  return { ...poolOf(gpu).stats };
}

/** Starts a new `peakBytesInUse` from what is in use now (e.g. one training run's own peak). */
export function resetPoolPeak(gpu: Gpu): void {
  const { stats } = poolOf(gpu);
  stats.peakBytesInUse = stats.bytesInUse;
}

/** Destroys every cached (free) buffer, returning their memory to the driver. */
export function trimPool(gpu: Gpu): void {
  const pool = poolOf(gpu);
  flushDeferred(gpu);
  for (const list of pool.free.values()) for (const b of list) b.destroy();
  pool.free.clear();
  pool.stats.bytesCached = 0;
  pool.stats.buffersCached = 0;
}
