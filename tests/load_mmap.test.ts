/**
 * Mapped checkpoint pieces (core/io/mapped_file.ts) and the streaming load with mapping on and
 * off: the same bytes at any offset, views detached when unmapped, `MEDGLM_NO_MMAP=1` reads
 * instead, byte-identical weights and the same logits on every fixture layout, and a shard that
 * shrank after its index was read fails naming the file (never SIGBUS).
 */

import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { openCheckpoint, readTensor as readStored } from "../core/io/checkpoint.ts";
import { convertBytes } from "../core/io/dtype.ts";
import { MappedFile, mmapWanted } from "../core/io/mapped_file.ts";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import { uploadChatGLMWeights } from "../core/models/chatglm/weights.ts";
import { readRaw, releaseTensor } from "../core/tensor/tensor.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false } satisfies LoadModelOptions;
const PROMPT = [5, 6, 1657, 1660];

/** Why this process cannot map files, or null when it can. */
function noMapping(): string | null {
  if (Deno.build.os !== "linux") return `mapping is Linux only (this is ${Deno.build.os})`;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return "no ffi permission";
  if (Deno.env.get("MEDGLM_NO_MMAP") === "1") return "MEDGLM_NO_MMAP=1 is set";
  return null;
}

/** Runs `fn` with MEDGLM_NO_MMAP set to `value` (or unset), restoring it after. */
async function withNoMmap<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = Deno.env.get("MEDGLM_NO_MMAP");
  if (value === undefined) Deno.env.delete("MEDGLM_NO_MMAP");
  else Deno.env.set("MEDGLM_NO_MMAP", value);
  try {
    return await fn();
  } finally {
    if (before === undefined) Deno.env.delete("MEDGLM_NO_MMAP");
    else Deno.env.set("MEDGLM_NO_MMAP", before);
  }
}

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("medglm-mmap-", fn);

Deno.test("mapped file: pieces at any offset are the file's bytes; unmapped views are detached; past the end fails naming the file", async () => {
  const why = noMapping();
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  await withTemp(async (dir) => {
    const path = `${dir}/shard.bin`;
    const data = new Uint8Array(3 * 4096 + 123).map((_, i) => (i * 13 + 5) & 255);
    await Deno.writeFile(path, data);
    const file = MappedFile.open(path);
    assert.ok(file, "mapping is available");
    try {
      assert.equal(file.size, data.length);
      // Page-aligned, inside a page, across pages, the last byte, empty.
      for (
        const [offset, length] of [[0, 4096], [7, 9], [4000, 5000], [data.length - 1, 1], [9, 0]]
      ) {
        const piece = await file.map(offset, length);
        assert.ok(piece, `mapped ${length} at ${offset}`);
        assert.deepEqual(piece.bytes, data.subarray(offset, offset + length));
        // The view keeps the data's alignment within its page.
        if (length) assert.equal(piece.bytes.byteOffset, offset % 4096);
        piece.unmap();
        assert.equal(piece.bytes.length, 0, "an unmapped piece's view is detached");
        piece.unmap(); // twice is harmless
      }
      await assert.rejects(
        () => file.map(data.length - 10, 20),
        new RegExp(
          `shard\\.bin: unexpected end of file reading 20 bytes at offset ${
            data.length - 10
          } \\(the file is ${data.length} bytes\\)`,
        ),
      );
    } finally {
      file.close();
    }
    await assert.rejects(() => file.map(0, 1), /shard\.bin: internal error: mapping a closed file/);
    assert.throws(() => MappedFile.open(`${dir}/missing.bin`), Deno.errors.NotFound);
    await withNoMmap("1", () => {
      assert.equal(mmapWanted(), false);
      assert.equal(MappedFile.open(path), null, "MEDGLM_NO_MMAP=1: read instead");
      return Promise.resolve();
    });
  });
});

Deno.test("streaming load, mapped and read: byte-identical weights and the same logits, every fixture layout", async () => {
  const gpu = await getGpu();
  if (noMapping()) console.log(`note: ${noMapping()}: both loads read`);
  for (const sub of ["", "pytorch", "bf16-sharded"]) {
    const dir = sub ? `${TINY}/${sub}` : TINY;
    const ckpt = await openCheckpoint(dir);
    for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
      // trainable keeps every storage buffer, so each weight can be read back as uploaded.
      const mapped = await withNoMmap(
        undefined,
        () => loadModel(dir, { ...quiet, dtype, trainable: true }),
      );
      const read = await withNoMmap(
        "1",
        () => loadModel(dir, { ...quiet, dtype, trainable: true }),
      );
      const packedMapped = await withNoMmap(undefined, () => loadModel(dir, { ...quiet, dtype }));
      const packedRead = await withNoMmap("1", () => loadModel(dir, { ...quiet, dtype }));
      try {
        for (const [name, t] of mapped.parameters()) {
          const stored = await readStored(ckpt, name);
          const want = convertBytes(stored.data, stored.dtype, dtype === "f16" ? "F16" : "F32");
          const what = `${dir} ${dtype} ${name}`;
          assert.deepEqual(new Uint8Array(await readRaw(t)), want, `${what} mapped`);
          const other = read.parameters().get(name)!;
          assert.deepEqual(new Uint8Array(await readRaw(other)), want, `${what} read`);
        }
        const logits = await packedRead.forward([PROMPT]);
        assert.deepEqual(await packedMapped.forward([PROMPT]), logits, `${dir} ${dtype}: logits`);
        assert.deepEqual(await mapped.forward([PROMPT]), logits, `${dir} ${dtype}: trainable`);
      } finally {
        for (const m of [mapped, read, packedMapped, packedRead]) m.dispose();
      }
    }
  }
});

Deno.test("a shard that shrank after its index was read fails naming the file, mapped or read", async () => {
  const gpu = await getGpu();
  await withTemp(async (dir) => {
    for (const e of Deno.readDirSync(`${TINY}/pytorch`)) {
      if (e.isFile) await Deno.copyFile(`${TINY}/pytorch/${e.name}`, `${dir}/${e.name}`);
    }
    const ckpt = await openCheckpoint(dir);
    const config = await readChatGLMConfig(dir);
    const shard = ckpt.shards[ckpt.shards.length - 1].path;
    const size = (await Deno.stat(shard)).size;
    // Cut the shard inside its tensor data: the index read at open still points past the end.
    const f = await Deno.open(shard, { write: true });
    await f.truncate(Math.floor(size / 2));
    f.close();
    for (const mapped of [true, false]) {
      await assert.rejects(
        async () => {
          const w = await uploadChatGLMWeights(gpu, ckpt, config, {
            dtype: "f32",
            progressBar: false,
            mapped,
          });
          for (const t of w.tensors.values()) if (!t.released) releaseTensor(t);
        },
        new RegExp(
          `${shard.split("/").pop()!.replace(/\./g, "\\.")}: unexpected end of file reading`,
        ),
        `mapped ${mapped}`,
      );
    }
  });
});
