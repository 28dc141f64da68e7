/**
 * The examples the trainer trains on: read from a data build's token shards (train / valid
 * split), cut to `maxLength`, and served as micro-batches in a per-epoch shuffled order. The
 * order depends only on the RNG state at the start of the epoch, which checkpoints store
 * together with the position inside the epoch, so a resumed run sees exactly the batches the
 * uninterrupted run would have.
 */

import { readTokenShard, tokenShardPaths } from "../../data/mod.ts";
import { type Rng, rngFromState, shuffle } from "../../base/mod.ts";

export interface Example {
  inputIds: number[];
  labels: number[];
}

export interface LoadedExamples {
  examples: Example[];
  /** Examples dropped because their prompt alone exceeds maxLength. */
  dropped: number;
  files: string[];
}

/**
 * Why examples were dropped: a prompt of exactly `maxLength` tokens is dropped too (no position is
 * left for the first answer token), so the message says "maxLength or more", not "exceeds".
 */
export function droppedMessage(dropped: number, maxLength: number): string {
  return `${dropped} training examples dropped: their prompt takes ${maxLength} tokens or more ` +
    `(maxLength ${maxLength}), leaving no room for the answer`;
}

/** Reads every example of a split; cuts each to `maxLength` tokens. */
export async function loadExamples(
  dataDir: string,
  split: "train" | "valid",
  maxLength: number,
): Promise<LoadedExamples> {
  let files: string[];
  try {
    files = await tokenShardPaths(dataDir, split);
  } catch (err) {
    throw new Error(
      `--data ${dataDir}: not a data build with token shards (${(err as Error).message}); ` +
        "build one with `deno task data`",
    );
  }
  const examples: Example[] = [];
  let dropped = 0;
  for (const file of files) {
    const shard = await readTokenShard(file);
    for (const ex of shard) {
      // The prompt (up to and including <sop>) must fit: the first label is predicted from it.
      if (ex.seqLen >= maxLength) {
        dropped++;
        continue;
      }
      const n = Math.min(ex.inputIds.length, maxLength);
      examples.push({
        inputIds: Array.from(ex.inputIds.subarray(0, n)),
        labels: Array.from(ex.labels.subarray(0, n)),
      });
    }
  }
  return { examples, dropped, files };
}

/** Where the data order stands: the RNG state the current epoch was shuffled with, and the cursor. */
export interface DataOrderState {
  epoch: number;
  /** Micro-batches of this epoch already consumed. */
  batchInEpoch: number;
  /** RNG words before this epoch's shuffle. */
  epochRng: [number, number, number, number];
}

/** Serves micro-batches (lists of example indices) epoch after epoch. */
export interface BatchStream {
  /** Micro-batches per epoch. */
  readonly batchesPerEpoch: number;
  next(): { indices: number[]; epoch: number };
  state(): DataOrderState;
}

export function createBatchStream(
  count: number,
  batchSize: number,
  start: DataOrderState,
): BatchStream {
  if (count === 0) throw new Error("the training split has no examples");
  const perEpoch = Math.ceil(count / batchSize);
  let epoch = start.epoch;
  let cursor = start.batchInEpoch;
  let epochRng = start.epochRng;
  let rng: Rng = rngFromState(epochRng);
  let order = shuffle([...Array(count).keys()], rng);
  return {
    batchesPerEpoch: perEpoch,
    next() {
      if (cursor >= perEpoch) {
        epoch++;
        cursor = 0;
        epochRng = rng.state();
        rng = rngFromState(epochRng);
        order = shuffle([...Array(count).keys()], rng);
      }
      const indices = order.slice(cursor * batchSize, (cursor + 1) * batchSize);
      cursor++;
      return { indices, epoch };
    },
    state: () => ({
      epoch,
      batchInEpoch: cursor,
      epochRng: [...epochRng] as DataOrderState["epochRng"],
    }),
  };
}
