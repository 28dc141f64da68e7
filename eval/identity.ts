/**
 * The cache folder name of a model variant: a fingerprint of what decides its outputs. The base
 * model counts by `config.json` and its weight files' names, sizes and modification times
 * (hashing gigabytes of weights on every run would cost more than most evaluations), the same for
 * the tokenizer model; an adapter counts by `adapter_config.json` and the full bytes of its
 * weights (small files).
 */

import { fingerprint } from "./cache.ts";

// weights, configs and the tokenizer model (ice_text.model)
const WEIGHT_FILE = /\.(safetensors|bin|pt|pth|ckpt|json|model)$/i;

async function readOr(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

async function filesOf(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && WEIGHT_FILE.test(e.name)) out.push(e.name);
    }
  } catch (err) {
    throw new Error(`${dir}: cannot list: ${(err as Error).message}`);
  }
  return out.sort();
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function variantHash(
  modelDir: string,
  adapterDir?: string,
): Promise<string> {
  const parts: string[] = [await readOr(`${modelDir}/config.json`)];
  for (const name of await filesOf(modelDir)) {
    const st = await Deno.stat(`${modelDir}/${name}`);
    parts.push(`${name}:${st.size}:${st.mtime?.getTime() ?? 0}`);
  }
  if (adapterDir) {
    parts.push("adapter", await readOr(`${adapterDir}/adapter_config.json`));
    for (const name of await filesOf(adapterDir)) {
      parts.push(
        `${name}:${await sha256Hex(
          await Deno.readFile(`${adapterDir}/${name}`),
        )}`,
      );
    }
  }
  return fingerprint(...parts);
}
