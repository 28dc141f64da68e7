// Backends behind one engine: the ONNX Runtime runner through the lockstep decoder (greedy golden
// tokens, batched; `auto` takes it on a software adapter when an export exists), and
// `deno task serve` (serve/cli.ts) end to end: loads, answers, stops on SIGINT, refuses a
// missing model with the fix.

import assert from "node:assert/strict";
import { exportChatGLMToOnnx } from "../core/onnx/export_dir.ts";
import { getGpu } from "../core/gpu/device.ts";
import { loadEngine } from "../serve/engine/load.ts";
import { loadGoldens } from "./reference/chatglm.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const gen = loadGoldens(DIR).cases.get("generate")!.values as {
  max_new_tokens: number;
  prompts_ids: number[][];
  tokens: Record<string, number[][]>;
};

async function ortAvailable(): Promise<string | null> {
  try {
    await import("npm:onnxruntime-node@1.30.0");
    return null;
  } catch (err) {
    return (err as Error).message.split("\n")[0];
  }
}

Deno.test("onnx backend: greedy golden tokens through the ONNX Runtime decoder", async () => {
  const why = await ortAvailable();
  if (why) {
    console.log(`skipped: onnxruntime-node cannot be loaded here (${why})`);
    return;
  }
  const out = await Deno.makeTempDir({ prefix: "medglm-engine-onnx-" });
  try {
    await exportChatGLMToOnnx(DIR, out, { progress: false });
    const engine = await loadEngine({
      model: DIR,
      onnx: out,
      backend: "onnx",
      maxBatch: 2,
      log: () => {},
    });
    try {
      assert.equal(engine.info.backend, "onnx");
      // Three requests on two slots: they queue, join and leave at different steps.
      const prompts = [...gen.prompts_ids, gen.prompts_ids[0]];
      const got = await Promise.all(prompts.map(async (p) => {
        const tokens: number[] = [];
        const it = engine.generateTokens({
          promptIds: p,
          maxNewTokens: gen.max_new_tokens,
          temperature: 0,
        });
        for await (const d of it) tokens.push(...d.tokens);
        return tokens;
      }));
      got.forEach((t, i) => assert.deepEqual(t, gen.tokens.base[i % 2], `prompt ${i}`));
    } finally {
      await engine.close();
    }
    const gpu = await getGpu();
    const auto = await loadEngine({ model: DIR, onnx: out, backend: "auto", log: () => {} });
    try {
      assert.equal(auto.info.backend, gpu.isSoftware ? "onnx" : "webgpu", auto.info.backendReason);
      assert.match(auto.info.backendReason!, gpu.isSoftware ? /software adapter/ : /hardware/);
    } finally {
      await auto.close();
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("auto backend without an export: WebGPU, and it says why", async () => {
  const gpu = await getGpu();
  const engine = await loadEngine({ model: DIR, backend: "auto", dtype: "f32", log: () => {} });
  try {
    assert.equal(engine.info.backend, "webgpu");
    if (gpu.isSoftware) assert.match(engine.info.backendReason!, /no ONNX export in .*export-onnx/);
    else assert.match(engine.info.backendReason!, /hardware adapter/);
  } finally {
    await engine.close();
  }
});

function serveCli(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}/serve/cli.ts`, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

Deno.test("deno task serve: loads the model, answers, stops on SIGINT", async () => {
  const child = serveCli(["--model", DIR, "--port", "0", "--backend", "webgpu"]);
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderrText = new Response(child.stderr).text();
  let seen = "";
  let url = "";
  try {
    while (!url) {
      const { value, done } = await stdout.read();
      if (done) throw new Error(`serve exited early: ${seen}\n${await stderrText}`);
      seen += value;
      url = seen.match(/listening on (http:\/\/\S+)/)?.[1] ?? "";
    }
    let health;
    for (let i = 0; i < 300; i++) {
      health = await fetch(`${url}/health`);
      const body = await health.json();
      if (health.status === 200) {
        assert.equal(body.model, "chatglm6b-tiny");
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(health!.status, 200);
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: "头痛怎么办" }],
        temperature: 0,
        max_tokens: 12,
      }),
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.usage.completion_tokens > 0);
    assert.equal(typeof body.choices[0].message.content, "string");
  } finally {
    child.kill("SIGINT");
  }
  const status = await child.status;
  await stdout.cancel();
  const err = await stderrText;
  assert.equal(status.code, 0, err);
  assert.match(err, /backend webgpu \(requested/);
});

Deno.test("deno task serve: a missing model directory exits with the fix", async () => {
  const child = serveCli(["--model", `${DIR}/nope`, "--port", "0"]);
  const [status, out, err] = await Promise.all([
    child.status,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  assert.equal(status.code, 1, out);
  assert.match(err, /error: --model .*nope: no such directory\.\nfix: /);
});
