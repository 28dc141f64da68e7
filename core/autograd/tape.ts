/**
 * A tape for reverse-mode autograd over GPU tensors, recorded into one command encoder.
 *
 * Ops append an entry only when the tape is recording and some input needs a gradient; an entry
 * keeps exactly what its backward needs (saved variables by reference count, scratch tensors it
 * owns). `backward` walks the entries in reverse, hands each its output gradients, adds the
 * returned input gradients into the inputs (parameters: straight into their gradient sinks) and
 * frees every saved tensor and gradient as soon as its entry is done, so activation memory falls
 * while the backward pass runs. Frozen parameters have no sink and get no gradient buffer.
 *
 * Ownership: a variable made by an op starts with one reference, held by the forward code, which
 * drops it (`unref`) when it no longer needs the value; saving entries hold one more each. The
 * tensor goes back to the pool (inside the recording, so later kernels of the same step reuse
 * it) when the count reaches zero. Parameters and caller-made leaves are never freed here.
 */

import type { Recording } from "../gpu/recording.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";
import { accumulateInto } from "../kernels/accumulate.ts";

/** A value on the tape. */
export interface Var {
  readonly value: Tensor;
  /** Whether a gradient flows to this variable. */
  readonly requiresGrad: boolean;
  /** Parameters: the f32 tensor gradients are added into (null for frozen parameters). */
  readonly gradSink: Tensor | null;
  /** Released when the reference count reaches zero (op outputs); false for leaves. */
  readonly owned: boolean;
  /** @internal */ refs: number;
  /** @internal gradient collected during backward */ grad: Tensor | null;
  readonly label?: string;
}

/** What an op's backward returns per input: a gradient it gives away, or null. */
export type InputGrads = (Tensor | null)[];

interface Entry {
  inputs: Var[];
  outputs: Var[];
  saved: Var[];
  scratch: Tensor[];
  backward(outputGrads: (Tensor | null)[]): InputGrads;
  label: string;
}

export interface Tape {
  readonly rec: Recording;
  /** False: ops run forward only and keep nothing (evaluation, recompute's first pass). */
  readonly recording: boolean;
  /** @internal */ entries: Entry[];
}

/** A tape on `rec`; `recording: false` gives a forward-only (no-grad) tape. */
export function createTape(rec: Recording, recording = true): Tape {
  return { rec, recording, entries: [] };
}

/** A parameter: `gradSink` (f32, shape of `value`) receives its gradient; null = frozen. */
export function parameter(value: Tensor, gradSink: Tensor | null, label?: string): Var {
  return {
    value,
    requiresGrad: gradSink !== null,
    gradSink,
    owned: false,
    refs: 1,
    grad: null,
    label,
  };
}

/** A leaf the caller owns (inputs); `requiresGrad` collects its gradient in `gradOf`. */
export function leaf(value: Tensor, requiresGrad = false, label?: string): Var {
  return { value, requiresGrad, gradSink: null, owned: false, refs: 1, grad: null, label };
}

/** The output of an op (owned by the tape's reference counting). */
export function opOutput(tape: Tape, value: Tensor, inputs: readonly Var[], label?: string): Var {
  const requiresGrad = tape.recording && inputs.some((v) => v.requiresGrad);
  return { value, requiresGrad, gradSink: null, owned: true, refs: 1, grad: null, label };
}

/** Frees a tensor or its base (kernels return views from reshape). */
export function free(rec: Recording, t: Tensor): void {
  const base = t.base ?? t;
  if (!base.released) releaseTensor(base, rec);
}

/** Drops one reference; the value goes back to the pool at zero (owned variables only). */
export function unref(tape: Tape, v: Var): void {
  if (v.refs <= 0) throw new Error(`autograd: ${v.label ?? "variable"} was released twice`);
  v.refs--;
  if (v.refs === 0 && v.owned) free(tape.rec, v.value);
}

/**
 * Records an op. `outputs` were made with {@link opOutput}. When no entry is needed (tape not
 * recording or no input needs a gradient) the saved variables are not retained and the scratch
 * tensors are freed at once.
 */
export function recordOp(
  tape: Tape,
  op: {
    label: string;
    inputs: Var[];
    outputs: Var[];
    saved?: Var[];
    scratch?: Tensor[];
    backward(outputGrads: (Tensor | null)[]): InputGrads;
  },
): void {
  const needed = tape.recording && op.inputs.some((v) => v.requiresGrad);
  if (!needed) {
    for (const t of op.scratch ?? []) free(tape.rec, t);
    return;
  }
  const saved = op.saved ?? [];
  for (const v of saved) v.refs++;
  tape.entries.push({
    inputs: op.inputs,
    outputs: op.outputs,
    saved,
    scratch: op.scratch ?? [],
    backward: op.backward,
    label: op.label,
  });
}

/** The gradient collected for a leaf made with {@link leaf} (owned by the caller afterwards). */
export function gradOf(v: Var): Tensor | null {
  const g = v.grad;
  v.grad = null;
  return g;
}

/**
 * Runs the backward pass from `root` with output gradient `seed` (the caller keeps owning
 * `seed`). Every entry is consumed and its memory freed; the tape is empty afterwards.
 */
export function backward(tape: Tape, root: Var, seed: Tensor): void {
  const rec = tape.rec;
  root.grad = seed;
  const entries = tape.entries;
  tape.entries = [];
  for (let e = entries.length - 1; e >= 0; e--) {
    const entry = entries[e];
    const outGrads = entry.outputs.map((o) => o.grad);
    let inGrads: InputGrads = [];
    if (outGrads.some((g) => g !== null)) inGrads = entry.backward(outGrads);
    for (const o of entry.outputs) {
      if (o.grad && o.grad !== seed && !inGrads.includes(o.grad)) free(rec, o.grad);
      o.grad = null;
    }
    entry.inputs.forEach((input, i) => {
      const g = inGrads[i] ?? null;
      if (!g) return;
      if (!input.requiresGrad) {
        if (g !== seed) free(rec, g);
      } else if (input.gradSink) {
        accumulateInto(rec, input.gradSink, g);
        if (g !== seed) free(rec, g);
      } else if (!input.grad) {
        input.grad = g;
      } else {
        accumulateInto(rec, input.grad, g);
        if (g !== seed) free(rec, g);
      }
    });
    for (const v of entry.saved) unref(tape, v);
    for (const t of entry.scratch) free(rec, t);
  }
  if (root.grad === seed) root.grad = null;
}

/**
 * Frees everything a tape still holds without running backward (an abandoned step, or a
 * forward-only pass that recorded nothing).
 */
export function discardTape(tape: Tape): void {
  const entries = tape.entries;
  tape.entries = [];
  for (const entry of entries) {
    for (const v of entry.saved) unref(tape, v);
    for (const t of entry.scratch) free(tape.rec, t);
  }
}
