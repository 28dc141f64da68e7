/**
 * Every module must work when imported by URL: serve the repo over HTTP, import the root `mod.ts`
 * and each member's `mod.ts` from it in a fresh Deno process (no config file), then run a kernel
 * through the imported API and read a file the trainer locates through its module URL.
 */
import assert from "node:assert/strict";
import { serveFolder } from "./helpers/static_server.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MEMBERS = ["core", "data", "train", "serve", "bot", "eval", "bench"];

Deno.test("the root and every member import by URL, and a kernel runs through them", async () => {
  const server = serveFolder(ROOT);
  const dir = await Deno.makeTempDir();
  try {
    const script = `
      const root = await import("${server.url}/mod.ts");
      for (const m of ${JSON.stringify(MEMBERS)}) await import("${server.url}/" + m + "/mod.ts");
      const gpu = await root.getGpu();
      const x = root.uploadTensor(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
      const w = root.uploadTensor(gpu, new Float32Array([1, 0, 1, 0, 1, 0]), [2, 3]);
      const rec = root.beginRecording(gpu);
      const y = root.linear(rec, x, w);
      await root.submit(rec);
      console.log(JSON.stringify(Array.from(await root.readTensor(y))));
      const plan = await root.dryRunReport({ ...root.preset("chatglm-lora-medical"), dryRun: true }, null);
      console.log(plan.split("\\n")[0]);
    `;
    const file = `${dir}/probe.ts`;
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-config", "--no-lock", "--allow-all", file],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `the URL import failed:\n${stderr}`);
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    // [1,2,3]·[1,0,1] = 4, [1,2,3]·[0,1,0] = 2, [4,5,6]·[1,0,1] = 10, [4,5,6]·[0,1,0] = 5
    assert.deepEqual(JSON.parse(lines.at(-2) ?? ""), [4, 2, 10, 5]);
    assert.equal(lines.at(-1), "memory plan: ChatGLM-6B (bundled config)");
    for (const m of MEMBERS) assert.ok(server.requests.includes(`/${m}/mod.ts`), m);
    assert.ok(server.requests.includes("/train/configs/chatglm-6b.config.json"));
  } finally {
    await Deno.remove(dir, { recursive: true });
    await server.close();
  }
});
