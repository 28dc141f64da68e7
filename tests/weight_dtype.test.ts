// The float weights' dtype when a load asks for none is one rule for every architecture
// (`defaultWeightDtype`: f16 where the adapter has shader-f16, except f32 on a software adapter for
// a model whose f32 weights fit in half of host memory; else f32): a ChatGLM-6B and a
// Llama-family directory load with the same dtype on the adapter at hand, through `loadModel` and
// through serve's engine; `--dtype f16|f32` is taken by infer and serve alike.
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { loadModel } from "../core/models/load.ts";
import { defaultWeightDtype, weightDtypeChoice } from "../core/models/chatglm/weights.ts";
import { parseInferFlags } from "../serve/infer_flags.ts";
import { FlagError, parseServeFlags } from "../serve/http/flags.ts";
import { startEngine } from "../serve/cli.ts";
import { writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";

const quiet = { log: () => {}, progressBar: false };
const CHATGLM = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const llama = (m: string) => new URL(`./fixtures/llama-family/${m}`, import.meta.url).pathname;

Deno.test("a Llama-family directory loads with ChatGLM-6B's default dtype on this adapter", async () => {
  const gpu = await getGpu();
  // The fixture models are tiny (1 parameter stands for "f32 weights that fit").
  const want = defaultWeightDtype(gpu, 1);
  assert.equal(want, gpu.hasF16 && !gpu.isSoftware ? "f16" : "f32");
  const seen: Record<string, string> = {};
  for (const dir of [CHATGLM, llama("qwen2-tiny"), llama("llama3-tiny")]) {
    const model = await loadModel(dir, { ...quiet, gpu });
    try {
      seen[dir.split("/").pop()!] = model.dtype;
      // The float tensors the model holds are of that dtype.
      const floats = new Set([...model.parameters().values()].map((t) => t.dtype));
      assert.deepEqual([...floats], [want], dir);
    } finally {
      model.dispose();
    }
  }
  assert.deepEqual(seen, { "chatglm6b-tiny": want, "qwen2-tiny": want, "llama3-tiny": want });
  // An explicit dtype wins for either architecture.
  for (const dir of [CHATGLM, llama("qwen2-tiny")]) {
    const model = await loadModel(dir, { ...quiet, gpu, dtype: "f32" });
    try {
      assert.equal(model.dtype, "f32", dir);
    } finally {
      model.dispose();
    }
  }
});

Deno.test("the default dtype rule: f16 on hardware, f32 without shader-f16, by size on software", () => {
  const GB = 1e9;
  const hw = { hasF16: true, isSoftware: false };
  const sw = { hasF16: true, isSoftware: true };
  assert.equal(weightDtypeChoice(hw, 6.2e9, 24 * GB).dtype, "f16");
  assert.equal(weightDtypeChoice({ hasF16: false, isSoftware: false }, 1e6, 24 * GB).dtype, "f32");
  assert.equal(weightDtypeChoice({ hasF16: false, isSoftware: true }, 6.2e9, 24 * GB).dtype, "f32");
  // Software: f32 while the f32 weights take at most half of host memory.
  assert.equal(weightDtypeChoice(sw, 3e9, 24 * GB).dtype, "f32"); // 12 GB of 24
  const big = weightDtypeChoice(sw, 3.1e9, 24 * GB); // 12.4 GB of 24
  assert.equal(big.dtype, "f16");
  assert.match(big.reason, /f32 weights \(12\.4 GB\) exceed 50% of host memory \(12\.0 GB\)/);
  assert.match(weightDtypeChoice(sw, 1e8, 24 * GB).reason, /slower than f32 here at prefill/);
  // Without the model's size the memory-safe f16.
  assert.equal(weightDtypeChoice(sw, undefined, 24 * GB).dtype, "f16");
});

Deno.test("--dtype f16|f32 is parsed alike by infer and serve; absent leaves the load's default", () => {
  for (const parse of [parseInferFlags, parseServeFlags]) {
    assert.equal(parse([]).dtype, undefined);
    assert.equal(parse(["--dtype", "f32"]).dtype, "f32");
    assert.equal(parse(["--dtype", "f16"]).dtype, "f16");
    assert.throws(() => parse(["--dtype", "bf16"]), (e: unknown) => {
      assert.ok(e instanceof FlagError);
      assert.match((e as Error).message, /--dtype: expected f16 or f32 \(got "bf16"\)/);
      return true;
    });
  }
});

Deno.test("serve --dtype reaches the engine's load (a Qwen3 directory: f32 asked, else the default)", async () => {
  const dir = await writeQwen3Dir("medglm-weight-dtype-");
  try {
    const want = defaultWeightDtype(await getGpu(), 1); // a tiny model (see above)
    for (const [args, dtype] of [[["--dtype", "f32"], "f32"], [[], want]] as const) {
      const engine = await startEngine(
        parseServeFlags(["--model", dir, "--backend", "webgpu", ...args]),
        () => {},
      );
      try {
        assert.match(engine.info.weights ?? "", new RegExp(`^${dtype}, `), args.join(" "));
      } finally {
        await engine.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
