/**
 * The engine's `Decoder` (serve/engine/decoder.ts) over an ONNX Runtime model: slots prefilled
 * one at a time, live slots advanced together in one batched graph run.
 *
 * The group's rows share one cache buffer (kv_buffer.ts), and every step's keys go to one shared
 * column for all rows, so slots of different lengths share it with columns that are not
 * positions: each row's keys sit in columns [0, own) followed by a gap up to `base`, then the
 * columns every step since appended. The explicit attention mask hides the gap and the unused
 * capacity (attention does not care where a key sits: rotary already encoded its position). As
 * long as the same set of slots decodes step after step (the steady state), the buffer is fed as
 * it is and only the step's new column is written; only when a slot joins or leaves is the group
 * repacked once.
 */

import type { Decoder } from "../engine/decoder.ts";
import type { RowLayout } from "../../core/mod.ts";
import type { OnnxModel } from "./runner.ts";
import { capacityFor, type KvBuffer } from "./kv_buffer.ts";

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
  /** The slot's own cache (batch 1, columns [0, length)) while not in the group. */
  own: KvBuffer | null;
}

interface Group {
  /** Slots in row order, and the sequence each row holds (a re-prefilled slot is another one). */
  slots: number[];
  members: SlotState[];
  /** Batched cache [n, kv heads, capacity, d] per layer. */
  kv: KvBuffer;
  /** Columns in use. */
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
  const slots: (SlotState | null)[] = Array(opts.slots).fill(null);
  let group: Group | null = null;

  const checkSlot = (slot: number, what: string) => {
    if (!Number.isInteger(slot) || slot < 0 || slot >= opts.slots) {
      throw new RangeError(`${what}: slot ${slot} is outside 0..${opts.slots - 1}`);
    }
  };

  /** Copies a group row's keys/values (compacted: gap removed) into `dst`'s row `dstRow`. */
  const copyGroupRow = (g: Group, row: number, dst: KvBuffer, dstRow: number) => {
    const own = g.filled[row];
    g.kv.copyRow(row, 0, own, dst, dstRow, 0);
    g.kv.copyRow(row, g.base, g.columns, dst, dstRow, own);
  };

  /** Rebuilds the group for exactly `wanted` (slot order kept), moving caches in and out. */
  const regroup = (wanted: number[]) => {
    const columns = Math.max(...wanted.map((slot) => slots[slot]!.length));
    // Room for the step about to run.
    const kv = model.newKv(wanted.length, capacityFor(columns + 1, maxContext));
    wanted.forEach((slot, row) => {
      const s = slots[slot]!;
      const at = group ? group.slots.indexOf(slot) : -1;
      if (at >= 0 && group!.members[at] === s) copyGroupRow(group!, at, kv, row);
      else {
        s.own!.copyRow(0, 0, s.length, kv, row, 0);
        s.own = null;
      }
    });
    if (group) {
      // Slots leaving the group (still live) get their own cache back.
      group.slots.forEach((slot, row) => {
        const s = slots[slot];
        if (!s || s !== group!.members[row] || wanted.includes(slot)) return;
        s.own = model.newKv(1, capacityFor(s.length, maxContext));
        copyGroupRow(group!, row, s.own, 0);
      });
    }
    group = {
      slots: [...wanted],
      members: wanted.map((slot) => slots[slot]!),
      kv,
      columns,
      base: columns,
      filled: wanted.map((slot) => slots[slot]!.length),
    };
  };

  const releaseSlot = (slot: number) => {
    checkSlot(slot, "release");
    const s = slots[slot];
    if (!s) return;
    s.own = null;
    slots[slot] = null;
    // Its row stays in the group until the next regroup (the next decode without it).
  };

  const dropAll = () => {
    group = null;
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
      const own = model.newKv(1, capacityFor(ids.length, maxContext));
      own.write(run.fresh, ids.length, 0);
      slots[slot] = { layout, length: ids.length, own };
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
      g.kv.reserve(g.columns + 1, maxContext);
      const idOf = new Map(steps.map((s) => [s.slot, s.id]));
      const n = g.slots.length, C = g.kv.capacity, total = C + 1;
      const k = rules.positionsPerToken;
      const positions = new Int32Array(n * k);
      const mask = new Uint8Array(n * total);
      g.slots.forEach((slot, row) => {
        const s = slots[slot]!;
        positions.set(rules.positionAt(s.layout, s.length), row * k);
        // A new token sees every key of its own sequence (README §5): nothing in the gap, none
        // of the unused capacity; its own key is the last column.
        mask.fill(1, row * total + g.filled[row], row * total + g.base);
        mask.fill(1, row * total + g.columns, row * total + C);
      });
      const run = await model.runStep({
        batch: n,
        seq: 1,
        inputIds: g.slots.map((slot) => idOf.get(slot)!),
        positionIds: positions,
        attentionMask: mask,
        past: g.kv,
      });
      g.kv.write(run.fresh, 1, g.columns);
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
