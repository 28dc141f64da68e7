/**
 * A private `XDG_RUNTIME_DIR` for processes started without one (a cron job, `env -i`, a
 * container, ssh without a login session). Creating the WebGPU instance makes the Vulkan
 * loader's window-system probe call libwayland-client's `wl_display_connect`, which prints
 * `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` (once per probe: twice
 * per run) when the variable is unset or not an absolute path. Nothing here draws windows, so
 * any private directory silences it; it must be set before the adapter is requested.
 */

/** Sets `XDG_RUNTIME_DIR` to a private 0700 directory when it is unset or not absolute. */
export function ensureRuntimeDir(): string | null {
  let current: string | undefined;
  try {
    current = Deno.env.get("XDG_RUNTIME_DIR");
  } catch {
    return null; // no --allow-env: leave the environment alone
  }
  if (current?.startsWith("/")) return current;
  if (Deno.build.os === "windows" || Deno.build.os === "darwin") return null;
  try {
    const dir = privateDir();
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    return dir;
  } catch {
    return null; // no write permission anywhere: the warning is harmless
  }
}

/** `$TMPDIR/medglm-runtime-<uid>`, reused while it is ours and 0700; else a fresh temp dir. */
function privateDir(): string {
  const uid = Deno.uid();
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  const dir = `${tmp.replace(/\/+$/, "")}/medglm-runtime-${uid ?? "user"}`;
  try {
    Deno.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
  // A directory someone else made (or a link) in a shared /tmp is not private: use a new one.
  const st = Deno.lstatSync(dir);
  if (st.isDirectory && st.uid === uid && ((st.mode ?? 0) & 0o777) === 0o700) return dir;
  return Deno.makeTempDirSync({ prefix: "medglm-runtime-" });
}
