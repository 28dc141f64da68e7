/**
 * The step counter of a decode group, advanced on the GPU: after step `s` has sampled its ids
 * into a ring (row `first + s·stride`), this kernel copies them to the tensor the next step's
 * embedding lookup reads, adds one to each row's position and cache length (two i32 tensors,
 * word `row·stride + offset` of each), and counts `s` on. What changes from one step to the next
 * thus lives in GPU memory, so every step of a group is the same commands with the same bind
 * groups: the group records its first step once and replays it (core/gpu/recording.ts
 * `replayCapture`), a fraction of the host cost of recording each step.
 *
 * With `utf8`, each row's UTF-8 state word in the ring (the sampler's mask reads it, see
 * `utf8State` in sampling.ts) takes the byte of the id just chosen (a non-byte id clears it).
 */

import { GpuError } from "../../gpu/device.ts";
import { getPipeline } from "../../gpu/pipelines.ts";
import { recordDispatch, type Recording } from "../../gpu/recording.ts";
import { assertUnchunked, bindingOf, numel, type Tensor } from "../../tensor/tensor.ts";
import { expectDtype } from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const AdvanceParams = uniformLayout({
  rows: "u32",
  first: "u32",
  stride: "u32",
  stride1: "u32",
  offset1: "u32",
  stride2: "u32",
  offset2: "u32",
  utf8State: "u32",
  vocab: "u32",
});

/** An i32 tensor whose word `row·stride + offset` grows by one per step. */
export interface StepBump {
  tensor: Tensor;
  stride: number;
  offset: number;
}

export interface AdvanceDecodeOptions {
  /** u32 [1]: the step `s` just sampled (0 at the group's start). */
  counter: Tensor;
  /** i32: the sampled ids, step s's at `first + s·stride + row`. */
  ring: Tensor;
  first: number;
  stride: number;
  /** i32 [rows]: the ids the next step feeds. */
  ids: Tensor;
  /** Two distinct tensors (positions, cache lengths) that move on by one per step. */
  bumps: [StepBump, StepBump];
  /**
   * The rows' UTF-8 state words at ring index `state + row`, moved on by the byte of each chosen
   * id: `byteOf` i32 [V] (the tokenizer's byte value of each id, -1 for other ids).
   */
  utf8?: { byteOf: Tensor; state: number };
}

/** Records the advance after one step of a decode group over `rows` rows. */
export function advanceDecode(rec: Recording, rows: number, o: AdvanceDecodeOptions): void {
  const kernel = "advanceDecode";
  expectDtype(o.counter, kernel, "counter", ["u32"]);
  expectDtype(o.ring, kernel, "ring", ["i32"]);
  expectDtype(o.ids, kernel, "ids", ["i32"]);
  for (const [t, name] of [[o.ring, "ring"], [o.ids, "ids"], [o.counter, "counter"]] as const) {
    assertUnchunked(t, kernel, name);
  }
  if (numel(o.ids.shape) < rows) throw new GpuError(`${kernel}: ids hold fewer than ${rows} rows`);
  o.bumps.forEach((b, i) => {
    expectDtype(b.tensor, kernel, `bump ${i}`, ["i32"]);
    assertUnchunked(b.tensor, kernel, `bump ${i}`);
    if ((rows - 1) * b.stride + b.offset >= numel(b.tensor.shape)) {
      throw new GpuError(`${kernel}: bump ${i} has no word ${(rows - 1) * b.stride + b.offset}`);
    }
  });
  const utf8 = o.utf8;
  if (utf8) {
    expectDtype(utf8.byteOf, kernel, "byteOf", ["i32"]);
    assertUnchunked(utf8.byteOf, kernel, "byteOf");
    if (utf8.state + rows > numel(o.ring.shape)) {
      throw new GpuError(`${kernel}: the ring holds no UTF-8 state at ${utf8.state}`);
    }
  }
  const pipeline = utf8
    ? getPipeline(rec.gpu, `${kernel}:utf8`, () => shader(true))
    : getPipeline(rec.gpu, kernel, () => shader(false));
  const [b1, b2] = o.bumps;
  recordDispatch(
    rec,
    pipeline,
    AdvanceParams.pack({
      rows,
      first: o.first,
      stride: o.stride,
      stride1: b1.stride,
      offset1: b1.offset,
      stride2: b2.stride,
      offset2: b2.offset,
      utf8State: utf8?.state ?? 0,
      vocab: utf8 ? numel(utf8.byteOf.shape) : 0,
    }),
    [
      bindingOf(o.counter),
      bindingOf(o.ring),
      bindingOf(o.ids),
      bindingOf(b1.tensor),
      bindingOf(b2.tensor),
      ...(utf8 ? [bindingOf(utf8.byteOf)] : []),
    ],
    [1],
  );
}

const shader = (utf8: boolean) => `
${AdvanceParams.wgsl}
@group(0) @binding(1) var<storage, read_write> CT: array<u32>;
@group(0) @binding(2) var<storage, ${utf8 ? "read_write" : "read"}> R: array<i32>;
@group(0) @binding(3) var<storage, read_write> IDS: array<i32>;
@group(0) @binding(4) var<storage, read_write> B1: array<i32>;
@group(0) @binding(5) var<storage, read_write> B2: array<i32>;
${utf8 ? "@group(0) @binding(6) var<storage, read> BY: array<i32>;" : ""}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  let s = CT[0];
  for (var i = t; i < P.rows; i += 64u) {
    let id = R[P.first + s * P.stride + i];
    IDS[i] = id;${
  utf8
    ? `
    let b = select(-1, BY[u32(id)], id >= 0 && u32(id) < P.vocab);
    let st = u32(R[P.utf8State + i]);
    let pushed = min((st & 3u) + 1u, 3u) | (u32(b) << 8u) | (((st >> 8u) & 0xffffu) << 16u);
    R[P.utf8State + i] = i32(select(pushed, 0u, b < 0));`
    : ""
}
    B1[i * P.stride1 + P.offset1] += 1;
    B2[i * P.stride2 + P.offset2] += 1;
  }
  storageBarrier();
  workgroupBarrier();
  if (t == 0u) { CT[0] = s + 1u; }
}
`;
