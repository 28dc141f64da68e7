/**
 * The engine's `Decoder` (serve/engine/decoder.ts) over an ONNX Runtime model: slots prefilled
 * one at a time, live slots advanced together in one batched graph run.
 *
 * The graph appends each step's keys at one shared column index for every row, so slots of
 * different lengths share a batched cache whose columns are not positions: each row's keys sit in
 * columns [0, own) followed by a gap up to `base`, then the columns every step since appended.
 * The explicit attention mask hides the gap (attention does not care where a key sits: rotary
 * already encoded its position). As long as the same set of slots decodes step after step (the
 * steady state), the cache tensors ORT returned are fed straight back, never copied; only when a
 * slot joins or leaves is the group repacked once, in JS.
 */

import type { Decoder } from "../engine/decoder.ts";
import type { RowLayout } from "../../core/mod.ts";
import type { OnnxModel } from "./runner.ts";
import type { OrtTensor } from "./ort.ts";

export interface OnnxDecoderOptions {
  slots: number;
  /** Positions per slot (default and maximum: the model's maxContext). */
  maxContext?: number;
  /** Dispose the model on close (default true). */
  ownsModel?: boolean;
}

interface SlotState {
  layout: RowLayout;
  /** Positions filled (prompt + generated). */
  length: number;
  /** The slot's own cache [1, kv heads, length, d] per layer (k0, v0, k1, …) while not in the group. */
  own: OrtTensor[] | null;
}

interface Group {
  /** Slots in row order, and the sequence each row holds (a re-prefilled slot is another one). */
  slots: number[];
  members: SlotState[];
  /** Batched cache [n, kv heads, columns, d] per layer (k0, v0, k1, …). */
  past: OrtTensor[];
  columns: number;
  /** Columns from `base` on hold every row's keys; row i's keys also fill [0, filled[i]). */
  base: number;
  filled: number[];
}

export function onnxDecoder(model: OnnxModel, opts: OnnxDecoderOptions): Decoder {
  const maxContext = Math.min(opts.maxContext ?? model.maxContext, model.maxContext);
  if (!Number.isInteger(opts.slots) || opts.slots < 1) {
    throw new RangeError(`decoder slots must be an integer >= 1, got ${opts.slots}`);
  }
  const rules = model.rules;
  const V = rules.vocabSize;
  const { cacheHeads: heads, headDim: d } = rules;
  const slots: (SlotState | null)[] = Array(opts.slots).fill(null);
  let group: Group | null = null;

  const checkSlot = (slot: number, what: string) => {
    if (!Number.isInteger(slot) || slot < 0 || slot >= opts.slots) {
      throw new RangeError(`${what}: slot ${slot} is outside 0..${opts.slots - 1}`);
    }
  };

  /** Copies one row's keys/values (compacted: gap removed) out of the group, per layer. */
  const rowCache = (g: Group, row: number): Float32Array[] => {
    const own = g.filled[row], tail = g.columns - g.base;
    const len = own + tail;
    return g.past.map((t) => {
      const src = t.data as Float32Array;
      const out = new Float32Array(heads * len * d);
      for (let h = 0; h < heads; h++) {
        const from = ((row * heads + h) * g.columns) * d;
        out.set(src.subarray(from, from + own * d), h * len * d);
        out.set(src.subarray(from + g.base * d, from + g.columns * d), (h * len + own) * d);
      }
      return out;
    });
  };

  /** Rebuilds the group for exactly `wanted` (slot order kept), moving caches in and out. */
  const regroup = (wanted: number[]) => {
    const caches = new Map<number, Float32Array[]>();
    if (group) {
      group.slots.forEach((slot, row) => {
        const s = slots[slot];
        if (!s || s !== group!.members[row]) return; // released (maybe re-prefilled): dropped
        const data = rowCache(group!, row);
        if (wanted.includes(slot)) caches.set(slot, data);
        else s.own = data.map((x) => model.tensor(x, [1, heads, s.length, d]));
      });
      for (const t of group.past) t.dispose();
      group = null;
    }
    for (const slot of wanted) {
      if (caches.has(slot)) continue;
      const s = slots[slot]!;
      caches.set(slot, s.own!.map((t) => t.data as Float32Array));
      for (const t of s.own!) t.dispose();
      s.own = null;
    }
    const n = wanted.length;
    const columns = Math.max(...wanted.map((slot) => slots[slot]!.length));
    const past: OrtTensor[] = [];
    const layers = caches.get(wanted[0])!.length;
    for (let k = 0; k < layers; k++) {
      const data = new Float32Array(n * heads * columns * d);
      wanted.forEach((slot, row) => {
        const len = slots[slot]!.length;
        const src = caches.get(slot)![k];
        for (let h = 0; h < heads; h++) {
          data.set(src.subarray(h * len * d, (h + 1) * len * d), ((row * heads + h) * columns) * d);
        }
      });
      past.push(model.tensor(data, [n, heads, columns, d]));
    }
    group = {
      slots: [...wanted],
      members: wanted.map((slot) => slots[slot]!),
      past,
      columns,
      base: columns,
      filled: wanted.map((slot) => slots[slot]!.length),
    };
  };

  const releaseSlot = (slot: number) => {
    checkSlot(slot, "release");
    const s = slots[slot];
    if (!s) return;
    for (const t of s.own ?? []) t.dispose();
    slots[slot] = null;
    // Its row stays in the group until the next regroup (the next decode without it).
  };

  const dropAll = () => {
    for (const t of group?.past ?? []) t.dispose();
    group = null;
    for (const s of slots) for (const t of s?.own ?? []) t.dispose();
    slots.fill(null);
  };

  return {
    vocabSize: V,
    maxContext,
    slots: opts.slots,
    async prefill(slot, ids) {
      checkSlot(slot, "prefill");
      if (ids.length > maxContext) {
        throw new Error(`prefill: ${ids.length} tokens exceed the context of ${maxContext}`);
      }
      const [layout] = rules.layout([ids]);
      if (layout.pads !== 0) {
        throw new Error("prefill: the prompt starts with pad ids; give it unpadded");
      }
      releaseSlot(slot);
      const run = await model.runStep({
        batch: 1,
        seq: ids.length,
        inputIds: ids,
        positionIds: rules.positions([layout], 0, ids.length),
        attentionMask: rules.mask([layout], 0, ids.length, ids.length),
        past: null,
      });
      slots[slot] = { layout, length: ids.length, own: run.present };
      return run.logits.slice((ids.length - 1) * V, ids.length * V);
    },
    async decode(steps) {
      if (!Array.isArray(steps) || steps.length === 0) {
        throw new Error("decode: expected at least one { slot, id }");
      }
      const wanted: number[] = [];
      for (const { slot, id } of steps) {
        checkSlot(slot, "decode");
        const s = slots[slot];
        if (!s) throw new Error(`decode: slot ${slot} is free; prefill it first`);
        if (wanted.includes(slot)) throw new Error(`decode: slot ${slot} appears twice`);
        if (s.length + 1 > maxContext) {
          throw new Error(`decode: slot ${slot} is full (${maxContext} positions)`);
        }
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new Error(`decode: ${id} is not a token id`);
        }
        wanted.push(slot);
      }
      const same = group !== null && group.slots.length === wanted.length &&
        wanted.every((slot) => group!.members[group!.slots.indexOf(slot)] === slots[slot]);
      if (!same) regroup(wanted);
      const g = group!;
      const idOf = new Map(steps.map((s) => [s.slot, s.id]));
      const n = g.slots.length, total = g.columns + 1;
      const k = rules.positionsPerToken;
      const positions = new Int32Array(n * k);
      const mask = new Uint8Array(n * total);
      g.slots.forEach((slot, row) => {
        const s = slots[slot]!;
        positions.set(rules.positionAt(s.layout, s.length), row * k);
        // A new token sees every key of its own sequence (README §5), nothing in the gap.
        for (let col = g.filled[row]; col < g.base; col++) mask[row * total + col] = 1;
      });
      const run = await model.runStep({
        batch: n,
        seq: 1,
        inputIds: g.slots.map((slot) => idOf.get(slot)!),
        positionIds: positions,
        attentionMask: mask,
        past: g.past,
      });
      for (const t of g.past) t.dispose();
      g.past = run.present;
      g.columns += 1;
      for (const slot of g.slots) slots[slot]!.length += 1;
      // Logits come back in group row order; the caller wants its own order.
      const out = new Float32Array(steps.length * V);
      steps.forEach(({ slot }, i) => {
        const row = g.slots.indexOf(slot);
        out.set(run.logits.subarray(row * V, (row + 1) * V), i * V);
      });
      return out;
    },
    release: releaseSlot,
    idle() {
      if (slots.every((s) => s === null)) dropAll();
    },
    close() {
      dropAll();
      if (opts.ownsModel ?? true) void model.dispose();
    },
  };
}
