// Kernel parameters declared by name (core/kernels/uniforms.ts): WGSL's uniform layout rules on
// the host, the bytes packed, clear errors for bad values, and a shader reading every field back
// (so the host offsets are the ones the GPU's compiler uses).
import assert from "node:assert/strict";
import { beginRecording, getGpu, getPipeline, recordDispatch, submit } from "../core/gpu/mod.ts";
import { bindingOf, emptyTensor, readRaw } from "../core/tensor/mod.ts";
import { uniformLayout } from "../core/kernels/mod.ts";

Deno.test("uniformLayout: scalars pack in order, 4 bytes each, padded to 16", () => {
  const P = uniformLayout({ rows: "u32", cols: "u32", eps: "f32" });
  assert.equal(
    P.wgsl,
    "struct Params { rows: u32, cols: u32, eps: f32 };\n" +
      "@group(0) @binding(0) var<uniform> P: Params;\n",
  );
  assert.deepEqual(P.offsets, { rows: 0, cols: 4, eps: 8 });
  assert.equal(P.size, 16);
  const bytes = P.bytes({ rows: 3, cols: 4099, eps: 1e-5 });
  assert.equal(bytes.byteLength, 16);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0, true), 3);
  assert.equal(view.getUint32(4, true), 4099);
  assert.equal(view.getFloat32(8, true), Math.fround(1e-5));
  assert.equal(view.getUint32(12, true), 0);
});

Deno.test("uniformLayout: vectors align to 8 (vec2) and 16 (vec3, vec4); a scalar fills a vec3's tail", () => {
  const P = uniformLayout({
    a: "u32",
    v3: "vec3<f32>",
    s: "i32",
    v2: "vec2<u32>",
    v4: "vec4<i32>",
    t: "f32",
  }, { struct: "Odd", variable: "Q" });
  // a@0; v3 aligns to 16 (12 bytes); s fits at 28; v2 aligns to 8 → 32; v4 to 16 → 48; t@64.
  assert.deepEqual(P.offsets, { a: 0, v3: 16, s: 28, v2: 32, v4: 48, t: 64 });
  // The struct ends at 68 and aligns to 16 (its largest member alignment) → 80.
  assert.equal(P.size, 80);
  assert.match(P.wgsl, /^struct Odd \{ a: u32, v3: vec3<f32>, s: i32, v2: vec2<u32>/);
  assert.match(P.wgsl, /var<uniform> Q: Odd;/);
  const bytes = P.bytes({
    a: 7,
    v3: [1.5, -2, 3.25],
    s: -5,
    v2: [8, 9],
    v4: [-1, 2, -3, 4],
    t: 0.5,
  });
  const v = new DataView(bytes.buffer);
  assert.equal(v.getUint32(0, true), 7);
  assert.deepEqual([16, 20, 24].map((o) => v.getFloat32(o, true)), [1.5, -2, 3.25]);
  assert.equal(v.getInt32(28, true), -5);
  assert.deepEqual([v.getUint32(32, true), v.getUint32(36, true)], [8, 9]);
  assert.deepEqual([48, 52, 56, 60].map((o) => v.getInt32(o, true)), [-1, 2, -3, 4]);
  assert.equal(v.getFloat32(64, true), 0.5);
  // Padding stays zero.
  assert.deepEqual([4, 8, 12, 40, 44, 68, 72, 76].map((o) => v.getUint32(o, true)), [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("uniformLayout: a vec2 after one scalar starts at 8 and the struct aligns to 8", () => {
  const P = uniformLayout({ n: "u32", v: "vec2<f32>", m: "u32" });
  assert.deepEqual(P.offsets, { n: 0, v: 8, m: 16 });
  // Ends at 20, aligned to 8 → 24, a uniform slot rounds to 16 → 32.
  assert.equal(P.size, 32);
});

Deno.test("uniformLayout: bad values name the struct, field and rule", () => {
  const P = uniformLayout({ n: "u32", k: "i32", x: "f32", v: "vec2<u32>" });
  const ok = { n: 1, k: -1, x: 0.5, v: [1, 2] as const };
  assert.doesNotThrow(() => P.bytes(ok));
  assert.throws(() => P.bytes({ ...ok, n: 1.5 }), /Params\.n \(u32\): 1\.5 is not an integer/);
  assert.throws(
    () => P.bytes({ ...ok, n: -1 }),
    /Params\.n \(u32\): -1 is outside 0\.\.4294967295/,
  );
  assert.throws(() => P.bytes({ ...ok, n: 2 ** 32 }), /Params\.n \(u32\).*outside/);
  assert.throws(() => P.bytes({ ...ok, k: 2 ** 31 }), /Params\.k \(i32\).*outside the i32 range/);
  assert.throws(
    () => P.bytes({ ...ok, v: [1] as unknown as readonly [number, number] }),
    /Params\.v \(vec2<u32>\): expected 2 numbers/,
  );
  assert.throws(
    () => P.bytes({ n: 1, k: 1, x: 1 } as unknown as typeof ok),
    /Params: field v is missing/,
  );
  assert.throws(
    () => P.bytes({ ...ok, extra: 1 } as unknown as typeof ok),
    /Params: unknown field extra/,
  );
  assert.throws(() => uniformLayout({}), /no fields/);
  assert.throws(() => uniformLayout({ "a-b": "u32" }), /field name a-b is not an identifier/);
  assert.throws(
    () => uniformLayout({ a: "f64" as unknown as "f32" }),
    /unsupported type f64/,
  );
});

Deno.test("uniformLayout: a shader reads every field where the host wrote it", async () => {
  const gpu = await getGpu();
  const P = uniformLayout({
    a: "u32",
    v3: "vec3<f32>",
    s: "i32",
    v2: "vec2<u32>",
    v4: "vec4<i32>",
    t: "f32",
  });
  const pipeline = getPipeline(gpu, "test:uniform-layout", () => `
${P.wgsl}
@group(0) @binding(1) var<storage, read_write> O: array<u32>;
@compute @workgroup_size(1)
fn main() {
  O[0] = P.a;
  O[1] = bitcast<u32>(P.v3.x); O[2] = bitcast<u32>(P.v3.y); O[3] = bitcast<u32>(P.v3.z);
  O[4] = bitcast<u32>(P.s);
  O[5] = P.v2.x; O[6] = P.v2.y;
  O[7] = bitcast<u32>(P.v4.x); O[8] = bitcast<u32>(P.v4.y);
  O[9] = bitcast<u32>(P.v4.z); O[10] = bitcast<u32>(P.v4.w);
  O[11] = bitcast<u32>(P.t);
}
`);
  const out = emptyTensor(gpu, [12], "u32");
  const rec = beginRecording(gpu);
  const values = {
    a: 4000000000,
    v3: [1.5, -2, 3.25],
    s: -123456,
    v2: [11, 12],
    v4: [-1, 2, -3, 2147483647],
    t: Math.fround(0.1),
  } as const;
  recordDispatch(rec, pipeline, P.pack(values), [bindingOf(out)], [1]);
  await submit(rec);
  const raw = await readRaw(out);
  const u = new Uint32Array(raw, 0, 12);
  const f = new Float32Array(raw, 0, 12);
  const i = new Int32Array(raw, 0, 12);
  assert.equal(u[0], values.a);
  assert.deepEqual([f[1], f[2], f[3]], values.v3);
  assert.equal(i[4], values.s);
  assert.deepEqual([u[5], u[6]], values.v2);
  assert.deepEqual([i[7], i[8], i[9], i[10]], values.v4);
  assert.equal(f[11], values.t);
});
