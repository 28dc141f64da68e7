// The trainer's modules load by URL (relative .ts imports, no bare specifiers), and the dry run
// reads its bundled ChatGLM-6B config through the module URL, not the file system.
import assert from "node:assert/strict";
import { serveFolder } from "./helpers/static_server.ts";

Deno.test("train/lib.ts imports over HTTP and the dry-run plan reads the bundled config", async () => {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const server = serveFolder(root);
  try {
    const script = `
const lib = await import(${JSON.stringify(`${server.url}/train/lib.ts`)});
const text = await lib.dryRunReport({ ...lib.preset("chatglm-lora-medical"), dryRun: true }, null);
console.log(text.split("\\n")[0]);
console.log(lib.lrAt({ kind: "cosine", lr: 1, warmupSteps: 0, totalSteps: 2 }, 1));
`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", script],
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(stdout, /^memory plan: ChatGLM-6B \(bundled config\)\n0\.5\n$/);
    assert.ok(server.requests.includes("/train/configs/chatglm-6b.config.json"));
  } finally {
    await server.close();
  }
});
