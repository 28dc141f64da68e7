/**
 * Admission control in one process: a cap on concurrent generations, and keyed queues (one key's
 * tasks in turn, different keys in parallel). Rate limits are counters in the store
 * (`BotStore.takeRate`, with the sliding-window rule `rateStep`), so that replicas share them.
 */

export interface RateLimit {
  /** Hits allowed per key (a user's questions) in each window. */
  max: number;
  windowMs: number;
}

/** At most `max` holders at once; the rest wait in arrival order. */
export function createSemaphore(max: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    get active() {
      return active;
    },
    get waiting() {
      return waiting.length;
    },
    /** Waits for a slot; returns the function that gives it back. Rejects if `signal` aborts. */
    acquire(signal?: AbortSignal): Promise<() => void> {
      const release = () => {
        const next = waiting.shift();
        if (next) next();
        else active--;
      };
      if (active < max) {
        active++;
        return Promise.resolve(once(release));
      }
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const grant = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(once(release));
        };
        const onAbort = () => {
          const i = waiting.indexOf(grant);
          if (i >= 0) waiting.splice(i, 1);
          reject(signal!.reason);
        };
        waiting.push(grant);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}

/**
 * Runs tasks one after another per key and in parallel across keys. A task's failure is reported
 * to `onError` and never stops later tasks of the same or other keys.
 */
export function createKeyedQueue(onError: (key: number, err: unknown) => void) {
  const tails = new Map<number, Promise<void>>();
  const pending = new Set<Promise<void>>();
  return {
    /** Tasks queued or running for this key. */
    depth: new Map<number, number>(),
    run(key: number, task: () => Promise<void>): void {
      const depth = this.depth;
      depth.set(key, (depth.get(key) ?? 0) + 1);
      const prev = tails.get(key) ?? Promise.resolve();
      const next = prev.then(task).catch((err) => onError(key, err)).finally(() => {
        const d = (depth.get(key) ?? 1) - 1;
        if (d === 0) depth.delete(key);
        else depth.set(key, d);
        if (tails.get(key) === next) tails.delete(key);
        pending.delete(next);
      });
      tails.set(key, next);
      pending.add(next);
    },
    /** Resolves when every queued task has finished. */
    async drain(): Promise<void> {
      while (pending.size) await Promise.allSettled([...pending]);
    },
  };
}
