/**
 * The project version every role reports (`Health`, driver capabilities,
 * OCSF product version, `--version`).
 *
 * @module
 */

/** Version of openshell-deno. */
export const VERSION = "0.1.0";
