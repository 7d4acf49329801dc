/**
 * `ExecSandbox`: runs one command in a sandbox through its sshd, with the
 * `ssh2` client speaking directly over the relay stream (no loopback hop),
 * and streams stdout, stderr and the exit code back.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Duplex } from "node:stream";
import ssh2 from "ssh2";
import { errorMessage, type Logger } from "../core/log.ts";
import type { ExecSandboxEvent, ExecSandboxRequest, Wire } from "../core/protocol.ts";
import type { SessionRegistry } from "../core/registry.ts";
import { buildRemoteCommand } from "../core/shell.ts";
import { fingerprintOfBlob } from "../core/ssh_keys.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import { failStream } from "./rpc.ts";
import type { SandboxRecord, Store } from "./store.ts";
import { validateExec } from "./validation.ts";

/** The parts of ssh2's client stream this module uses. */
interface ClientChannel extends Duplex {
  stderr: NodeJS.ReadableStream;
}

/** The parts of ssh2's `Client` this module uses. */
interface SshClient {
  on(event: "ready" | "close", listener: () => void): SshClient;
  on(event: "error", listener: (err: Error & { level?: string }) => void): SshClient;
  connect(config: Record<string, unknown>): void;
  exec(
    command: string,
    options: { pty: false | { term: string; rows: number; cols: number } },
    callback: (err: Error | undefined, channel: ClientChannel) => void,
  ): void;
  end(): void;
}

const { Client } = ssh2 as unknown as { Client: new () => SshClient };

/** How long exec waits for a supervisor session. */
export const EXEC_SESSION_WAIT_MS = 15_000;
/** Exit code reported when `timeout_seconds` expires (as `timeout(1)` does). */
export const EXEC_TIMEOUT_EXIT_CODE = 124;
/** The user commands run as. */
export const SANDBOX_USER = "sandbox";

type ExecCall = grpc.ServerWritableStream<ExecSandboxRequest, Wire<ExecSandboxEvent>>;

/** Options of {@link ExecService}. */
export interface ExecServiceOptions {
  store: Store;
  registry: SessionRegistry<Duplex>;
  log: Logger;
}

/** Exit code for an SSH exit status: the code, or 128+n for a signal, 1 when unknown. */
export function exitCodeOf(code: number | null | undefined, signal?: string | null): number {
  if (typeof code === "number") return code;
  const signals: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, TERM: 15, PIPE: 13 };
  if (signal) return 128 + (signals[signal.replace(/^SIG/, "")] ?? 0);
  return 1;
}

/**
 * The sandbox's pinned SSH host key fingerprint; FAILED_PRECONDITION when
 * none is known (exec and SSH never accept whatever key a relay presents).
 */
export function requirePinnedHostKey(record: SandboxRecord): string {
  const fp = record.secrets.hostKeyFingerprint;
  if (!fp) {
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `the SSH host key of sandbox ${record.sandbox.name} is not known yet: its supervisor has ` +
        "not reported one (run a supervisor that sends its host key fingerprint)",
    );
  }
  return fp;
}

/** The `ExecSandbox` handler. */
export class ExecService {
  readonly #o: ExecServiceOptions;

  /** Creates the service. */
  constructor(options: ExecServiceOptions) {
    this.#o = options;
  }

  /** grpc-js server-streaming handler. */
  execSandbox = (call: ExecCall): void => {
    this.#run(call).catch((err) => failStream(call, err, this.#o.log));
  };

  async #run(call: ExecCall): Promise<void> {
    const req = call.request;
    validateExec(req);
    const record = await this.#o.store.getSandbox(req.sandbox_id);
    if (!record) {
      throw new StatusError(Code.NOT_FOUND, `sandbox ${truncateForEcho(req.sandbox_id)} not found`);
    }
    if (record.sandbox.phase !== "SANDBOX_PHASE_READY") {
      throw new StatusError(Code.FAILED_PRECONDITION, "sandbox is not ready");
    }
    const hostKeyFingerprint = requirePinnedHostKey(record);
    const cancelled = new AbortController();
    call.on("cancelled", () => cancelled.abort());

    let relay: Duplex;
    try {
      const pending = await this.#o.registry.openRelay(req.sandbox_id, {
        sessionWaitMs: EXEC_SESSION_WAIT_MS,
        signal: cancelled.signal,
      });
      relay = await pending.stream;
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.CANCELLED) return;
      if (
        err instanceof StatusError &&
        (err.code === Code.DEADLINE_EXCEEDED || err.code === Code.RESOURCE_EXHAUSTED)
      ) throw err;
      throw new StatusError(Code.UNAVAILABLE, `supervisor relay failed: ${errorMessage(err)}`);
    }
    const command = buildRemoteCommand({
      command: req.command,
      workdir: req.workdir || undefined,
      environment: req.environment,
    });
    await runOverSsh(call, relay, {
      command,
      tty: req.tty,
      stdin: req.stdin,
      timeoutSeconds: req.timeout_seconds,
      hostKeyFingerprint,
      signal: cancelled.signal,
    });
  }
}

/** What {@link runOverSsh} runs. */
export interface SshRunOptions {
  command: string;
  tty: boolean;
  stdin: Uint8Array;
  timeoutSeconds: number;
  /** The host key the sshd must present. */
  hostKeyFingerprint: string;
  signal: AbortSignal;
}

/** Runs `command` over an SSH connection on `sock` and streams events to `call`. */
export function runOverSsh(call: ExecCall, sock: Duplex, options: SshRunOptions): Promise<void> {
  return new Promise<void>((resolve) => {
    const client = new Client();
    let finished = false;
    let exitCode: number | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;

    const finish = (result: { exit?: number; error?: StatusError }) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      options.signal.removeEventListener("abort", onAbort);
      if (result.error) {
        failStream(call, result.error);
      } else if (!call.writableEnded && !call.destroyed) {
        call.write({ exit: { exit_code: result.exit ?? 1 } });
        call.end();
      }
      client.end();
      sock.destroy();
      resolve();
    };
    const onAbort = () => finish({ exit: 130 });
    options.signal.addEventListener("abort", onAbort, { once: true });
    if (options.timeoutSeconds > 0) {
      timer = setTimeout(
        () => finish({ exit: EXEC_TIMEOUT_EXIT_CODE }),
        options.timeoutSeconds * 1000,
      );
    }

    const forward = (
      channel: ClientChannel,
      stream: NodeJS.ReadableStream,
      kind: "stdout" | "stderr",
    ) => {
      stream.on("data", (data: Uint8Array) => {
        if (finished) return;
        const ok = call.write(kind === "stdout" ? { stdout: { data } } : { stderr: { data } });
        if (!ok) {
          channel.pause();
          call.once("drain", () => channel.resume());
        }
      });
    };

    client.on("ready", () => {
      client.exec(
        options.command,
        { pty: options.tty ? { term: "xterm-256color", rows: 24, cols: 80 } : false },
        (err: Error | undefined, channel: ClientChannel) => {
          if (err) {
            finish({ error: new StatusError(Code.INTERNAL, `exec failed: ${err.message}`) });
            return;
          }
          forward(channel, channel, "stdout");
          forward(channel, channel.stderr, "stderr");
          channel.on("exit", (code: number | null, signal?: string) => {
            exitCode = exitCodeOf(code, signal);
          });
          channel.on("close", () => finish({ exit: exitCode ?? 1 }));
          if (options.stdin.length > 0) channel.write(options.stdin);
          channel.end();
        },
      );
    });
    client.on("error", (err: Error & { level?: string }) => {
      const code = err.level === "client-authentication"
        ? Code.PERMISSION_DENIED
        : Code.UNAVAILABLE;
      finish({ error: new StatusError(code, `ssh to sandbox failed: ${err.message}`) });
    });
    client.on("close", () => {
      if (!finished) finish({ exit: exitCode ?? 1 });
    });
    client.connect({
      sock: sock as never,
      username: SANDBOX_USER,
      authHandler: ["none"] as never,
      readyTimeout: 20_000,
      keepaliveInterval: 0,
      hostVerifier: (key: Uint8Array) => fingerprintOfBlob(key) === options.hostKeyFingerprint,
    });
  });
}
