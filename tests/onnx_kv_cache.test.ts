// The ONNX backend's KV cache held once (serve/onnx/kv_buffer.ts, core/onnx/graph_parts.ts
// `cachedAttention`): the buffer's growth, writes and row copies; the graph's cache contract (the
// past is only read, never concatenated or copied; only the new positions come out); decoding
// across several capacity doublings equals a full forward of the whole sequence at every step;
// and an export of the older form (present_* outputs) is refused with a message to re-export.

import assert from "node:assert/strict";
import type { ChatGLMConfig } from "../core/models/chatglm/config.ts";
import { parseChatGLMConfig } from "../core/models/chatglm/config.ts";
import { buildChatGLMGraph } from "../core/onnx/export_chatglm.ts";
import { exportChatGLMToOnnx } from "../core/onnx/export_dir.ts";
import { createGraphBuilder } from "../core/onnx/graph_builder.ts";
import { encodeOnnxModel } from "../core/onnx/onnx_model.ts";
import { capacityFor, KvBuffer, spreadMask } from "../serve/onnx/kv_buffer.ts";
import { createOnnxModel, loadOnnxModel } from "../serve/onnx/runner.ts";
import { loadOrt } from "../serve/onnx/ort.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;

Deno.test("kv buffer: power-of-two capacities, growth keeps every column, writes and row copies", () => {
  assert.equal(capacityFor(1, 2048), 16);
  assert.equal(capacityFor(17, 2048), 32);
  assert.equal(capacityFor(2044, 2048), 2048);
  assert.equal(capacityFor(1500, 1600), 1600);
  assert.throws(() => capacityFor(2049, 2048), /2049 positions exceed the limit of 2048/);

  const shape = { layers: 2, heads: 3, d: 2 };
  const kv = new KvBuffer(shape, 2, 16);
  // New keys/values [2 rows, 3 heads, s, 2]: value = 1000·tensor + 100·row + 10·head + column.
  const fresh = (s: number, at: number) =>
    Array.from({ length: 4 }, (_, i) => {
      const t = new Float32Array(2 * 3 * s * 2);
      for (let r = 0; r < 2; r++) {
        for (let h = 0; h < 3; h++) {
          for (let c = 0; c < s; c++) {
            for (let j = 0; j < 2; j++) {
              t[((r * 3 + h) * s + c) * 2 + j] = 1000 * i + 100 * r + 10 * h + at + c + j / 2;
            }
          }
        }
      }
      return t;
    });
  const at = (b: KvBuffer, i: number, r: number, h: number, c: number, j: number) =>
    b.data[i][((r * 3 + h) * b.capacity + c) * 2 + j];
  kv.write(fresh(5, 0), 5, 0);
  kv.write(fresh(1, 5), 1, 5);
  const before = kv.data[0];
  kv.reserve(16, 2048);
  assert.equal(kv.data[0], before, "no growth while the positions fit");
  kv.reserve(17, 2048);
  assert.equal(kv.capacity, 32);
  for (let i = 0; i < 4; i++) {
    for (let r = 0; r < 2; r++) {
      for (let h = 0; h < 3; h++) {
        for (let c = 0; c < 32; c++) {
          const want = c < 6 ? 1000 * i + 100 * r + 10 * h + c + 0.5 : 0;
          assert.equal(at(kv, i, r, h, c, 1), want, `tensor ${i} row ${r} head ${h} col ${c}`);
        }
      }
    }
  }
  assert.throws(() => kv.write(fresh(1, 32), 1, 32), /columns 32\.\.32 exceed the capacity 32/);
  const one = new KvBuffer(shape, 1, 16);
  kv.copyRow(1, 2, 5, one, 0, 7);
  assert.equal(at(one, 3, 0, 2, 7, 0), 3000 + 100 + 20 + 2);
  assert.equal(at(one, 3, 0, 2, 9, 0), 3000 + 100 + 20 + 4);
  assert.equal(at(one, 3, 0, 2, 10, 0), 0);
  assert.equal(at(one, 3, 0, 2, 6, 0), 0);
});

Deno.test("kv buffer: a mask over the used columns spread over the capacity", () => {
  // b 1, s 2, used 3: rows [0 0 1 | 0 1] and [0 0 0 | 0 0] → capacity 5.
  const m = spreadMask(Uint8Array.from([0, 0, 1, 0, 1, 0, 0, 0, 0, 0]), 1, 2, 3, 5);
  assert.deepEqual([...m], [0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0]);
  assert.throws(() => spreadMask(new Uint8Array(3), 1, 2, 3, 5), /mask has 3 values, expected 10/);
});

Deno.test("onnx graph: the past cache is only read; only the new positions are outputs", () => {
  const config = parseChatGLMConfig(JSON.parse(Deno.readTextFileSync(`${DIR}/config.json`)));
  const graph = buildChatGLMGraph(config, () => Promise.reject(new Error("not read")));
  for (let l = 0; l < config.numLayers; l++) {
    for (const name of [`past_key_${l}`, `past_value_${l}`]) {
      const readers = graph.nodes.filter((n) => n.inputs.includes(name)).map((n) => n.op);
      // Keys: a Transpose fused into the scores' MatMul, and Shape for the split; values: MatMul.
      for (const op of readers) assert.ok(["Transpose", "MatMul", "Shape"].includes(op), op);
      assert.ok(!readers.includes("Concat"), `${name} is concatenated`);
    }
    const outs = graph.outputs.filter((o) => o.name.endsWith(`_${l}`)).map((o) => o.name);
    assert.deepEqual(outs.sort(), [`new_key_${l}`, `new_value_${l}`]);
  }
  assert.ok(!graph.outputs.some((o) => o.name.startsWith("present_")));
  // No scalar scale feeds the scores' MatMuls (ORT would fold it in as alpha, and MLAS's M = 1
  // kernels need alpha = 1): the queries are scaled before the rotary.
  const producer = new Map(graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n.op] as const)));
  const scores = graph.nodes.filter((n) => /\.scores_(past|new)$/.test(n.name ?? ""));
  assert.equal(scores.length, 2 * config.numLayers);
  for (const n of scores) {
    for (const i of n.inputs) assert.ok(!["Div", "Mul"].includes(producer.get(i) ?? ""), n.name);
  }
});

Deno.test("onnx runner: decoding across capacity doublings equals the full forward at every step", async () => {
  const goldens = loadGoldens(DIR);
  const tmp = await Deno.makeTempDir({ prefix: "medglm-onnx-kv-" });
  try {
    await exportChatGLMToOnnx(DIR, `${tmp}/m`, { dtype: "f32" });
    const model = await loadOnnxModel(`${tmp}/m`);
    try {
      const V = model.config.vocabSize;
      const { prompts_ids } = goldens.cases.get("generate")!.values as {
        prompts_ids: number[][];
      };
      const prompt = prompts_ids[0];
      const cfg = model.config as ChatGLMConfig;
      const steps = 40 - prompt.length; // the capacity goes 16 → 32 → 64
      const cache = model.createCache(1, 64);
      let logits = await model.prefill([prompt], cache);
      const seq = [...prompt];
      for (let step = 0; step < steps; step++) {
        // Any text id keeps the row a valid sequence; vary it so the keys differ.
        const next = 5 + ((step * 7919) % (cfg.vocabSize - 5 - 10));
        seq.push(next);
        logits = await model.decodeStep([next], cache);
        const full = await model.forward([seq]);
        const want = full.subarray((seq.length - 1) * V, seq.length * V);
        const r = compareRule(logits, want, goldens.rtol, goldens.atol);
        assert.ok(r.ok, `step ${step}: max |diff| ${r.maxDiff} > ${r.limit}`);
      }
      assert.equal(cache.length, 40);
      cache.free();
    } finally {
      await model.dispose();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("onnx runner: an export of the older cache form (present_* outputs) is refused", async () => {
  const ort = await loadOrt();
  const g = createGraphBuilder();
  g.node("Identity", ["past_key_0"], { outputs: ["present_key_0"] });
  const graph = g.build("old", [{ name: "past_key_0", dtype: "float32", shape: [1] }], [
    { name: "present_key_0", dtype: "float32", shape: [1] },
  ]);
  const session = await ort.InferenceSession.create(await encodeOnnxModel(graph, { opset: 17 }));
  const config = parseChatGLMConfig(JSON.parse(Deno.readTextFileSync(`${DIR}/config.json`)));
  try {
    assert.throws(
      // deno-lint-ignore no-explicit-any
      () => createOnnxModel(ort, session, config, { maxPositions: 64 } as any, "/old", ["cpu"]),
      /\/old: this ONNX export returns the whole KV cache every step \(present_\* outputs.*re-export it/,
    );
  } finally {
    await session.release();
  }
});
