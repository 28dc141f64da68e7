/**
 * Decode without a host round trip per token: `k` slot decode steps in one submission, each
 * sampling its ids on the GPU (core/kernels/sampling) into a ring of generated ids and feeding
 * them to the next step's embedding lookup there; the host reads the ring once, after the last
 * step. A GPU→host round trip costs ~11 ms on llvmpipe whatever the work (CONVENTIONS), so a
 * group of k steps pays it once instead of k times.
 *
 * Record once, replay: what differs between the steps of a group (the ids fed, each row's
 * position and cache length, which step's sampler settings and ring row) lives in GPU memory and
 * is moved on by a small kernel after each step (`advanceDecode`), so every step is the same
 * commands with the same bind groups and uniforms. The group records step 0 through the model's
 * ordinary code (captured, core/gpu/recording.ts) and encodes it again k - 1 times; the host's
 * cost of a step (bind groups, error scopes, the tape's bookkeeping: ~2 ms on llvmpipe for the
 * tiny model) is paid once per group. The attention kernel's variant is chosen for the group's
 * longest row at its last step; each row attends to its own length, read from GPU memory.
 *
 * Pipelining (`follow`): a group may start from the previous group's last ids while those are
 * still on the GPU (its ring is carried over, its ids joining the repetition penalty's history),
 * so the host records group g + 1 before it reads group g and the readback is hidden. Everything
 * up to the readback happens synchronously, so a caller can start the next group before awaiting
 * this one; each slot's length grows at once.
 */

import {
  beginCapture,
  beginRecording,
  type Capture,
  discardRecording,
  endCapture,
  recordCopy,
  type Recording,
  replayCapture,
  submit,
} from "../../gpu/recording.ts";
import { createTape, scope, unref, type Var } from "../../autograd/tape.ts";
import { linearForward } from "../../nn/linear.ts";
import { advanceDecode, sampleTokens, SETTINGS_WORDS, utf8IdTable } from "../../kernels/mod.ts";
import type { Gpu } from "../../gpu/mod.ts";
import {
  readTensor,
  releaseTensor,
  reshape,
  type Tensor,
  uploadTensor,
} from "../../tensor/tensor.ts";
import { slotAttention } from "./attention.ts";
import { type ChatGLMCache, checkCache, checkSlot } from "./cache.ts";
import { chatglmHidden } from "./forward.ts";
import { positionAt } from "./inputs.ts";
import type { ChatGLMModel } from "./model.ts";
import type { Attend } from "./block.ts";
import { checkIds, type StackPass, type StepModel } from "./step.ts";

/** A group of decode steps over some slots, sampled on the GPU. */
export interface SlotGroup {
  /** The slots (prefilled, distinct); row i of every step is `slots[i]`. */
  slots: number[];
  /** The id each slot is fed at the group's first step (its last chosen id). */
  ids: number[];
  /**
   * Start from the previous group's last ids, still on the GPU (same slots, same order); `ids`
   * is then ignored. The previous group's ids join each row's penalty history.
   */
  follow?: boolean;
  /** Steps in the group (k >= 1). */
  steps: number;
  /** Ids at and above this are never sampled. */
  textVocab: number;
  /**
   * The sampler's settings of every step: `steps` blocks of `slots.length` rows of
   * `SETTINGS_WORDS` words (`packSamplingRows` per step, concatenated), with `history` the ids
   * they point at (the ids before the group; the group's own ids are added on the GPU).
   */
  settings: Uint32Array;
  history: Int32Array;
  /**
   * The UTF-8 mask of the rows whose settings flag it (`validUtf8`; vocabularies of single-byte
   * tokens): each byte value's token id (256, -1: none), each id's byte value (-1: not a byte
   * token), and each row's trailing bytes before the group (`utf8State` of its ids; with
   * `follow`, carried over from the previous group on the GPU instead).
   */
  utf8?: { idOf: ArrayLike<number>; byteOf: ArrayLike<number>; state: Uint32Array };
  /**
   * Called with the recorded step (its dispatches) before the group is submitted: benchmarks
   * time each dispatch of a step alone (bench/dispatch.ts). The capture's bind groups stay valid
   * while the model and cache live.
   */
  onCapture?: (step: Capture) => void;
}

/**
 * What a group needs of an architecture, the rest being shared (slot cache, sampler, ring,
 * replay): ChatGLM's below, the Llama family's in ../llama/decode_group.ts.
 */
export interface GroupArch<A> {
  model: StepModel & { config: { vocabSize: number } };
  /** The forward pass up to the final norm, with `attend` as the attention. */
  pass: StackPass<A>;
  /** The slot attention of a step: positions `pos`, (slot, length) rows `info`. */
  attend(pos: Tensor, info: Tensor, maxKeys: number): A;
  /**
   * Each row's position words at cache length `length` (the token fed there), the positions'
   * shape for `n` rows, and the one word per row (`row·stride + offset`) that grows by one per
   * step. Throws when a row's positions do not move that way (a slot still inside its prompt).
   */
  positions(slot: number, length: number): number[];
  posShape(n: number): number[];
  posBump: { stride: number; offset: number };
}

/** ChatGLM's: 2-D positions; a generated token's block position grows by one per step. */
function chatglmArch(model: ChatGLMModel, cache: ChatGLMCache): GroupArch<Attend> {
  return {
    model,
    pass: (tape, ids, attend, options) => chatglmHidden(tape, model, ids, attend, options),
    attend: (pos, info, maxKeys) => slotAttention(model.config, cache, pos, info, maxKeys),
    positions(slot, length) {
      const layout = cache.slots[slot].layout!;
      const [p0, p1] = positionAt(layout, length);
      const [q0, q1] = positionAt(layout, length + 1);
      if (q0 !== p0 || q1 !== p1 + 1) {
        throw new Error(`decodeSlotsGroup: slot ${slot} is not past its prompt's context`);
      }
      return [p0, p1];
    },
    posShape: (n) => [n, 2, 1],
    posBump: { stride: 2, offset: 1 },
  };
}

/**
 * Runs the group; returns the sampled ids [steps, slots.length] (step-major). Each slot's cache
 * grows by `steps` positions.
 */
export function decodeSlotsGroup(
  model: ChatGLMModel,
  group: SlotGroup,
  cache: ChatGLMCache,
): Promise<Int32Array> {
  return decodeGroupOf(chatglmArch(model, cache), group, cache);
}

/** {@link decodeSlotsGroup} for any architecture. */
export async function decodeGroupOf<A>(
  arch: GroupArch<A>,
  group: SlotGroup,
  cache: ChatGLMCache,
): Promise<Int32Array> {
  const { gpu, config } = arch.model;
  checkCache(cache, "decodeSlotsGroup");
  const { slots, steps: k } = group;
  const n = slots.length;
  if (n === 0 || group.ids.length !== n) {
    throw new Error(
      `decodeSlotsGroup: expected one id per slot (${n} slots, ${group.ids.length} ids)`,
    );
  }
  if (!Number.isInteger(k) || k < 1) {
    throw new Error(`decodeSlotsGroup: steps must be >= 1, got ${k}`);
  }
  if (group.settings.length !== k * n * SETTINGS_WORDS) {
    throw new Error(
      `decodeSlotsGroup: settings hold ${group.settings.length} words, expected ${
        k * n * SETTINGS_WORDS
      } (${k} steps × ${n} rows × ${SETTINGS_WORDS})`,
    );
  }
  const prev = carried.get(cache);
  if (group.follow) {
    if (!prev || prev.slots.length !== n || prev.slots.some((s, i) => s !== slots[i])) {
      throw new Error("decodeSlotsGroup: follow needs a previous group over the same slots");
    }
    if (prev.utf8 !== (group.utf8 !== undefined)) {
      throw new Error("decodeSlotsGroup: follow needs the previous group's UTF-8 mask setting");
    }
  } else checkIds(group.ids, config.vocabSize, "decodeSlotsGroup ids");
  const utf8 = group.utf8;
  if (utf8 && (utf8.idOf.length !== 256 || utf8.state.length !== n)) {
    throw new Error(
      `decodeSlotsGroup: the UTF-8 mask needs 256 byte ids and ${n} row states, got ` +
        `${utf8.idOf.length} and ${utf8.state.length}`,
    );
  }
  const seen = new Set<number>();
  for (const slot of slots) {
    checkSlot(cache, slot, "decodeSlotsGroup");
    if (seen.has(slot)) throw new Error(`decodeSlotsGroup: slot ${slot} appears twice`);
    seen.add(slot);
    const state = cache.slots[slot];
    if (!state.layout || state.length === 0) {
      throw new Error(`decodeSlotsGroup: slot ${slot} is free; run prefillSlot on it first`);
    }
    if (state.length + k > cache.capacity) {
      throw new Error(
        `decodeSlotsGroup: slot ${slot} holds ${state.length} of ${cache.capacity} positions; ` +
          `${k} more do not fit`,
      );
    }
  }
  // Ring rows padded so that every row's view starts on the storage offset alignment.
  const align = (gpu.limits.minStorageBufferOffsetAlignment ?? 256) / 4;
  const stride = Math.ceil(n / align) * align;
  // Row 0: the rows' UTF-8 states; rows 1..c: the previous group's ids (follow); step j writes
  // row c + j + 1.
  const c = group.follow ? prev!.k : 0;
  const ringData = new Int32Array((c + k + 1) * stride);
  if (utf8 && !group.follow) {
    ringData.set(new Int32Array(utf8.state.buffer, utf8.state.byteOffset, n));
  }
  const uploads: Tensor[] = [];
  const upload = (data: Int32Array | Uint32Array, shape: number[], label: string) => {
    const t = uploadTensor(gpu, data, shape, undefined, { label });
    uploads.push(t);
    return t;
  };
  // The ring outlives this call when a following group copies from it (see `carried`).
  const ring = uploadTensor(gpu, ringData, [ringData.length], "i32", { label: "decode ring" });
  const held: Carried = {
    ring,
    first: c + 1,
    k,
    stride,
    slots: [...slots],
    refs: 2,
    utf8: utf8 !== undefined,
  };
  // The UTF-8 mask's byte ids follow the settings (the sampler reads them there).
  const settingsWords = utf8 ? concatU32(group.settings, utf8IdTable(utf8.idOf)) : group.settings;
  const settingsT = upload(settingsWords, [settingsWords.length], "sampling settings");
  const historyT = upload(
    group.history.length ? group.history : new Int32Array(1),
    [Math.max(1, group.history.length)],
    "history",
  );
  // Everything a step reads that changes from one step to the next is in GPU memory, moved on
  // by `advanceDecode` after each step: the ids fed (`ids`), each row's position and cache
  // length (`pos`, `info`: the growing position word and the length both grow by one)
  // and the step counter the sampler reads its settings and ring row by. So every step is the
  // same commands: step 0 is recorded (and captured), the others replay it.
  const lengths = slots.map((s) => cache.slots[s].length);
  const pos = Int32Array.from(slots.flatMap((slot, i) => arch.positions(slot, lengths[i])));
  const info = new Int32Array(n * 2);
  let maxKeys = 0;
  slots.forEach((slot, i) => {
    info.set([slot, lengths[i]], i * 2);
    // The attention kernel sizes its score buffer for the longest row at the group's last step.
    maxKeys = Math.max(maxKeys, lengths[i] + k);
  });
  const posT = upload(pos, arch.posShape(n), "pos");
  const infoT = upload(info, [n, 2], "slotInfo");
  const idsT = upload(
    Int32Array.from(group.follow ? slots.map(() => 0) : group.ids),
    [n, 1],
    "ids",
  );
  const counter = upload(new Uint32Array(1), [1], "step counter");
  let rec: Recording | null = null;
  let pending: Promise<void> | null = null;
  try {
    rec = beginRecording(gpu);
    if (group.follow) {
      const p = prev!;
      const from = p.ring.byteOffset + p.first * p.stride * 4;
      recordCopy(
        rec,
        p.ring.buffer,
        from,
        ring.buffer,
        ring.byteOffset + stride * 4,
        c * stride * 4,
      );
      // The ids fed first: the previous group's last step's.
      recordCopy(
        rec,
        p.ring.buffer,
        from + (p.k - 1) * p.stride * 4,
        idsT.buffer,
        idsT.byteOffset,
        n * 4,
      );
      // The rows' UTF-8 states as the previous group's steps left them.
      if (utf8) {
        recordCopy(rec, p.ring.buffer, p.ring.byteOffset, ring.buffer, ring.byteOffset, n * 4);
      }
    }
    beginCapture(rec);
    const tape = createTape(rec, false);
    let logits: Var | null = null;
    try {
      const attend = arch.attend(posT, infoT, maxKeys);
      logits = scope(tape, () => {
        const y = arch.pass(tape, idsT, attend, {});
        return linearForward(tape, arch.model.lmHead, y);
      });
      sampleTokens(
        rec,
        reshape(logits.value, [n, config.vocabSize]),
        group.textVocab,
        settingsT,
        historyT,
        {
          out: ring,
          outOffset: (c + 1) * stride,
          recent: { start: stride, count: c, stride },
          step: { counter, steps: k, stride },
          ...(utf8 ? { utf8: { table: group.settings.length, state: 0 } } : {}),
        },
      );
      advanceDecode(rec, n, {
        counter,
        ring,
        first: (c + 1) * stride,
        stride,
        ids: idsT,
        bumps: [{ tensor: posT, ...arch.posBump }, { tensor: infoT, stride: 2, offset: 1 }],
        ...(utf8 ? { utf8: { byteOf: byteTable(gpu, utf8.byteOf), state: 0 } } : {}),
      });
    } finally {
      if (logits) unref(tape, logits);
    }
    const step = endCapture(rec);
    group.onCapture?.(step);
    for (let j = 1; j < k; j++) replayCapture(step);
    pending = submit(rec);
    rec = null;
    // Recorded and submitted: the slots hold k more positions now (a following group may start
    // before this one is read), and this ring replaces the previous one as the one to follow.
    for (let i = 0; i < n; i++) cache.slots[slots[i]].length = lengths[i] + k;
    if (prev) drop(prev);
    carried.set(cache, held);
    const [, read] = await Promise.all([pending, readTensor(ring)]);
    const out = read as Int32Array;
    const ids = new Int32Array(k * n);
    for (let j = 0; j < k; j++) {
      ids.set(out.subarray((c + j + 1) * stride, (c + j + 1) * stride + n), j * n);
    }
    return ids;
  } catch (err) {
    if (rec) discardRecording(rec);
    if (pending) await pending.catch(() => {});
    // The hold of being followed, carried or not yet: nothing can follow a failed group.
    if (carried.get(cache) === held) carried.delete(cache);
    drop(held);
    throw err;
  } finally {
    // The readback's hold on the ring.
    drop(held);
    for (const t of uploads) releaseTensor(t);
  }
}

/** A group's ring while a following group may still copy its ids. */
interface Carried {
  ring: Tensor;
  /** Ring row of the group's first sampled ids; `k` rows of `stride` ids. */
  first: number;
  k: number;
  stride: number;
  slots: number[];
  /** Holds: its own readback, and being the ring the next group follows. */
  refs: number;
  /** Its row 0 holds the rows' UTF-8 states. */
  utf8: boolean;
}

function concatU32(a: Uint32Array, b: Uint32Array): Uint32Array {
  const out = new Uint32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Each id's byte value on the GPU (i32 [V]), uploaded once per table and device: a vocabulary's
 * table is the same for every group (~0.5 MB for 130k ids), kept while the table lives.
 */
const byteTables = new WeakMap<object, { gpu: Gpu; tensor: Tensor }>();

function byteTable(gpu: Gpu, byteOf: ArrayLike<number>): Tensor {
  const hit = byteTables.get(byteOf as object);
  if (hit && hit.gpu === gpu) return hit.tensor;
  if (hit) releaseTensor(hit.tensor);
  const tensor = uploadTensor(gpu, Int32Array.from(byteOf), [byteOf.length], "i32", {
    label: "UTF-8 byte table",
  });
  byteTables.set(byteOf as object, { gpu, tensor });
  return tensor;
}

/** The last group's ring per cache (what `follow` continues). */
const carried = new WeakMap<ChatGLMCache, Carried>();

function drop(c: Carried): void {
  if (--c.refs === 0) releaseTensor(c.ring);
}

/** Ends grouped decoding on `cache`: the last group's ring is freed (no group can follow). */
export function endGroups(cache: ChatGLMCache): void {
  const c = carried.get(cache);
  if (!c) return;
  carried.delete(cache);
  drop(c);
}

/**
 * Drops a slot's positions after `length` (they are overwritten by the next step): used when the
 * host must redo a step of a group (an id the GPU sampler could not choose, -1).
 */
export function rewindSlot(cache: ChatGLMCache, slot: number, length: number): void {
  checkSlot(cache, slot, "rewindSlot");
  const state = cache.slots[slot];
  if (!state.layout || !(Number.isInteger(length) && length >= 1 && length <= state.length)) {
    throw new Error(
      `rewindSlot: slot ${slot} holds ${state.length} positions; cannot keep ${length}`,
    );
  }
  state.length = length;
}
