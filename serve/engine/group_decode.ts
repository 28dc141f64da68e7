/**
 * The pieces of grouped decoding (the scheduler's GPU-sampled path, `Decoder.decodeGroup`): how
 * many steps the next group runs, each sequence's settings and draws for those steps, and a
 * generator that hands out draws made in advance before new ones.
 *
 * Why groups: a GPU→host round trip costs ~11 ms on llvmpipe whatever the work (CONVENTIONS), a
 * millisecond or two on hardware, so reading each token's logits caps decode far below what the
 * GPU can do. A group samples on the GPU and reads k steps' ids at once; stop conditions are
 * checked on the host when the ids arrive and the steps past a stop are discarded.
 *
 * Streaming stays smooth: a sequence's groups grow 1, 2, 4, … up to `maxGroup`, so its first
 * tokens arrive one by one and later ones in small groups; a sequence that joins shrinks the next
 * group of the batch back to 1 (so new requests join between groups, at most one group late).
 */

import type { Rng } from "../../base/mod.ts";
import { packSamplingRows, SETTINGS_WORDS, utf8State } from "../../core/mod.ts";
import { maskInvalidUtf8, type SamplerSettings } from "./sampling.ts";
import type { ByteTokens } from "./utf8_tokens.ts";

/** The most steps in one group (default). */
export const MAX_GROUP = 16;

/**
 * Whether the GPU sampler can choose for these settings with the vocabulary's byte tokens
 * `bytes` (else the host samples). The GPU applies the UTF-8 mask for single-byte-token
 * vocabularies ({@link packGroup}); for byte-level ones (`bytes.seqs`) it does not: greedy
 * choices are checked against it on the host instead ({@link utf8Allows}), sampling with it
 * stays on the host (masking renormalises the draw).
 */
export function gpuSamplable(settings: SamplerSettings, bytes?: ByteTokens): boolean {
  const t = settings.temperature ?? 0;
  if (settings.validUtf8 && bytes?.seqs && t > 0) return false;
  const p = settings.topP ?? 1;
  const k = settings.topK ?? 0;
  const r = settings.repetitionPenalty ?? 1;
  return t >= 0 && p > 0 && p <= 1 && Number.isInteger(k) && k >= 0 && r > 0;
}

/** One sequence of a group as the packer sees it. */
export interface GroupRow {
  settings: SamplerSettings;
  /** Prompt and answer ids so far (the repetition penalty's set before the group). */
  seen: readonly number[];
  /** The sequence's draws, in order. */
  rng: Rng;
}

/** The UTF-8 mask of a group (`DecodeGroup.utf8`). */
export interface GroupUtf8 {
  idOf: ArrayLike<number>;
  byteOf: ArrayLike<number>;
  state: Uint32Array;
}

/**
 * Settings words for `steps` steps of `rows` (`DecodeGroup.settings`) and the histories they
 * point at (each once). A sampling row draws one uniform per step from its generator, as the host
 * sampler does per chosen token; greedy rows draw none. With the vocabulary's single-byte tokens
 * `bytes`, rows that ask for `validUtf8` are masked on the GPU (`utf8`: the byte tables and each
 * row's trailing bytes; absent when no row asks or the vocabulary is byte-level).
 */
export function packGroup(
  rows: readonly GroupRow[],
  steps: number,
  bytes?: ByteTokens,
): { settings: Uint32Array; history: Int32Array; draws: number[][]; utf8?: GroupUtf8 } {
  const masked = bytes !== undefined && !bytes.seqs && rows.some((r) => r.settings.validUtf8);
  const n = rows.length;
  const draws = rows.map((r) =>
    (r.settings.temperature ?? 0) > 0 ? Array.from({ length: steps }, () => r.rng.next()) : []
  );
  const settings = new Uint32Array(steps * n * SETTINGS_WORDS);
  let history: Int32Array = new Int32Array(1);
  for (let j = 0; j < steps; j++) {
    const packed = packSamplingRows(rows.map((r, i) => ({
      temperature: r.settings.temperature,
      topP: r.settings.topP,
      topK: r.settings.topK,
      repetitionPenalty: r.settings.repetitionPenalty,
      uniform: draws[i][j] ?? 0,
      history: j === 0 ? r.seen : undefined,
      validUtf8: masked && r.settings.validUtf8,
    })));
    if (j === 0) history = packed.history;
    else {
      // Every step's rows point at the step-0 histories.
      for (let i = 0; i < n; i++) {
        packed.settings[i * SETTINGS_WORDS + 5] = settings[i * SETTINGS_WORDS + 5];
        packed.settings[i * SETTINGS_WORDS + 6] = settings[i * SETTINGS_WORDS + 6];
      }
    }
    settings.set(packed.settings.subarray(0, n * SETTINGS_WORDS), j * n * SETTINGS_WORDS);
  }
  if (!masked) return { settings, history, draws };
  const state = Uint32Array.from(rows, (r) => utf8State(r.seen, bytes!.byteOf));
  return { settings, history, draws, utf8: { idOf: bytes!.idOf, byteOf: bytes!.byteOf, state } };
}

/**
 * A generator that first hands out `queued` draws (made in advance for a group whose later steps
 * were not used), then continues `rng`; `next()` stays the same stream either way.
 */
export function queuedRng(rng: Rng, queued: number[]): Rng {
  const nextU32 = () =>
    queued.length > 0 ? Math.round(queued.shift()! * 4294967296) : rng.nextU32();
  return {
    nextU32,
    next: () => queued.length > 0 ? queued.shift()! : rng.next(),
    below(n) {
      if (queued.length === 0) return rng.below(n);
      if (!(Number.isInteger(n) && n > 0 && n <= 0x100000000)) throw new RangeError(`below(${n})`);
      const limit = Math.floor(4294967296 / n) * n;
      let x = nextU32();
      while (x >= limit) x = nextU32();
      return x % n;
    },
    state: () => {
      if (queued.length > 0) throw new Error("queuedRng: state() while draws are queued");
      return rng.state();
    },
  };
}

/**
 * Steps of the next group: the smallest target of the batch's sequences (each grows 1, 2, 4, …
 * up to `maxGroup` per group it runs), no more than the longest remaining answer needs and no
 * more than the fullest slot has room for.
 */
export function groupSteps(
  seqs: readonly { target: number; remaining: number; room: number }[],
  maxGroup = MAX_GROUP,
): number {
  let k = maxGroup;
  let remaining = 1;
  for (const s of seqs) {
    k = Math.min(k, s.target, s.room);
    remaining = Math.max(remaining, s.remaining);
  }
  return Math.max(1, Math.min(k, remaining));
}

/**
 * Whether the host's UTF-8 mask (`maskInvalidUtf8`) keeps `id` after `seen`. For greedy choice
 * this makes a GPU id exact: the mask only removes ids and leaves the others' logits alone, so an
 * argmax it keeps is also the masked row's argmax (first index on ties too). A rejected id is
 * redone on the host with the real logits (which also covers the mask's "nothing allowed" case).
 */
export function utf8Allows(
  id: number,
  limit: number,
  bytes: ByteTokens,
  seen: readonly number[],
  scratch: { row?: Float32Array },
): boolean {
  if (!scratch.row || scratch.row.length !== limit) scratch.row = new Float32Array(limit);
  const row = scratch.row;
  row.fill(0);
  maskInvalidUtf8(row, limit, bytes, seen);
  return row[id] > -Infinity;
}
