// `deno task export-onnx` (serve/onnx/export_cli.ts): flags, a full export and its info file.

import assert from "node:assert/strict";
import { exportOnnxMain } from "../serve/onnx/export_cli.ts";
import { readOnnxExportInfo } from "../core/onnx/export_dir.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;

async function quietly(fn: () => Promise<number>): Promise<{ code: number; err: string }> {
  const lines: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await fn(), err: lines.join("\n") };
  } finally {
    console.error = orig;
  }
}

Deno.test("export-onnx: bad flags are refused with the flag named", async () => {
  const cases: [string[], RegExp][] = [
    [["--out", "/tmp/x"], /--model DIR is required/],
    [["--model", DIR], /--out DIR is required/],
    [["--model", DIR, "--out", "/tmp/x", "--dtype", "bf16"], /--dtype must be f32 or f16/],
    [["--model", DIR, "--out", "/tmp/x", "--external-data", "maybe"], /--external-data/],
    [["--model", DIR, "--out", "/tmp/x", "--max-positions", "0"], /--max-positions/],
    [["--frobnicate"], /frobnicate/],
  ];
  for (const [args, re] of cases) {
    const { code, err } = await quietly(() => exportOnnxMain(args));
    assert.equal(code, 2, args.join(" "));
    assert.match(err, re);
  }
  const { code, err } = await quietly(() =>
    exportOnnxMain(["--model", `${DIR}/no-such-dir`, "--out", "/tmp/x"])
  );
  assert.equal(code, 1);
  assert.match(err, /no-such-dir\/config\.json: not found/);
});

Deno.test("export-onnx: writes model.onnx, the data file and onnx_export.json", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-export-cli-" });
  try {
    const { code, err } = await quietly(() =>
      exportOnnxMain([
        "--model",
        DIR,
        "--out",
        out,
        "--dtype",
        "f16",
        "--external-data",
        "always",
        "--max-positions",
        "64",
        "--adapter",
        `${DIR}/adapter-qkv`,
      ])
    );
    assert.equal(code, 0, err);
    const { info, config } = await readOnnxExportInfo(out);
    assert.equal(info.dtype, "f16");
    assert.equal(info.maxPositions, 64);
    assert.equal(info.externalData, "model.onnx.data");
    assert.equal(info.source.adapter?.dir, `${DIR}/adapter-qkv`);
    assert.equal(
      config.hiddenSize,
      JSON.parse(Deno.readTextFileSync(`${DIR}/config.json`)).hidden_size,
    );
    assert.ok((await Deno.stat(`${out}/model.onnx.data`)).size > 0);
    const leftovers = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) =>
      n.endsWith(".tmp")
    );
    assert.deepEqual(leftovers, []);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
