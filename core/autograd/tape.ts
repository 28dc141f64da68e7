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
 * Ownership: a variable made by an op starts with one reference, held by the forward code;
 * saving entries hold one more each. The tensor goes back to the pool (inside the recording, so
 * later kernels of the same step reuse it) when the count reaches zero. Forward code does not
 * drop references one by one: it runs inside a {@link scope}, an arena that drops the reference
 * of every variable made in it when it ends, except its result. A no-grad tape (`recording:
 * false`, inference) thus frees a block's temporaries when the block ends; a recording tape keeps
 * exactly what backward entries saved. Parameters and caller-made leaves are never freed here.
 *
 * The tape also carries what a step's parameters need: the gradient buffer of each trainable
 * tensor ({@link param} makes the variable) and the step's LoRA dropout.
 */

import type { Recording } from "../gpu/recording.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";
import { accumulateInto } from "../kernels/mod.ts";

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

/** LoRA dropout of a training step (inference and evaluation have none). */
export interface StepDropout {
  /** Probability on every LoRA branch input (default: each adapter's `lora_dropout`). */
  p?: number;
  /** Seed of the step's masks (recompute regenerates the same masks from it). */
  seed: number;
}

export interface TapeOptions {
  /** Trainable parameter tensor → its f32 gradient buffer; the others are frozen. */
  sinks?: ReadonlyMap<Tensor, Tensor>;
  dropout?: StepDropout;
}

export interface Tape {
  readonly rec: Recording;
  /** False: ops run forward only and keep nothing (inference, evaluation, recompute's first pass). */
  readonly recording: boolean;
  readonly sinks: ReadonlyMap<Tensor, Tensor> | null;
  readonly dropout: StepDropout | null;
  /** @internal */ entries: Entry[];
  /** @internal the open scopes, innermost last: the variables each one releases */
  scopes: Var[][];
}

/** A tape on `rec`; `recording: false` gives a forward-only (no-grad) tape. */
export function createTape(rec: Recording, recording = true, options: TapeOptions = {}): Tape {
  return {
    rec,
    recording,
    sinks: options.sinks ?? null,
    dropout: options.dropout ?? null,
    entries: [],
    scopes: [],
  };
}

/** A fresh tape on the same recording with the same parameters and dropout (recompute). */
export function childTape(tape: Tape, recording: boolean): Tape {
  return createTape(tape.rec, recording, {
    sinks: tape.sinks ?? undefined,
    dropout: tape.dropout ?? undefined,
  });
}

/** The variable of a model parameter: trainable when the tape has a gradient buffer for it. */
export function param(tape: Tape, value: Tensor, label?: string): Var {
  return parameter(value, tape.sinks?.get(value) ?? null, label);
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

/**
 * The output of an op (owned by the tape's reference counting); the innermost open scope holds
 * its first reference.
 */
export function opOutput(tape: Tape, value: Tensor, inputs: readonly Var[], label?: string): Var {
  const requiresGrad = tape.recording && inputs.some((v) => v.requiresGrad);
  const v: Var = { value, requiresGrad, gradSink: null, owned: true, refs: 1, grad: null, label };
  tape.scopes.at(-1)?.push(v);
  return v;
}

/**
 * Runs `fn` as an arena: when it returns, the reference of every variable made inside (and of
 * each of `consumed`, whose reference the caller hands over) is dropped, except the result's,
 * which moves to the enclosing scope (or to the caller when there is none). Values a backward
 * entry saved live on until backward; on a no-grad tape they go back to the pool at once.
 */
export function scope(tape: Tape, fn: () => Var, consumed: readonly Var[] = []): Var {
  const parent = tape.scopes.at(-1);
  const held: Var[] = [];
  for (const v of consumed) {
    const i = parent ? parent.indexOf(v) : -1;
    if (i >= 0) parent!.splice(i, 1);
    held.push(v);
  }
  tape.scopes.push(held);
  let result: Var;
  try {
    result = fn();
  } catch (err) {
    tape.scopes.pop();
    for (const v of held) unref(tape, v);
    throw err;
  }
  tape.scopes.pop();
  for (const v of held) if (v !== result) unref(tape, v);
  if (held.includes(result)) parent?.push(result);
  return result;
}

/**
 * A forward-only op (e.g. attention over a KV cache): `compute` records the kernels and returns
 * the value. Throws when a gradient would be needed, since it has no backward.
 */
export function forwardOnly(
  tape: Tape,
  label: string,
  inputs: readonly Var[],
  compute: () => Tensor,
): Var {
  if (tape.recording && inputs.some((v) => v.requiresGrad)) {
    throw new Error(`autograd: ${label} has no backward; it runs on a no-grad tape only`);
  }
  return opOutput(tape, compute(), inputs, label);
}

/** Takes one more reference, so `v` outlives its scope (release it with {@link unref}). */
export function keep(v: Var): Var {
  v.refs++;
  return v;
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
