/**
 * A private PostgreSQL cluster for a test: Debian's server binaries, a temporary data directory, a
 * free port on 127.0.0.1 and the socket in the same directory, run as the `postgres` user (the
 * server refuses to run as root). `startPostgres()` resolves to undefined with the reason when the
 * server is not installed or cannot start, so that a test can skip and say why.
 */

export interface TestPostgres {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication, local only). */
  url: string;
  port: number;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

export type PostgresStart = { ok: true; pg: TestPostgres } | { ok: false; reason: string };

/**
 * Starts the cluster for a test file. Without PostgreSQL the file's tests skip with the reason
 * printed; in CI (CI=true, where .ci/run installs it) they run and fail with the reason instead.
 */
export async function postgresForTests(
  file: string,
): Promise<{ started: PostgresStart; ignore: boolean }> {
  const started = await startPostgres();
  const inCi = Deno.env.get("CI") === "true";
  if (!started.ok) {
    console.log(`${file}: PostgreSQL tests ${inCi ? "fail (CI)" : "skipped"}: ${started.reason}`);
  }
  return { started, ignore: !started.ok && !inCi };
}

/** The running cluster, or the reason it is missing as an error. */
export function requirePostgres(started: PostgresStart): TestPostgres {
  if (!started.ok) throw new Error(started.reason);
  return started.pg;
}

async function findBinDir(): Promise<string | undefined> {
  const root = "/usr/lib/postgresql";
  const versions: number[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.isDirectory && /^\d+$/.test(e.name)) versions.push(Number(e.name));
    }
  } catch {
    return undefined;
  }
  for (const v of versions.sort((a, b) => b - a)) {
    const dir = `${root}/${v}/bin`;
    try {
      await Deno.stat(`${dir}/pg_ctl`);
      return dir;
    } catch { /* try the next version */ }
  }
  return undefined;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function run(cmd: string[], asPostgres: boolean): Promise<{ ok: boolean; out: string }> {
  const argv = asPostgres && Deno.uid() === 0 ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
  const p = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { ok: p.success, out: dec.decode(p.stdout) + dec.decode(p.stderr) };
}

export async function startPostgres(): Promise<PostgresStart> {
  const bin = await findBinDir();
  if (!bin) {
    return {
      ok: false,
      reason: "PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)",
    };
  }
  const dir = await Deno.makeTempDir({ prefix: "medglm-pg-" });
  const data = `${dir}/data`;
  if (Deno.uid() === 0) {
    const chown = await run(["chown", "-R", "postgres:postgres", dir], false);
    if (!chown.ok) {
      await Deno.remove(dir, { recursive: true });
      return { ok: false, reason: `cannot hand ${dir} to the postgres user: ${chown.out}` };
    }
  }
  const fail = async (what: string, out: string): Promise<PostgresStart> => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return { ok: false, reason: `${what} failed: ${out.trim().slice(-500)}` };
  };
  const init = await run([`${bin}/initdb`, "-D", data, "-A", "trust", "-U", "postgres"], true);
  if (!init.ok) return await fail("initdb", init.out);
  // A port can be taken between our check and the server's bind: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = freePort();
    const start = await run([
      `${bin}/pg_ctl`,
      "-D",
      data,
      "-l",
      `${dir}/server.log`,
      "-w",
      "-o",
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      "start",
    ], true);
    if (start.ok) {
      let stopped = false;
      // A run that ends before the test that stops it (a --filter, a crash) still stops it.
      const onUnload = () => {
        if (stopped) return;
        stopped = true;
        const argv = [`${bin}/pg_ctl`, "-D", data, "-m", "immediate", "-w", "stop"];
        const full = Deno.uid() === 0 ? ["runuser", "-u", "postgres", "--", ...argv] : argv;
        new Deno.Command(full[0], { args: full.slice(1), stdout: "null", stderr: "null" })
          .outputSync();
        Deno.removeSync(dir, { recursive: true });
      };
      globalThis.addEventListener("unload", onUnload);
      return {
        ok: true,
        pg: {
          url: `postgres://postgres@127.0.0.1:${port}/postgres`,
          port,
          async stop() {
            if (stopped) return;
            stopped = true;
            globalThis.removeEventListener("unload", onUnload);
            await run([`${bin}/pg_ctl`, "-D", data, "-m", "immediate", "-w", "stop"], true);
            await Deno.remove(dir, { recursive: true }).catch(() => {});
          },
        },
      };
    }
    if (attempt === 2) {
      const log = await Deno.readTextFile(`${dir}/server.log`).catch(() => "");
      return await fail("pg_ctl start", start.out + log);
    }
  }
  return await fail("pg_ctl start", "no free port");
}
