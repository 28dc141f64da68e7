/**
 * Benchmarks that measure peak memory run each case in its own process (its VmHWM is then that
 * case's alone): the child prints one JSON line last, read back here; a failed child's stderr
 * tail goes into the error.
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** Runs `deno run -A script ...args` from the repository root; returns its last stdout line parsed. */
export async function runJsonChild<T>(script: string, args: string[], what: string): Promise<T> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", script, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !text) {
    throw new Error(
      `${what} failed (exit ${out.code}): ` + new TextDecoder().decode(out.stderr).slice(-2000),
    );
  }
  return JSON.parse(text.split("\n").pop()!) as T;
}

/** This process's peak resident memory in bytes (Linux VmHWM; NaN elsewhere). */
export function vmHwmBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : NaN;
}
