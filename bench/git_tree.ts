/**
 * A baseline checkout for same-run comparisons: folders of an earlier commit extracted with
 * `git archive` into a temporary folder, so a benchmark can import that code beside this
 * checkout's (bench/matmul.ts, bench/real_size.ts, bench/engine.ts).
 */

const ROOT = new URL("../", import.meta.url).pathname;

async function git(args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command("git", {
    args: ["-C", ROOT, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
}

/**
 * Extracts the top-level folders `paths` of git ref `ref` into `into` (an existing folder); those
 * the ref does not have are skipped (older refs lack later members), and it throws, naming the
 * ref, when it has none of them or git fails.
 */
export async function extractTree(ref: string, into: string, paths: string[]): Promise<void> {
  const listed = await git(["ls-tree", "--name-only", ref, "--", ...paths]);
  if (!listed.success) {
    throw new Error(`git ls-tree ${ref}: ${new TextDecoder().decode(listed.stderr).trim()}`);
  }
  const present = new TextDecoder().decode(listed.stdout).split("\n").filter((p) => p !== "");
  if (present.length === 0) throw new Error(`git ref ${ref} has none of ${paths.join(", ")}`);
  const archive = await git(["archive", ref, ...present]);
  if (!archive.success) {
    throw new Error(`git archive ${ref}: ${new TextDecoder().decode(archive.stderr).trim()}`);
  }
  const tarFile = `${into}/tree.tar`;
  await Deno.writeFile(tarFile, archive.stdout);
  const tar = await new Deno.Command("tar", { args: ["-x", "-f", tarFile, "-C", into] }).output();
  await Deno.remove(tarFile);
  if (!tar.success) throw new Error(`tar -x of ${ref}'s ${present.join(", ")} failed`);
}
