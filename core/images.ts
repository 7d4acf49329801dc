/**
 * Guest image names and build inputs, checked the same way by the CLI, the
 * gateway and the VM driver (openshell-deno's image API: `openshell image
 * build|import|list|delete`, `sandbox create --image NAME`).
 *
 * @module
 */

/** The driver's built-in image (what a sandbox without `--image` boots). */
export const DEFAULT_IMAGE_NAME = "default";
/** Image names: lower-case letters, digits, `.`, `_`, `-`; 1-63 characters. */
export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Debian package names (Debian policy §5.6.1). */
export const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{0,99}$/;
/** Extra packages one build may ask for at most. */
export const MAX_BUILD_PACKAGES = 64;
/** Largest setup script, in bytes. */
export const MAX_SCRIPT_BYTES = 64 * 1024;
/** Largest root file system tarball an import accepts. */
export const MAX_IMPORT_BYTES = 16 * 2 ** 30;
/** Largest data chunk of an import stream. */
export const MAX_IMPORT_CHUNK_BYTES = 4 * 2 ** 20;

/** What is wrong with `name` as an image name ("" for the default is allowed when `allowDefault`), or undefined. */
export function imageNameProblem(
  name: string,
  options: { allowDefault?: boolean } = {},
): string | undefined {
  if (name === DEFAULT_IMAGE_NAME && !options.allowDefault) {
    return `"${DEFAULT_IMAGE_NAME}" is the built-in image's name; choose another`;
  }
  if (!IMAGE_NAME.test(name)) {
    return `image names are 1-63 lower-case letters, digits, ".", "_" or "-", starting with a ` +
      `letter or digit: ${JSON.stringify(name.length > 80 ? name.slice(0, 80) + "…" : name)}`;
  }
  return undefined;
}

/** What is wrong with a build's packages and script, or undefined. */
export function buildProblem(packages: readonly string[], script: string): string | undefined {
  if (packages.length > MAX_BUILD_PACKAGES) {
    return `at most ${MAX_BUILD_PACKAGES} extra packages per image (got ${packages.length})`;
  }
  for (const p of packages) {
    if (!PACKAGE_NAME.test(p)) {
      return `not a Debian package name: ${
        JSON.stringify(p.length > 80 ? p.slice(0, 80) + "…" : p)
      }`;
    }
  }
  const bytes = new TextEncoder().encode(script).length;
  if (bytes > MAX_SCRIPT_BYTES) {
    return `the setup script is ${bytes} bytes; at most ${MAX_SCRIPT_BYTES}`;
  }
  if (script.includes("\0")) return "the setup script contains a NUL byte";
  return undefined;
}

/** The content key of an imported tarball: `import-` and 32 hex digits of its SHA-256. */
export function importKey(sha256Hex: string): string {
  if (!/^[0-9a-f]{64}$/.test(sha256Hex)) throw new Error("not a SHA-256 in hex");
  return `import-${sha256Hex.slice(0, 32)}`;
}
