/**
 * Admission control for generation requests: at most `maxConcurrent` sequences decode together,
 * up to `maxQueue` more wait in FIFO order, and the rest are refused at once (HTTP 429) with a
 * Retry-After estimate. The engine decodes whatever it is given, so the limit lives here.
 */

export interface AdmissionOptions {
  maxConcurrent: number;
  maxQueue: number;
}

/** Frees the slot; calling it more than once is harmless. */
export type Release = () => void;

export interface Admission {
  /**
   * Waits for a decode slot. Rejects with `QueueFullError` when every slot and queue place is
   * taken, and with the signal's reason when the signal aborts while waiting (the place in the
   * queue is given up).
   */
  acquire(signal?: AbortSignal): Promise<Release>;
  /** Sequences holding a slot now. */
  readonly active: number;
  /** Requests waiting for a slot now. */
  readonly queued: number;
  readonly maxConcurrent: number;
  readonly maxQueue: number;
  /** Seconds a refused client should wait before retrying (at least 1). */
  retryAfterSeconds(): number;
}

export class QueueFullError extends Error {
  /** Seconds the client should wait before retrying. */
  readonly retryAfter: number;

  constructor(o: { retryAfter: number; maxConcurrent: number; maxQueue: number }) {
    super(
      `the server is busy: ${o.maxConcurrent} requests are generating and ${o.maxQueue} are ` +
        `queued; retry in ${o.retryAfter} s`,
    );
    this.name = "QueueFullError";
    this.retryAfter = o.retryAfter;
  }
}

interface Waiter {
  grant: (release: Release) => void;
}

export function createAdmission(opts: AdmissionOptions): Admission {
  const { maxConcurrent, maxQueue } = opts;
  if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1) {
    throw new RangeError(`maxConcurrent must be an integer >= 1 (got ${maxConcurrent})`);
  }
  if (!Number.isInteger(maxQueue) || maxQueue < 0) {
    throw new RangeError(`maxQueue must be an integer >= 0 (got ${maxQueue})`);
  }
  let active = 0;
  const waiters: Waiter[] = [];
  // Smoothed time a slot is held, for the Retry-After estimate.
  let meanHoldMs = 0;

  function makeRelease(): Release {
    const start = performance.now();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const held = performance.now() - start;
      meanHoldMs = meanHoldMs === 0 ? held : meanHoldMs * 0.9 + held * 0.1;
      const next = waiters.shift();
      // The slot passes straight to the next waiter, so `active` stays the same.
      if (next) next.grant(makeRelease());
      else active--;
    };
  }

  function retryAfterSeconds(): number {
    // Roughly the time for the queue ahead to drain through the slots.
    const waves = (waiters.length + 1) / maxConcurrent;
    return Math.min(60, Math.max(1, Math.ceil((meanHoldMs * waves) / 1000)));
  }

  return {
    acquire(signal) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      if (active < maxConcurrent) {
        active++;
        return Promise.resolve(makeRelease());
      }
      if (waiters.length >= maxQueue) {
        return Promise.reject(
          new QueueFullError({ retryAfter: retryAfterSeconds(), maxConcurrent, maxQueue }),
        );
      }
      return new Promise<Release>((resolve, reject) => {
        const onAbort = () => {
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          reject(signal!.reason);
        };
        const waiter: Waiter = {
          grant(release) {
            signal?.removeEventListener("abort", onAbort);
            resolve(release);
          },
        };
        waiters.push(waiter);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
    get active() {
      return active;
    },
    get queued() {
      return waiters.length;
    },
    maxConcurrent,
    maxQueue,
    retryAfterSeconds,
  };
}
