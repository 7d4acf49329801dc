/**
 * The error type of the CLI: a one-line message for the user and the exit
 * status that goes with it.
 *
 * @module
 */

/** A failure the CLI reports as `error: <message>` with `exitCode`. */
export class CliError extends Error {
  /** Process exit status; default 1. */
  readonly exitCode: number;

  /** Creates the error; `message` must be one readable line. */
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

/** Exit status after Ctrl-C (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;
