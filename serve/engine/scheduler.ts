/**
 * Continuous batching: one loop per engine. Requests wait in a queue; at every step the loop first
 * admits waiting requests into free slots (prompts of similar length prefilled together, each
 * first token chosen from the prefill logits; while others are decoding, only up to a budget of
 * prompt tokens per step, so a burst of arrivals does not freeze the answers already streaming),
 * then advances every live sequence by one token in a single batched decode step. A request that
 * arrives while others are generating joins at the next step; a finished or aborted sequence
 * leaves at once and its slot goes to the next request.
 *
 * Token choice per sequence: ids >= the text vocabulary are never chosen, repetition penalty over
 * prompt + answer ids, then greedy or seeded sampling with the sequence's own generator. NaN or
 * ±∞ in the logits (checked before the non-text mask, README §5) make the step choose id 5 as
 * ChatGLM's chat does (`InvalidScoreLogitsProcessor`), so one bad step cannot crash a server.
 *
 * Grouped decoding (`gpuSampling`, on by default where the decoder has `decodeGroup`): the live
 * sequences advance k steps at a time with their ids sampled on the GPU (the same ids as the
 * host sampler, see core/kernels/sampling) and read back once per group (group_decode.ts says
 * why and how k grows). Stops (end ids, max tokens, stop strings via `onToken`) and aborts are
 * checked as the ids arrive; the steps after a stop are discarded. A batch with a sequence that
 * samples (temperature > 0) with the UTF-8 mask takes the per-token path; greedy ids are checked
 * against the mask on the host.
 */

import type { Decoder } from "./decoder.ts";
import type { Rng } from "../../base/mod.ts";
import { chooseToken, type SamplerSettings } from "./sampling.ts";
import type { ByteTokens } from "./utf8_tokens.ts";
import type { FinishReason } from "./types.ts";
import {
  gpuSamplable,
  groupSteps,
  MAX_GROUP,
  packGroup,
  queuedRng,
  utf8Allows,
} from "./group_decode.ts";

export interface SequenceRequest {
  promptIds: number[];
  settings: SamplerSettings;
  rng: Rng;
  /** New tokens at most (already capped by the context). */
  maxNewTokens: number;
  signal?: AbortSignal;
  /** Each new token (the end id included); return true to stop here (a stop string matched). */
  onToken(id: number): boolean;
  /** Called once: the reason, or an error that ended the sequence. */
  onEnd(reason: FinishReason, error?: unknown): void;
}

export interface SchedulerOptions {
  /** Ids at and above this are not tokens (tokenizer textVocabSize). */
  textVocab: number;
  /** `<eop>`: ends a sequence (kept in its output). */
  endId: number;
  /** More ids that end a sequence (a tokenizer's end-of-turn ids: `<|im_end|>`, eos lists). */
  endIds?: readonly number[];
  /** The vocabulary's byte tokens, for requests that ask for `validUtf8`. */
  bytes?: ByteTokens;
  /**
   * Prompt tokens prefilled between two decode steps while other sequences are decoding
   * (default 512; at least one prompt is always admitted). Bounds how long a burst of new
   * requests stalls the answers already streaming; on an idle engine every free slot is filled.
   */
  prefillBudget?: number;
  /**
   * Sample on the GPU and read ids back once per group of steps when the decoder can
   * (`decodeGroup`). True (the default): every request the GPU sampler can take (all but
   * sampling with the UTF-8 mask). `"greedy"`: greedy requests only. False: every step reads its
   * logits and samples on the host (the per-token path).
   */
  gpuSampling?: boolean | "greedy";
  /** Most steps in one group (default 16). */
  maxGroup?: number;
}

export interface Scheduler {
  submit(seq: SequenceRequest): void;
  stats(): { active: number; queued: number; tokensGenerated: number };
  /** Ends every sequence with "abort" and stops the loop once the current step is done. */
  close(): Promise<void>;
}

interface Live {
  req: SequenceRequest;
  slot: number;
  /** Prompt then generated ids: the repetition penalty's `seen`. */
  seen: number[];
  generated: number;
  last: number;
  ended: boolean;
  /** Draws made for a group's steps that were redone on the host: used before new ones. */
  queued: number[];
  /** The sequence's generator with `queued` in front: every choice draws through it. */
  rng: Rng;
  /** Steps of its next group (grows 1, 2, 4, … to maxGroup). */
  target: number;
  /** Removes the abort listener (requests may share a long-lived signal). */
  unlisten?: () => void;
}

const INVALID_SCORE_ID = 5;

export function createScheduler(decoder: Decoder, opts: SchedulerOptions): Scheduler {
  const V = decoder.vocabSize;
  const ends = new Set([opts.endId, ...(opts.endIds ?? [])]);
  const queue: Live[] = [];
  const active: Live[] = [];
  const free: number[] = [];
  for (let s = decoder.slots - 1; s >= 0; s--) free.push(s);
  let tokensGenerated = 0;
  let closed = false;
  let wake: (() => void) | null = null;
  let running: Promise<void> | null = null;

  // Set by every event (submit, abort, close) so that one arriving while the loop is busy is not
  // missed when the loop next decides whether to sleep.
  let kicked = false;
  const poke = () => {
    kicked = true;
    const w = wake;
    wake = null;
    w?.();
  };

  const end = (seq: Live, reason: FinishReason, error?: unknown) => {
    if (seq.ended) return;
    seq.ended = true;
    seq.unlisten?.();
    seq.req.onEnd(reason, error);
  };

  const releaseSlot = (seq: Live) => {
    const i = active.indexOf(seq);
    if (i >= 0) active.splice(i, 1);
    if (seq.slot >= 0) {
      decoder.release(seq.slot);
      free.push(seq.slot);
      seq.slot = -1;
    }
  };

  /** Drops aborted sequences (queued or live) before a step. */
  const sweep = () => {
    for (let i = queue.length - 1; i >= 0; i--) {
      if (queue[i].ended || queue[i].req.signal?.aborted) {
        end(queue[i], "abort");
        queue.splice(i, 1);
      }
    }
    for (const seq of [...active]) {
      if (seq.ended || seq.req.signal?.aborted) {
        end(seq, "abort");
        releaseSlot(seq);
      }
    }
    // A group in flight still writes to the cache: the loop lands it first.
    if (active.length === 0 && flight === null) decoder.idle();
  };

  /** Chooses the next token from one logits row and applies the stop rules. */
  const advance = (seq: Live, row: Float32Array) => {
    if (seq.ended || seq.req.signal?.aborted) {
      end(seq, "abort");
      releaseSlot(seq);
      return;
    }
    let bad = false;
    for (let i = 0; i < row.length; i++) {
      if (!Number.isFinite(row[i])) {
        bad = true;
        break;
      }
    }
    if (bad) {
      row.fill(0);
      if (INVALID_SCORE_ID < row.length) row[INVALID_SCORE_ID] = 5e4;
    }
    const id = chooseToken(
      row,
      opts.textVocab,
      seq.req.settings,
      seq.seen,
      seq.rng,
      opts.bytes,
    );
    accept(seq, id);
  };

  /** Takes `id` as the sequence's next token and applies the stop rules. */
  const accept = (seq: Live, id: number) => {
    seq.generated++;
    tokensGenerated++;
    seq.seen.push(id);
    seq.last = id;
    let stopped = false;
    try {
      stopped = seq.req.onToken(id);
    } catch (err) {
      end(seq, "stop", err);
      releaseSlot(seq);
      return;
    }
    if (ends.has(id) || stopped) {
      end(seq, "stop");
      releaseSlot(seq);
    } else if (seq.generated >= seq.req.maxNewTokens) {
      end(seq, "length");
      releaseSlot(seq);
    }
  };

  const budget = opts.prefillBudget ?? 512;

  /** Prefills `group` (slots taken) and chooses each first token. */
  const prefillGroup = async (group: Live[]) => {
    if (group.length > 1 && decoder.prefillMany) {
      let logits: Float32Array;
      try {
        logits = await decoder.prefillMany(
          group.map((s) => ({ slot: s.slot, ids: s.req.promptIds })),
        );
      } catch (err) {
        for (const seq of group) {
          end(seq, "stop", err);
          releaseSlot(seq);
        }
        return;
      }
      group.forEach((seq, i) => advance(seq, logits.subarray(i * V, (i + 1) * V)));
      return;
    }
    for (const seq of group) {
      try {
        advance(seq, await decoder.prefill(seq.slot, seq.req.promptIds));
      } catch (err) {
        end(seq, "stop", err);
        releaseSlot(seq);
      }
    }
  };

  const admit = async () => {
    const streaming = active.length > 0;
    let spent = 0;
    const admitted: Live[] = [];
    while (free.length > 0 && queue.length > 0 && !closed) {
      if (streaming && spent > 0 && spent + queue[0].req.promptIds.length > budget) break;
      const seq = queue.shift()!;
      if (seq.ended || seq.req.signal?.aborted) {
        end(seq, "abort");
        continue;
      }
      spent += seq.req.promptIds.length;
      seq.slot = free.pop()!;
      active.push(seq);
      admitted.push(seq);
    }
    // Prompts of similar length prefill together (a left-padded batch computes every pad too):
    // longest first, a group grows while its padded size stays within 1.5× its real tokens.
    admitted.sort((a, b) => b.req.promptIds.length - a.req.promptIds.length);
    let group: Live[] = [];
    let real = 0;
    for (const seq of admitted) {
      const n = seq.req.promptIds.length;
      const width = group.length > 0 ? group[0].req.promptIds.length : n;
      if (group.length > 0 && (group.length + 1) * width > 1.5 * (real + n)) {
        await prefillGroup(group);
        group = [];
        real = 0;
      }
      group.push(seq);
      real += n;
    }
    if (group.length > 0) await prefillGroup(group);
  };

  const gpuMode = opts.gpuSampling ?? true;
  const onGpu = (settings: SamplerSettings) =>
    gpuSamplable(settings, opts.bytes) &&
    (gpuMode === true || (settings.temperature ?? 0) === 0);
  const grouped = gpuMode !== false && decoder.decodeGroup !== undefined &&
    decoder.rewind !== undefined;
  const maxGroup = opts.maxGroup ?? MAX_GROUP;
  /** Positions the sequence's slot holds (its last id is fed by the next step). */
  const held = (seq: Live) => seq.req.promptIds.length + seq.generated - 1;

  /** A group of GPU-sampled steps on its way (recorded and submitted, ids not read yet). */
  interface Flight {
    batch: Live[];
    k: number;
    draws: number[][];
    ids: Promise<Int32Array>;
    /** Steps of earlier groups still in flight before this one (0 or the previous group's k). */
    ahead: number;
  }
  /** The group in flight whose ids the loop reads next. */
  let flight: Flight | null = null;

  /**
   * Records and submits a group for `batch` (see the module doc); `after`: the group in flight it
   * follows (its ids still on the GPU), whose steps count as done for the sizes here.
   */
  const launch = (batch: Live[], after: Flight | null): Flight => {
    const ahead = after ? after.k : 0;
    const k = groupSteps(
      batch.map((s) => ({
        target: s.target,
        remaining: s.req.maxNewTokens - s.generated - ahead,
        room: decoder.maxContext - held(s) - ahead,
      })),
      maxGroup,
    );
    const packed = packGroup(
      batch.map((s) => ({ settings: s.req.settings, seen: s.seen, rng: s.rng })),
      k,
      opts.bytes,
    );
    for (const s of batch) s.target = Math.min(maxGroup, s.target * 2);
    const ids = decoder.decodeGroup!({
      slots: batch.map((s) => s.slot),
      ids: batch.map((s) => s.last),
      follow: after !== null,
      steps: k,
      textVocab: opts.textVocab,
      settings: packed.settings,
      history: packed.history,
      utf8: packed.utf8,
    });
    // Awaited by `land`; until then a rejection is not unhandled.
    ids.catch(() => {});
    return { batch, k, draws: packed.draws, ids, ahead };
  };

  /**
   * Whether a group can follow `f` before its ids are read: the same sequences, all still live,
   * nobody waiting for a slot (they join between groups), and something left to generate.
   */
  const canFollow = (f: Flight, batch: Live[]) =>
    queue.length === 0 && batch.length === f.batch.length &&
    batch.every((s, i) => s === f.batch[i] && !s.req.signal?.aborted) &&
    batch.some((s) => s.req.maxNewTokens - s.generated > f.k) &&
    batch.every((s) => decoder.maxContext - held(s) > f.k);

  /**
   * Reads a group's ids and takes them (stops, aborts, redo on the host). `next`: the group that
   * follows it, already submitted; returns it, or null when it had to be discarded (a step of
   * this group is redone on the host, so the one after it started from a wrong id).
   */
  const land = async (f: Flight, next: Flight | null): Promise<Flight | null> => {
    const { batch, k } = f;
    const n = batch.length;
    let ids: Int32Array;
    try {
      ids = await f.ids;
    } catch (err) {
      if (next) await next.ids.catch(() => {});
      for (const seq of batch) {
        end(seq, "stop", err);
        releaseSlot(seq);
      }
      return null;
    }
    // Per sequence, the first step whose id cannot be taken as is: -1 from the decoder, or a
    // greedy id the UTF-8 mask would reject (see `utf8Allows`); k when every id can.
    const scratch = {};
    const firstBad = batch.map((s, i) => {
      if (s.slot < 0) return k;
      const mask = s.req.settings.validUtf8 && opts.bytes ? opts.bytes : null;
      const seen = mask ? [...s.seen] : [];
      for (let j = 0; j < k; j++) {
        const id = ids[j * n + i];
        if (id < 0) return j;
        if (mask) {
          if (!utf8Allows(id, Math.min(opts.textVocab, V), mask, seen, scratch)) return j;
          seen.push(id);
        }
      }
      return k;
    });
    const failed = firstBad.some((j) => j < k);
    let discarded = false;
    if (next && failed) {
      // Discarded: its draws go back in front, after this group's unused ones (queued below).
      const dropped = next;
      await dropped.ids.catch(() => {});
      dropped.batch.forEach((s, i) => s.queued.unshift(...dropped.draws[i]));
      next = null;
      discarded = true;
    }
    const redo: Live[] = [];
    batch.forEach((seq, i) => {
      for (let j = 0; j < k && seq.slot >= 0; j++) {
        if (seq.ended || seq.req.signal?.aborted) {
          end(seq, "abort");
          releaseSlot(seq);
          break;
        }
        const id = ids[j * n + i];
        if (j === firstBad[i]) {
          // The decoder could not choose (-1) or the UTF-8 mask rejects its greedy id:
          // this step again on the host, with the same draw (the later steps' draws stay queued
          // for the steps that follow).
          seq.queued.unshift(...f.draws[i].slice(j));
          redo.push(seq);
          break;
        }
        accept(seq, id);
      }
    });
    if (discarded || redo.length > 0) {
      // The slots hold the steps of discarded groups too: back to what the sequences took.
      for (const seq of batch) if (seq.slot >= 0) decoder.rewind!(seq.slot, held(seq));
    }
    if (redo.length > 0) await stepHost(redo);
    return next;
  };

  /** Advances `batch` by a group of GPU-sampled steps, the next one started before reading. */
  const stepGroup = async (batch: Live[]) => {
    const current = flight ?? launch(batch, null);
    const next = canFollow(current, batch) ? launch(batch, current) : null;
    flight = await land(current, next);
  };

  /** Takes the ids of a group still in flight (before a per-token step or the loop's end). */
  const drain = async () => {
    const f = flight;
    flight = null;
    if (f) await land(f, null);
  };

  const step = async () => {
    const batch = active.filter((s) => !s.ended);
    if (batch.length === 0) return;
    if (grouped && batch.every((s) => onGpu(s.req.settings))) {
      return await stepGroup(batch);
    }
    await drain();
    const live = batch.filter((s) => s.slot >= 0 && !s.ended);
    if (live.length > 0) await stepHost(live);
  };

  /** One step for `batch`: logits read back, ids chosen on the host. */
  const stepHost = async (batch: Live[]) => {
    let logits: Float32Array;
    try {
      logits = await decoder.decode(batch.map((s) => ({ slot: s.slot, id: s.last })));
    } catch (err) {
      for (const seq of batch) {
        end(seq, "stop", err);
        releaseSlot(seq);
      }
      return;
    }
    batch.forEach((seq, i) => advance(seq, logits.subarray(i * V, (i + 1) * V)));
  };

  // Requests submitted in the same turn of the event loop (a burst) are admitted together, so
  // an idle loop lets that turn finish before it looks at the queue.
  const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

  const loop = async () => {
    await settle();
    while (!closed) {
      kicked = false;
      sweep();
      await admit();
      sweep();
      if (active.length > 0) {
        await step();
        continue;
      }
      if (flight) {
        // Every sequence of the group in flight ended meanwhile: take it, then idle.
        await drain();
        continue;
      }
      if (queue.length > 0 || kicked || closed) continue;
      await new Promise<void>((resolve) => wake = resolve);
      await settle();
    }
    await drain();
    for (const seq of [...queue, ...active]) {
      end(seq, "abort");
      releaseSlot(seq);
    }
    queue.length = 0;
    decoder.idle();
  };

  return {
    submit(req) {
      if (closed) throw new Error("the engine is closed");
      const seq: Live = {
        req,
        slot: -1,
        seen: [...req.promptIds],
        generated: 0,
        last: -1,
        ended: false,
        queued: [],
        rng: req.rng,
        target: 1,
      };
      seq.rng = queuedRng(req.rng, seq.queued);
      if (req.maxNewTokens < 1) {
        end(seq, "length");
        return;
      }
      if (req.signal?.aborted) {
        end(seq, "abort");
        return;
      }
      // An abort wakes an idle loop so the slot is freed at once, not when the next request comes.
      const onAbort = () => {
        end(seq, "abort");
        poke();
      };
      req.signal?.addEventListener("abort", onAbort, { once: true });
      seq.unlisten = () => req.signal?.removeEventListener("abort", onAbort);
      queue.push(seq);
      running ??= loop().catch((err) => {
        // The loop itself never throws; if it did, fail every waiting sequence loudly.
        for (const s of [...queue, ...active]) end(s, "stop", err);
      });
      poke();
    },
    stats() {
      return {
        active: active.filter((s) => !s.ended).length,
        queued: queue.filter((s) => !s.ended).length,
        tokensGenerated,
      };
    },
    async close() {
      closed = true;
      poke();
      await running;
    },
  };
}
