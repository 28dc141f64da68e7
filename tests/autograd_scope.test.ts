// Scopes on the autograd tape: the arena that frees a step's temporaries (what lets the ChatGLM
// block run for inference and training without frees in the model code), and forward-only ops.

import assert from "node:assert/strict";
import { beginRecording, discardRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { readFloat32, releaseTensor, uploadTensor } from "../core/tensor/mod.ts";
import {
  addScaledOp,
  backward,
  createTape,
  forwardOnly,
  geluOp,
  gradOf,
  keep,
  leaf,
  scope,
  unref,
} from "../core/autograd/mod.ts";

const gpu = await getGpu();
const x0 = [0.5, -1, 2, 0.25];
const upload = () => uploadTensor(gpu, Float32Array.from(x0), [1, 4], "f32");

Deno.test("scope: a no-grad tape releases every temporary when the scope ends, the result moves out", async () => {
  const xt = upload();
  const rec = beginRecording(gpu);
  const tape = createTape(rec, false);
  const x = leaf(xt);
  let inner = null as ReturnType<typeof geluOp> | null;
  const y = scope(tape, () => {
    inner = geluOp(tape, x);
    return addScaledOp(tape, inner, 2, x); // 2·gelu(x) + x
  });
  assert.equal(inner!.value.released, true, "the temporary went back to the pool at scope end");
  assert.equal(y.value.released, false, "the result outlives its scope");
  assert.equal(xt.released, false, "a caller's leaf is never freed");
  await submit(rec);
  const got = await readFloat32(y.value);
  const gelu = (v: number) =>
    0.5 * v * (1 + Math.tanh(0.7978845608028654 * v * (1 + 0.044715 * v * v)));
  x0.forEach((v, i) => assert.ok(Math.abs(got[i] - (2 * gelu(v) + v)) < 1e-5));
  unref(tape, y);
  assert.equal(y.value.released, true);
  releaseTensor(xt);
});

Deno.test("scope: consumed inputs are released, nested results move to the parent, keep outlives", () => {
  const xt = upload();
  const rec = beginRecording(gpu);
  const tape = createTape(rec, false);
  const x = leaf(xt);
  let a = null as ReturnType<typeof geluOp> | null;
  let kept = null as ReturnType<typeof geluOp> | null;
  const out = scope(tape, () => {
    a = geluOp(tape, x);
    kept = keep(geluOp(tape, a));
    // The inner scope takes a over: released when it ends; its result belongs to this scope.
    const b = scope(tape, () => addScaledOp(tape, a!, 1, a!), [a]);
    assert.equal(a!.value.released, true, "a consumed input is released when the scope ends");
    assert.equal(b.value.released, false);
    return geluOp(tape, b);
  });
  assert.equal(kept!.value.released, false, "a kept value survives its scope");
  assert.equal(out.value.released, false);
  unref(tape, kept!);
  unref(tape, out);
  assert.equal(kept!.value.released, true);
  discardRecording(rec);
  releaseTensor(xt);
});

Deno.test("scope: a recording tape keeps what backward saved; gradients are unchanged", async () => {
  const xt = upload();
  const rec = beginRecording(gpu);
  const tape = createTape(rec, true);
  const x = leaf(xt, true);
  let g = null as ReturnType<typeof geluOp> | null;
  const y = scope(tape, () => {
    g = geluOp(tape, x);
    return geluOp(tape, g); // saves g for its backward
  });
  assert.equal(g!.value.released, false, "saved by the second gelu's backward entry");
  const seed = uploadTensor(gpu, new Float32Array(4).fill(1), [1, 4], "f32");
  backward(tape, y, seed);
  assert.equal(g!.value.released, true, "released once backward consumed its entry");
  const dx = gradOf(x)!;
  await submit(rec);
  const got = await readFloat32(dx);
  const gelu = (v: number) =>
    0.5 * v * (1 + Math.tanh(0.7978845608028654 * v * (1 + 0.044715 * v * v)));
  const f = (v: number) => gelu(gelu(v));
  x0.forEach((v, i) => {
    const h = 1e-3;
    const want = (f(v + h) - f(v - h)) / (2 * h);
    assert.ok(Math.abs(got[i] - want) < 2e-3, `dx[${i}] ${got[i]} vs ${want}`);
  });
  unref(tape, y);
  for (const t of [xt, seed, dx]) releaseTensor(t);
});

Deno.test("forwardOnly: runs on a no-grad tape, refuses when a gradient would be needed", () => {
  const xt = upload();
  const rec = beginRecording(gpu);
  const noGrad = createTape(rec, false);
  const y = forwardOnly(noGrad, "cachedAttention", [leaf(xt, true)], () => upload());
  assert.equal(y.requiresGrad, false);
  unref(noGrad, y);
  const training = createTape(rec, true);
  assert.throws(
    () => forwardOnly(training, "cachedAttention", [leaf(xt, true)], () => upload()),
    /cachedAttention has no backward/,
  );
  discardRecording(rec);
  releaseTensor(xt);
});
