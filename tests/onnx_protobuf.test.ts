// The ONNX protobuf writer (core/onnx/protobuf.ts, onnx_model.ts): wire encoding checked by a
// small independent decoder written here from the protobuf spec, external-data entries, graph
// checks, and onnxruntime-node loading and running what we write (inline and external data).

import assert from "node:assert/strict";
import { encodeVarint, protoMessage } from "../core/onnx/protobuf.ts";
import { attr, encodeOnnxModel, type OnnxGraph, writeOnnxModel } from "../core/onnx/onnx_model.ts";
import { loadOrt } from "../serve/onnx/ort.ts";

type Field = { field: number; wire: number; value: bigint | Uint8Array | number };

/** Decodes one message level: (field, wire type, value) in order. */
function decode(bytes: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    while (true) {
      const b = bytes[pos++];
      assert.ok(b !== undefined, "varint runs past the end");
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (pos < bytes.length) {
    const key = Number(varint());
    const field = key >> 3, wire = key & 7;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 2) {
      const n = Number(varint());
      out.push({ field, wire, value: bytes.subarray(pos, pos + n) });
      pos += n;
    } else if (wire === 5) {
      out.push({
        field,
        wire,
        value: new DataView(bytes.buffer, bytes.byteOffset + pos).getFloat32(0, true),
      });
      pos += 4;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  assert.equal(pos, bytes.length);
  return out;
}
const text = (v: Field["value"]) => new TextDecoder().decode(v as Uint8Array);
const sub = (fields: Field[], n: number) => fields.filter((f) => f.field === n);

Deno.test("protobuf: varints, negative int64, floats, nested messages", () => {
  assert.deepEqual([...encodeVarint(0)], [0]);
  assert.deepEqual([...encodeVarint(300)], [0xac, 0x02]);
  assert.deepEqual([...encodeVarint(2 ** 35)], [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  const minus1 = encodeVarint(-1);
  assert.equal(minus1.length, 10);
  assert.deepEqual([...minus1], [...Array(9).fill(0xff), 0x01]);
  assert.throws(() => encodeVarint(1.5), /not an integer/);
  const inner = protoMessage().int(1, -2).float(2, 0.5);
  const msg = protoMessage().bytes(3, "héllo").bytes(4, inner).int(5, 7);
  const fields = decode(msg.finish());
  assert.equal(msg.byteLength, msg.finish().length);
  assert.equal(text(fields[0].value), "héllo");
  const innerFields = decode(fields[1].value as Uint8Array);
  assert.equal(BigInt.asIntN(64, innerFields[0].value as bigint), -2n);
  assert.equal(innerFields[1].value, 0.5);
  assert.equal(fields[2].value, 7n);
});

function smallGraph(): OnnxGraph {
  // y = Softmax(x · W + b, axis −1), W [3, 4] and b [4] as initializers.
  const w = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 10);
  const b = Float32Array.from([0.1, -0.2, 0.3, 0]);
  return {
    name: "small",
    nodes: [
      { op: "MatMul", inputs: ["x", "w"], outputs: ["xw"] },
      { op: "Add", inputs: ["xw", "b"], outputs: ["z"] },
      { op: "Softmax", inputs: ["z"], outputs: ["y"], attributes: { axis: attr.int(-1) } },
    ],
    initializers: [
      { name: "w", dtype: "float32", dims: [3, 4], data: new Uint8Array(w.buffer) },
      { name: "b", dtype: "float32", dims: [4], data: () => new Uint8Array(b.buffer) },
    ],
    inputs: [{ name: "x", dtype: "float32", shape: ["n", 3] }],
    outputs: [{ name: "y", dtype: "float32", shape: ["n", 4] }],
  };
}

function expected(x: Float32Array): Float32Array {
  const w = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 10);
  const b = [0.1, -0.2, 0.3, 0];
  const out = new Float32Array((x.length / 3) * 4);
  for (let r = 0; r < x.length / 3; r++) {
    const z = b.map((bv, j) => bv + [0, 1, 2].reduce((a, k) => a + x[r * 3 + k] * w[k * 4 + j], 0));
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    e.forEach((v, j) => (out[r * 4 + j] = v / s));
  }
  return out;
}

Deno.test("onnx model: the ModelProto fields decode back as written", async () => {
  const bytes = await encodeOnnxModel(smallGraph(), { opset: 17, metadata: { k: "v" } });
  const model = decode(bytes);
  assert.equal(sub(model, 1)[0].value, 8n); // ir_version
  const opset = decode(sub(model, 8)[0].value as Uint8Array);
  assert.equal(sub(opset, 2)[0].value, 17n);
  const meta = decode(sub(model, 14)[0].value as Uint8Array);
  assert.deepEqual([text(meta[0].value), text(meta[1].value)], ["k", "v"]);
  const graph = decode(sub(model, 7)[0].value as Uint8Array);
  const nodes = sub(graph, 1).map((f) => decode(f.value as Uint8Array));
  assert.deepEqual(nodes.map((n) => text(sub(n, 4)[0].value)), ["MatMul", "Add", "Softmax"]);
  const axis = decode(sub(nodes[2], 5)[0].value as Uint8Array);
  assert.equal(text(sub(axis, 1)[0].value), "axis");
  assert.equal(BigInt.asIntN(64, sub(axis, 3)[0].value as bigint), -1n);
  assert.equal(sub(axis, 20)[0].value, 2n); // AttributeType INT
  const inits = sub(graph, 5).map((f) => decode(f.value as Uint8Array));
  assert.deepEqual(sub(inits[0], 1).map((f) => f.value), [3n, 4n]);
  assert.equal(sub(inits[0], 2)[0].value, 1n); // FLOAT
  assert.equal((sub(inits[0], 9)[0].value as Uint8Array).length, 48);
  const input = decode(sub(graph, 11)[0].value as Uint8Array);
  assert.equal(text(sub(input, 1)[0].value), "x");
});

Deno.test("onnx model: graph and initializer checks name the problem", async () => {
  const g = smallGraph();
  g.initializers[0].data = new Uint8Array(40);
  await assert.rejects(() => encodeOnnxModel(g, { opset: 17 }), /initializer w: 40 bytes.*need 48/);
  const h = smallGraph();
  h.nodes[1].inputs = ["xw", "nope"];
  await assert.rejects(() => encodeOnnxModel(h, { opset: 17 }), /undefined value nope/);
  const k = smallGraph();
  k.outputs[0].name = "missing";
  await assert.rejects(() => encodeOnnxModel(k, { opset: 17 }), /output missing is never produced/);
});

Deno.test("onnx model: onnxruntime runs what we write, inline and with external data", async () => {
  const ort = await loadOrt();
  const x = Float32Array.from([1, 2, 3, -1, 0.5, 0]);
  const want = expected(x);
  const check = async (session: Awaited<ReturnType<typeof ort.InferenceSession.create>>) => {
    const out = await session.run({ x: new ort.Tensor("float32", x, [2, 3]) });
    const y = out.y.data as Float32Array;
    y.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6, `y[${i}] ${v} vs ${want[i]}`));
    await session.release();
  };
  await check(
    await ort.InferenceSession.create(await encodeOnnxModel(smallGraph(), { opset: 17 })),
  );

  const dir = await Deno.makeTempDir({ prefix: "medglm-onnx-proto-" });
  try {
    const written = await writeOnnxModel(`${dir}/m.onnx`, smallGraph(), {
      opset: 17,
      externalData: "m.onnx.data",
      externalThreshold: 32, // w (48 bytes) goes out, b (16 bytes) stays inline
      externalAlignment: 64,
    });
    const data = await Deno.readFile(`${dir}/m.onnx.data`);
    assert.equal(written.dataBytes, data.length);
    assert.equal(data.length, 48);
    // The external entry names the file, offset and length.
    const graph = decode(
      sub(decode(await Deno.readFile(`${dir}/m.onnx`)), 7)[0].value as Uint8Array,
    );
    const w = decode(sub(graph, 5)[0].value as Uint8Array);
    const entries = sub(w, 13).map((f) => decode(f.value as Uint8Array)).map((
      e,
    ) => [text(e[0].value), text(e[1].value)]);
    assert.deepEqual(entries, [["location", "m.onnx.data"], ["offset", "0"], ["length", "48"]]);
    assert.equal(sub(w, 14)[0].value, 1n);
    assert.equal(sub(w, 9).length, 0);
    assert.equal(sub(decode(sub(graph, 5)[1].value as Uint8Array), 9).length, 1);
    await check(await ort.InferenceSession.create(`${dir}/m.onnx`));
    await assert.rejects(
      () => writeOnnxModel(`${dir}/n.onnx`, smallGraph(), { opset: 17, externalData: "../x" }),
      /plain file name/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
