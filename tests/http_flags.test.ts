// The serve flags: defaults, every flag, and clear errors for bad values.
import assert from "node:assert/strict";
import { FlagError, parseServeFlags } from "../serve/http/flags.ts";

Deno.test("serve flags have safe defaults", () => {
  assert.deepEqual(parseServeFlags([]), {
    model: undefined,
    adapter: undefined,
    backend: "auto",
    host: "127.0.0.1",
    port: 8000,
    apiKey: undefined,
    maxConcurrent: 4,
    maxQueue: 16,
    maxBodyBytes: 1048576,
    bodyTimeoutMs: 30000,
    promptTemplate: undefined,
    help: false,
  });
});

Deno.test("every serve flag is parsed", () => {
  const flags = parseServeFlags([
    "--model",
    "models/chatglm-6b",
    "--adapter=runs/lora/final",
    "--backend",
    "onnx",
    "--host",
    "0.0.0.0",
    "--port",
    "0",
    "--api-key",
    "k-123",
    "--max-concurrent",
    "8",
    "--max-queue",
    "0",
    "--max-body-bytes",
    "4096",
    "--body-timeout",
    "2.5",
    "--prompt-template",
    "instruction",
    "-h",
  ]);
  assert.deepEqual(flags, {
    model: "models/chatglm-6b",
    adapter: "runs/lora/final",
    backend: "onnx",
    host: "0.0.0.0",
    port: 0,
    apiKey: "k-123",
    maxConcurrent: 8,
    maxQueue: 0,
    maxBodyBytes: 4096,
    bodyTimeoutMs: 2500,
    promptTemplate: "instruction",
    help: true,
  });
});

Deno.test("bad serve flags get errors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--port", "http"], /--port: expected an integer from 0 to 65535 \(got "http"\)/],
    [["--port", "70000"], /--port/],
    [["--port", "80.5"], /--port/],
    [["--max-concurrent", "0"], /--max-concurrent: expected an integer from 1/],
    [["--max-queue", "-1"], /--max-queue/],
    [["--max-body-bytes", "1e6"], /--max-body-bytes/],
    [["--body-timeout", "0"], /--body-timeout: expected seconds, more than 0/],
    [["--backend", "cuda"], /--backend: expected webgpu, onnx or auto \(got "cuda"\)/],
    [["--prompt-template", "alpaca"], /--prompt-template: expected chat or instruction/],
    [["--api-key", " "], /--api-key: must not be empty/],
    [["--host", ""], /--host/],
    [["--model", ""], /--model/],
    [["--temperature", "1"], /Unknown option '--temperature'/],
    [["extra"], /extra/],
    [["--port"], /--port/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseServeFlags(args), (e: unknown) => {
      assert.ok(e instanceof FlagError, `${args.join(" ")}: ${e}`);
      assert.match(e.message, message, args.join(" "));
      return true;
    });
  }
});
