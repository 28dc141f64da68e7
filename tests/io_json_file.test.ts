// The one JSON file reader (core/io/json_strict.ts readJsonFile): bounded work on hostile files
// (sparse 2 GiB files, endless devices), and every refusal names the file.
import assert from "node:assert/strict";
import { MAX_CONFIG_JSON_BYTES, MAX_INDEX_JSON_BYTES, readJsonFile } from "../base/json_strict.ts";
import { declaredPromptTemplate } from "../serve/engine/load.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function sparse(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  await f.truncate(size);
  f.close();
}

Deno.test("2 GiB sparse config.json and index files are refused by size, naming the file", async () => {
  await withTemp(async (dir) => {
    for (
      const [name, limit] of [
        ["config.json", MAX_CONFIG_JSON_BYTES],
        ["pytorch_model.bin.index.json", MAX_INDEX_JSON_BYTES],
      ] as const
    ) {
      const path = `${dir}/${name}`;
      await sparse(path, 2 ** 31);
      await assert.rejects(
        () => readJsonFile(path, { maxBytes: limit }),
        new Error(
          `${path}: the file is 2147483648 bytes, over the limit of ${limit} bytes for this JSON ` +
            "file (real ones are far smaller; is it the right file?)",
        ),
      );
    }
    // The engine's own read of config.json goes through the same reader.
    await assert.rejects(
      () => declaredPromptTemplate(dir),
      new RegExp(`^Error: ${dir}/config\\.json: the file is 2147483648 bytes`),
    );
  });
});

Deno.test("a file that reports no size is still read only up to the limit", async () => {
  try {
    await Deno.stat("/dev/zero");
  } catch {
    console.log("skipped: no /dev/zero on this system");
    return;
  }
  await assert.rejects(
    () => readJsonFile("/dev/zero", { maxBytes: 4096 }),
    /^Error: \/dev\/zero: the file is more than 4096 bytes, over the limit of 4096 bytes/,
  );
});

Deno.test("JSON file errors name the file: missing, not UTF-8, not JSON, duplicate keys", async () => {
  await withTemp(async (dir) => {
    const p = `${dir}/adapter_config.json`;
    await assert.rejects(
      () => readJsonFile(p, { notFoundHint: "an adapter directory needs it" }),
      new Error(`${p}: not found (an adapter directory needs it)`),
    );
    await Deno.writeFile(p, Uint8Array.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]));
    await assert.rejects(() => readJsonFile(p), new RegExp(`^Error: ${p}: not valid UTF-8`));
    await Deno.writeTextFile(p, '{"r": 8,');
    await assert.rejects(() => readJsonFile(p), new RegExp(`^Error: ${p}: not valid JSON`));
    await Deno.writeTextFile(p, '{"r": 8, "r": 16}');
    await assert.rejects(
      () => readJsonFile(p),
      new RegExp(`^Error: ${p}: not valid JSON \\(duplicate key "r"`),
    );
    assert.deepEqual(await readJsonFile(p, { strict: false }), { r: 16 });
    // A BOM is allowed, as Python's and HF's readers allow it.
    await Deno.writeTextFile(p, '\ufeff{"r": 8, "target_modules": ["query_key_value"]}');
    assert.deepEqual({ ...(await readJsonFile(p) as object) }, {
      r: 8,
      target_modules: ["query_key_value"],
    });
    await assert.rejects(() => readJsonFile(dir), new RegExp(`^Error: ${dir}: is a directory`));
  });
});
