/**
 * What every command gets: its parsed invocation, the environment, the
 * config store, output helpers with the right colours, the chosen gateway
 * and its client (both created on first use), and Ctrl-C handling.
 *
 * @module
 */
import { denoEnv, type EnvReader } from "../core/flags.ts";
import type { Invocation } from "./args.ts";
import type { GatewayClient } from "./client.ts";
import { configRoot, ConfigStore, type ResolvedGateway, resolveGateway } from "./config.ts";
import { colorEnabled, createStyle, type Style } from "./output.ts";

/** The process's standard streams (tests may substitute them). */
export interface StdStreams {
  /** Standard input. */
  stdin: { read(p: Uint8Array): Promise<number | null>; isTerminal(): boolean };
  /** Standard output. */
  stdout: { write(p: Uint8Array): Promise<number>; isTerminal(): boolean };
  /** Standard error. */
  stderr: { writeSync(p: Uint8Array): number; isTerminal(): boolean };
}

/** Options of {@link Context}. */
export interface ContextOptions {
  /** The parsed command line. */
  invocation: Invocation;
  /** Environment reader; default `Deno.env.get`. */
  env?: EnvReader;
  /** Streams; default the process's. */
  streams?: StdStreams;
  /** The gateway (tests); default resolved from flags, environment and config. */
  gateway?: ResolvedGateway;
  /** Its client (tests); default a {@link GatewayClient} for the gateway. */
  client?: GatewayClient;
}

const encoder = new TextEncoder();

/** The state a command runs with. */
export class Context {
  /** The parsed command line. */
  readonly invocation: Invocation;
  /** Environment reader. */
  readonly env: EnvReader;
  /** Standard streams. */
  readonly streams: StdStreams;
  /** Colours for stdout. */
  readonly style: Style;
  /** Colours for stderr. */
  readonly errStyle: Style;
  /** Aborted on Ctrl-C (SIGINT). */
  readonly interrupt: AbortSignal;
  readonly #abort = new AbortController();
  #store: ConfigStore | undefined;
  #gateway: Promise<ResolvedGateway> | undefined;
  #client: GatewayClient | undefined;
  #handlesInterrupt = false;

  /** Creates the context of one command run. */
  constructor(options: ContextOptions) {
    this.invocation = options.invocation;
    this.env = options.env ?? denoEnv;
    this.streams = options.streams ?? {
      stdin: Deno.stdin,
      stdout: Deno.stdout,
      stderr: Deno.stderr,
    };
    const noColor = this.env("NO_COLOR");
    const term = this.env("TERM");
    this.style = createStyle(
      colorEnabled({ isTerminal: this.streams.stdout.isTerminal(), noColor, term }),
    );
    this.errStyle = createStyle(
      colorEnabled({ isTerminal: this.streams.stderr.isTerminal(), noColor, term }),
    );
    this.interrupt = this.#abort.signal;
    if (options.gateway) this.#gateway = Promise.resolve(options.gateway);
    this.#client = options.client;
  }

  /** A string option value. */
  str(name: string): string | undefined {
    const v = this.invocation.values[name];
    return typeof v === "string" ? v : undefined;
  }

  /** A number option value (`int`, `duration` in seconds, `size`). */
  num(name: string): number | undefined {
    const v = this.invocation.values[name];
    return typeof v === "number" ? v : undefined;
  }

  /** Whether an option was given on the command line (not by its env twin or default). */
  given(name: string): boolean {
    return this.invocation.from[name] === "argv";
  }

  /** A boolean option value. */
  flag(name: string): boolean {
    return this.invocation.values[name] === true;
  }

  /** A repeatable option's values. */
  list(name: string): string[] {
    const v = this.invocation.values[name];
    return Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : [];
  }

  /** The config store (its root from `--config-dir` (ssh-proxy), else `XDG_CONFIG_HOME` / `HOME`). */
  get store(): ConfigStore {
    this.#store ??= new ConfigStore(this.str("config-dir") ?? configRoot(this.env));
    return this.#store;
  }

  /** The gateway this command talks to. */
  gateway(): Promise<ResolvedGateway> {
    this.#gateway ??= resolveGateway(this.store, {
      // Given on the command line; resolveGateway applies their env twins in its own order.
      endpointFlag: this.given("gateway-endpoint") ? this.str("gateway-endpoint") : undefined,
      gatewayFlag: this.given("gateway") ? this.str("gateway") : undefined,
      env: this.env,
    });
    return this.#gateway;
  }

  /** The gateway's client. */
  async client(): Promise<GatewayClient> {
    if (!this.#client) {
      const gw = await this.gateway();
      // Loaded here, not at start: grpc-js and the descriptors cost ~150 ms, and
      // `ssh-proxy` (every ssh connection) does without them.
      const { GatewayClient } = await import("./client.ts");
      this.#client ??= new GatewayClient({
        endpoint: gw.endpoint,
        ...(gw.tls ? { tls: gw.tls } : {}),
        ...(gw.name ? { name: gw.name } : {}),
      });
    }
    return this.#client;
  }

  /** Writes to stdout (all of it). */
  async out(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    let off = 0;
    while (off < bytes.length) off += await this.streams.stdout.write(bytes.subarray(off));
  }

  /** Writes to stderr (diagnostics, progress). */
  err(text: string): void {
    const bytes = encoder.encode(text);
    let off = 0;
    try {
      while (off < bytes.length) off += this.streams.stderr.writeSync(bytes.subarray(off));
    } catch {
      // stderr closed: nothing left to tell anyone
    }
  }

  /**
   * Declares that the command deals with Ctrl-C itself (through
   * {@link interrupt}); otherwise Ctrl-C ends the process with status 130.
   */
  handleInterrupts(): void {
    this.#handlesInterrupt = true;
  }

  /** Whether the command deals with Ctrl-C itself. */
  get handlesInterrupts(): boolean {
    return this.#handlesInterrupt;
  }

  /** Signals Ctrl-C (called by the SIGINT listener). */
  raiseInterrupt(): void {
    this.#abort.abort(new Error("interrupted"));
  }

  /** Closes the gateway client, if one was made. */
  close(): void {
    this.#client?.close();
  }
}
