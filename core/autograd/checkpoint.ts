/**
 * Recompute (gradient checkpointing): `checkpoint(tape, inputs, fn)` runs `fn` forward without
 * keeping anything but its inputs; in the backward pass it runs `fn` again on a sub-tape and
 * back-propagates through that. Wrapping each transformer layer keeps the activations of one
 * layer (during its recompute) plus every layer's input, instead of every layer's activations.
 *
 * `fn` must be deterministic (same inputs → same outputs): dropout seeds come from the caller,
 * not from a counter, so the recompute regenerates the same masks. Parameters used inside `fn`
 * (made with `param` on the tape `fn` gets) receive their gradients during the recompute's
 * backward; list them in `parameters` so that the step knows a backward is needed even when no
 * input needs a gradient. The inner tapes share the outer tape's gradient buffers and dropout.
 * `fn` may consume its inputs (they are leaves over the caller's values); the caller keeps its
 * own references to `inputs`.
 */

import {
  backward,
  childTape,
  gradOf,
  leaf,
  opOutput,
  recordOp,
  type Tape,
  unref,
  type Var,
} from "./tape.ts";

export function checkpoint(
  tape: Tape,
  inputs: Var[],
  fn: (tape: Tape, inputs: Var[]) => Var,
  options: { label?: string; parameters?: readonly Var[] } = {},
): Var {
  const label = options.label ?? "checkpoint";
  // Parameters used inside fn count as inputs for "does this need a backward" (a LoRA layer
  // whose input is a frozen embedding still trains), but get their gradients through their sinks.
  const params = options.parameters ?? [];
  const forwardOnly = childTape(tape, false);
  const shadow = inputs.map((v) => leaf(v.value, false, v.label));
  const inner = fn(forwardOnly, shadow);
  // The inner output's tensor becomes the outer variable's (one reference moves over).
  const all = [...inputs, ...params];
  const out = opOutput(tape, inner.value, all, label);
  recordOp(tape, {
    label,
    inputs: all,
    outputs: [out],
    saved: inputs,
    backward: ([g]) => {
      const sub = childTape(tape, true);
      const leaves = inputs.map((v) => leaf(v.value, v.requiresGrad, v.label));
      const again = fn(sub, leaves);
      backward(sub, again, g!);
      unref(sub, again);
      return [...leaves.map((l) => gradOf(l)), ...params.map(() => null)];
    },
  });
  return out;
}
