// `deno task bench engine`'s baseline: its flags, the git-tree extraction the matmul, real-size
// and engine baselines share (bench/git_tree.ts), and the child that decodes with 965e0a1's code
// (bench/engine_baseline_child.ts), run once on the tiny fixture for what it returns, not how
// fast (timings belong to the benchmark).
import assert from "node:assert/strict";
import { DECODE_BASELINE, engineBenchFlags, refDecode } from "../bench/engine.ts";
import { extractTree } from "../bench/git_tree.ts";
import { readChatGLMConfig } from "../core/mod.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;

/** Why the baseline cannot be extracted here (no git, a checkout without that commit), or null. */
async function noBaseline(): Promise<string | null> {
  try {
    const out = await new Deno.Command("git", {
      args: ["-C", ROOT, "cat-file", "-e", `${DECODE_BASELINE}^{commit}`],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success ? null : `this checkout has no commit ${DECODE_BASELINE}`;
  } catch (err) {
    return `git is not runnable: ${(err as Error).message}`;
  }
}

/**
 * Runs `fn` with a fresh temporary folder (removed after) where the baseline commit can be
 * extracted; skips, saying why, where it cannot.
 */
async function withBaselineDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const why = await noBaseline();
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "medglm-test-baseline-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bench engine: --baseline REF (default 965e0a1, none skips), --decode-only, --small", () => {
  assert.deepEqual(engineBenchFlags(["engine"]), {
    baseline: "965e0a1",
    decodeOnly: false,
    small: false,
  });
  assert.deepEqual(engineBenchFlags(["engine", "--baseline", "none", "--decode-only"]), {
    baseline: null,
    decodeOnly: true,
    small: false,
  });
  assert.deepEqual(engineBenchFlags(["--baseline=abc123"]), {
    baseline: "abc123",
    decodeOnly: false,
    small: false,
  });
  assert.equal(engineBenchFlags(["engine", "--small"]).small, true);
  assert.throws(() => engineBenchFlags(["--baseline="]), /--baseline needs a git ref/);
});

Deno.test("extractTree: folders of a commit, the missing ones skipped; errors name the ref", () =>
  withBaselineDir(async (dir) => {
    // 965e0a1 has core/ but no base/ (the base member came later).
    await extractTree(DECODE_BASELINE, dir, ["core", "base"]);
    assert.ok((await Deno.stat(`${dir}/core/mod.ts`)).isFile);
    await assert.rejects(() => Deno.stat(`${dir}/base`), Deno.errors.NotFound);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["core"]);
    await assert.rejects(
      () => extractTree(DECODE_BASELINE, dir, ["no-such-member"]),
      /965e0a1 has none of no-such-member/,
    );
    await assert.rejects(
      () => extractTree("no-such-ref-0000", dir, ["core"]),
      /git ls-tree no-such-ref-0000/,
    );
  }));

Deno.test("bench engine: 965e0a1's per-token decode of the tiny model runs in a child", () =>
  withBaselineDir(async (dir) => {
    await extractTree(DECODE_BASELINE, dir, ["core", "base", "serve"]);
    const times = await refDecode(dir, TINY, await readChatGLMConfig(TINY));
    // Its modes only: 965e0a1 had no UTF-8 mask.
    assert.deepEqual(Object.keys(times).sort(), ["T0.95 p0.7", "greedy"]);
    for (const t of Object.values(times)) {
      assert.ok(t.decodeMs > 0 && Number.isFinite(t.decodeMs), JSON.stringify(t));
      assert.ok(t.ttftMs > 0 && Number.isFinite(t.ttftMs), JSON.stringify(t));
    }
  }));
