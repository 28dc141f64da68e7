/**
 * The streaming load's reading plan: pieces tile each tensor in order without crossing a storage
 * chunk, buffer writes stay 4-byte aligned, the reads ahead give the planned bytes (and refuse a
 * read out of plan, or a short file, naming it), and large allocations are advised as huge pages
 * where the system allows it.
 */

import assert from "node:assert/strict";
import {
  ChunkReader,
  READ_PIECE_BYTES,
  READS_AHEAD,
  tensorLayout,
} from "../core/models/chatglm/weights.ts";
import { withHugePages } from "../core/io/huge_pages.ts";
import { MappedFile } from "../core/io/mapped_file.ts";
import type { StoredTensor } from "../core/io/stored_tensor.ts";
import type { Dtype } from "../core/io/dtype.ts";

function stored(shape: number[], dtype: Dtype, byteOffset = 0): StoredTensor {
  const el = dtype === "F32" ? 4 : 2;
  return { dtype, shape, byteOffset, byteLength: shape.reduce((a, b) => a * b, 1) * el };
}

Deno.test("tensor layout: pieces tile the rows in order, within chunks, aligned for buffer writes", () => {
  const cases: { shape: number[]; dtype: Dtype; run: "f16" | "f32"; limit: number }[] = [
    { shape: [130528, 4096], dtype: "F16", run: "f16", limit: 2 ** 27 }, // ChatGLM's embedding
    { shape: [4096], dtype: "F16", run: "f16", limit: 2 ** 27 }, // a bias: one row
    { shape: [], dtype: "F32", run: "f16", limit: 2 ** 27 }, // a scalar
    { shape: [1001, 17], dtype: "F32", run: "f16", limit: 1000 }, // odd f16 rows, small chunks
    { shape: [300, 3], dtype: "BF16", run: "f32", limit: 4096 },
    { shape: [3, 5_000_000], dtype: "F16", run: "f16", limit: 2 ** 27 }, // a row > one piece
    { shape: [0, 8], dtype: "F16", run: "f16", limit: 2 ** 27 },
  ];
  for (const { shape, dtype, run, limit } of cases) {
    const what = `${shape.join("x")} ${dtype}→${run}, limit ${limit}`;
    const layout = tensorLayout(stored(shape, dtype), "t", run, limit);
    const runRow = layout.rowLength * (run === "f16" ? 2 : 4);
    const storedRow = layout.rowLength * (dtype === "F32" ? 4 : 2);
    assert.ok(layout.rows <= layout.rowsPerChunk || layout.rowsPerChunk * runRow <= limit, what);
    let next = 0;
    for (const p of layout.pieces) {
      assert.equal(p.row, next, `${what}: pieces in order, no gap`);
      assert.ok(p.rows >= 1, what);
      const chunk = Math.floor(p.row / layout.rowsPerChunk);
      assert.equal(
        Math.floor((p.row + p.rows - 1) / layout.rowsPerChunk),
        chunk,
        `${what}: a piece stays in one chunk`,
      );
      assert.equal(((p.row - chunk * layout.rowsPerChunk) * runRow) % 4, 0, `${what}: aligned`);
      assert.ok(p.rows * storedRow <= Math.max(READ_PIECE_BYTES, 2 * storedRow), what);
      next = p.row + p.rows;
    }
    assert.equal(next, layout.rows, `${what}: every row read once`);
  }
  assert.throws(
    () => tensorLayout(stored([4, 100], "F32"), "big.weight", "f32", 256),
    /big\.weight: one row of 400 bytes does not fit a binding of 256 bytes/,
  );
});

Deno.test("chunk reader, mapped and read: the pieces ahead give the planned bytes; a read out of plan or past the end fails naming the file", async () => {
  for (const mapped of [true, false]) await chunkReaderCase(mapped);
});

Deno.test("chunk reader: a piece the kernel refuses to map is read instead, same bytes", async () => {
  if (!canMap()) {
    console.log("skipped: this process cannot map files (not Linux, no ffi, or MEDGLM_NO_MMAP=1)");
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "medglm-load-pieces-" });
  try {
    const path = `${dir}/shard.bin`;
    const data = new Uint8Array(50_000).map((_, i) => (i * 11 + 1) & 255);
    await Deno.writeFile(path, data);
    const ranges = Array.from({ length: 9 }, (_, i) => ({ offset: i * 5_000 + 3, length: 4_999 }));
    let refused = 0;
    // Every other mapping fails, as mmap may (no memory for the mapping, a filesystem without it).
    const reader = new ChunkReader({
      openMapped: (p) => {
        const file = MappedFile.open(p)!;
        let n = 0;
        return {
          map: (offset, length) =>
            n++ % 2 ? (refused++, Promise.resolve(null)) : file.map(offset, length),
          close: () => file.close(),
        };
      },
    });
    reader.begin(path, ranges);
    assert.ok(reader.mapped);
    const got: Uint8Array[] = [];
    for (const r of ranges) {
      const bytes = await reader.take(r.offset, r.length);
      assert.deepEqual(bytes, data.subarray(r.offset, r.offset + r.length));
      got.push(bytes);
    }
    await reader.end();
    assert.equal(refused, 4, "every other piece refused");
    // Mapped pieces are unmapped (detached); the refused ones were read into the ring.
    assert.deepEqual(got.map((b) => b.length === 0), ranges.map((_, i) => i % 2 === 0));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Whether this process can map files (Linux, FFI allowed, MEDGLM_NO_MMAP unset). */
function canMap(): boolean {
  return Deno.build.os === "linux" && Deno.permissions.querySync({ name: "ffi" }).state ===
      "granted" &&
    Deno.env.get("MEDGLM_NO_MMAP") !== "1";
}

async function chunkReaderCase(mapped: boolean) {
  const dir = await Deno.makeTempDir({ prefix: "medglm-load-pieces-" });
  try {
    const path = `${dir}/shard.bin`;
    const data = new Uint8Array(100_000).map((_, i) => (i * 7 + 3) & 255);
    await Deno.writeFile(path, data);
    const ranges = [
      { offset: 0, length: 10 },
      { offset: 10, length: 40_000 },
      { offset: 50_000, length: 1 },
      { offset: 40_010, length: 9_990 },
      { offset: 60_000, length: 40_000 },
      { offset: 5, length: 3 },
    ];
    assert.ok(ranges.length > READS_AHEAD + 1, "more ranges than the ring holds");
    const reader = new ChunkReader({ mapped });
    reader.begin(path, ranges);
    const isMapped = reader.mapped;
    assert.equal(isMapped, mapped && canMap(), "mapped where asked and available");
    let previous: Uint8Array | null = null;
    for (const r of ranges) {
      const got = await reader.take(r.offset, r.length);
      assert.deepEqual(got, data.subarray(r.offset, r.offset + r.length), `mapped ${mapped}`);
      // A mapped piece is unmapped at the next take: its view is detached, never dangling.
      if (isMapped && previous) assert.equal(previous.length, 0, "previous piece detached");
      previous = got.length ? got : null;
    }
    await reader.end();
    if (isMapped && previous) {
      assert.equal(previous.length, 0, "the last piece unmapped at the end");
    }

    reader.begin(path, ranges);
    await assert.rejects(
      () => reader.take(10, 40_000),
      /shard\.bin: internal error: read of 40000/,
    );
    await reader.end();

    reader.begin(path, [{ offset: 99_990, length: 20 }]);
    await assert.rejects(
      () => reader.take(99_990, 20),
      /shard\.bin: unexpected end of file reading 20 bytes at offset 99990/,
    );
    await reader.end();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function thpMode(): string | null {
  try {
    return /\[(\w+)\]/.exec(
      Deno.readTextFileSync("/sys/kernel/mm/transparent_hugepage/enabled"),
    )?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Start addresses of the mappings whose VmFlags include "hg" (advised as huge pages). */
function advisedMappings(): Set<string> {
  const out = new Set<string>();
  let current = "";
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
    if (head) current = head[1];
    else if (line.startsWith("VmFlags:") && / hg\b/.test(line)) out.add(current);
  }
  return out;
}

Deno.test("a large allocation made under withHugePages is advised as huge pages", () => {
  if (Deno.build.os !== "linux" || thpMode() !== "madvise") {
    console.log(`skipped: transparent huge pages are "${thpMode()}" here, not "madvise"`);
    return;
  }
  const free = /^MemFree:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"));
  if (!free || Number(free[1]) * 1024 < 3 * 2 ** 30) {
    console.log("skipped: less than 3 GiB free (huge pages are asked for from free memory only)");
    return;
  }
  if (Deno.env.get("MEDGLM_NO_HUGE_PAGES") === "1") {
    console.log("skipped: MEDGLM_NO_HUGE_PAGES=1 turns the advice off");
    return;
  }
  const before = advisedMappings();
  const small = withHugePages(1024, () => new Uint8Array(1024));
  assert.equal(small.length, 1024);
  assert.deepEqual(advisedMappings(), before, "a small allocation is left alone");
  const big = withHugePages(64 * 2 ** 20, () => new Uint8Array(64 * 2 ** 20));
  big.fill(1);
  const added = [...advisedMappings()].filter((a) => !before.has(a));
  assert.ok(added.length >= 1, "the 64 MiB buffer's mapping is advised");
  assert.equal(big[big.length - 1], 1);
});
