// Quantized ONNX exports (com.microsoft MatMulNBits) run by ONNX Runtime: the int8/int4 fixture
// checkpoints and --quantize exports reproduce the goldens and agree with the WebGPU path.
import assert from "node:assert/strict";
import { exportChatGLMToOnnx } from "../core/onnx/export_dir.ts";
import { loadOnnxModel, type OnnxModel } from "../serve/onnx/runner.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { compareRule } from "./reference/chatglm.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny-quantized/", import.meta.url).pathname;

interface Golden {
  input_ids: number[][];
  pads: number[];
  greedy_tokens: number[][];
  compare: { rtol: number; atol: number };
}

function golden(bits: 8 | 4): { g: Golden; logits: Float32Array } {
  const dir = `${FIX}int${bits}/goldens/`;
  const g = JSON.parse(Deno.readTextFileSync(`${dir}index.json`)) as Golden;
  const bytes = Deno.readFileSync(`${dir}forward_batch.logits.f32`);
  return { g, logits: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
}

function ranges(g: Golden, V: number): [number, number][] {
  const S = g.input_ids[0].length;
  return g.pads.map((p, b) => [(b * S + p) * V, (b + 1) * S * V]);
}

async function greedy(model: OnnxModel, g: Golden, n: number): Promise<number[][]> {
  const V = model.config.vocabSize;
  const rows = g.input_ids;
  const cache = model.createCache(rows.length, rows[0].length + n);
  const out: number[][] = rows.map(() => []);
  try {
    let logits = await model.prefill(rows, cache);
    for (let step = 0; step < n; step++) {
      const next = rows.map((_, b) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
        return best;
      });
      next.forEach((t, b) => out[b].push(t));
      if (step + 1 < n) logits = await model.decodeStep(next, cache);
    }
  } finally {
    cache.free();
  }
  return out;
}

for (const [bits, source] of [[8, "int8"], [4, "int4"], [4, "f16-tied"]] as const) {
  Deno.test(`onnx MatMulNBits: int${bits} export of ${source}/ reproduces the goldens`, async () => {
    const tmp = await Deno.makeTempDir();
    try {
      const { g, logits: want } = golden(bits);
      // f32 activations: the exact path reproduces the goldens at their own tolerance.
      const info = await exportChatGLMToOnnx(`${FIX}${source}`, tmp, {
        quantize: source === "f16-tied" ? bits : undefined,
        quantAccuracy: "f32",
      });
      assert.equal(info.quantAccuracy, "f32");
      assert.equal(info.quantization?.bits, bits);
      const graph = await Deno.readFile(`${tmp}/model.onnx`);
      assert.ok(new TextDecoder().decode(graph).includes("MatMulNBits"));
      const model = await loadOnnxModel(tmp, { modelDir: `${FIX}${source}` });
      try {
        const V = model.config.vocabSize;
        const got = await model.forward(g.input_ids);
        const r = compareRule(got, want, g.compare.rtol, g.compare.atol, ranges(g, V));
        assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit}`);
        assert.deepEqual(await greedy(model, g, g.greedy_tokens[0].length), g.greedy_tokens);
      } finally {
        model.dispose();
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("onnx and WebGPU agree on int4 group-wise with quantized embeddings", async () => {
  const tmp = await Deno.makeTempDir();
  const quantize = { bits: 4, groupSize: 32, embeddings: true } as const;
  try {
    const { g } = golden(4);
    await exportChatGLMToOnnx(`${FIX}f16-tied`, tmp, { quantize, quantAccuracy: "f32" });
    const graph = new TextDecoder().decode(await Deno.readFile(`${tmp}/model.onnx`));
    assert.ok(graph.includes("lm_head.weight.nbits"), "the tied head runs as MatMulNBits");
    const onnx = await loadOnnxModel(tmp, { modelDir: `${FIX}f16-tied` });
    const gpu = await loadModel(`${FIX}f16-tied`, {
      quantize,
      dtype: "f32",
      log: () => {},
      progressBar: false,
    });
    try {
      const a = await onnx.forward(g.input_ids);
      const b = await gpu.forward(g.input_ids);
      const r = compareRule(a, b, 1e-4, 1e-6, ranges(g, gpu.config.vocabSize));
      assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit}`);
    } finally {
      onnx.dispose();
      gpu.dispose();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

for (const bits of [8, 4] as const) {
  Deno.test(`onnx MatMulNBits with int8 activations (the default, fast): int${bits} near the goldens`, async () => {
    const tmp = await Deno.makeTempDir();
    try {
      const { g, logits: want } = golden(bits);
      const info = await exportChatGLMToOnnx(`${FIX}int${bits}`, tmp, {});
      assert.equal(info.quantAccuracy, "int8");
      const graph = new TextDecoder().decode(await Deno.readFile(`${tmp}/model.onnx`));
      // AttributeProto: name, then field 3 (varint) = 4, on every MatMulNBits node.
      const levels = graph.split("accuracy_level").length - 1;
      assert.ok(levels > 0);
      assert.equal(graph.split("accuracy_level\x18\x04").length - 1, levels, "accuracy_level 4");
      const model = await loadOnnxModel(tmp, { modelDir: `${FIX}int${bits}` });
      try {
        const got = await model.forward(g.input_ids);
        // Activations rounded to int8 per block: measured ~11% of the largest logit on this
        // random model (very sensitive: int4 itself moves its logits by 30); a wrong packing or
        // scale would be off by far more.
        const r = compareRule(got, want, 0.2, 0, ranges(g, model.config.vocabSize));
        assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit}`);
      } finally {
        model.dispose();
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("a float checkpoint without lm_head exports with the tied head and agrees with WebGPU", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const { g } = golden(4);
    await exportChatGLMToOnnx(`${FIX}f16-tied`, tmp, {});
    const onnx = await loadOnnxModel(tmp, { modelDir: `${FIX}f16-tied` });
    const gpu = await loadModel(`${FIX}f16-tied`, {
      dtype: "f32",
      log: () => {},
      progressBar: false,
    });
    try {
      const a = await onnx.forward(g.input_ids);
      const b = await gpu.forward(g.input_ids);
      const r = compareRule(a, b, 1e-4, 1e-6, ranges(g, gpu.config.vocabSize));
      assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit}`);
    } finally {
      onnx.dispose();
      gpu.dispose();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
