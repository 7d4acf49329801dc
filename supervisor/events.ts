/**
 * Where the supervisor's OCSF events go: one JSON object per line on stderr
 * (beside the log lines; an event line is recognisable by its `class_uid`).
 * The event shapes themselves are built by `core/ocsf.ts`.
 *
 * @module
 */
import * as ocsf from "../core/ocsf.ts";
import { VERSION } from "../core/version.ts";

/** Receives each finished event. */
export type EventSink = (event: ocsf.NetworkActivityEvent) => void;

const encoder = new TextEncoder();

/** The default sink: the event as one JSON line on stderr. */
export function stderrEventSink(event: ocsf.NetworkActivityEvent): void {
  try {
    Deno.stderr.writeSync(encoder.encode(JSON.stringify(event) + "\n"));
  } catch {
    // stderr closed: the event has nowhere to go.
  }
}

/** Options of {@link SupervisorEvents}. */
export interface SupervisorEventsOptions {
  /** The sandbox the supervisor serves. */
  sandboxId: string;
  /** The gateway endpoint URL (destination of every event). */
  endpoint: string;
  /** Default {@link stderrEventSink}. */
  sink?: EventSink;
  /** Clock; default `Date.now`. */
  now?: () => number;
}

/** The supervisor's six events, stamped with its sandbox and gateway. */
export class SupervisorEvents {
  readonly #ctx: ocsf.OcsfContext;
  readonly #sink: EventSink;

  /** Creates the emitter. */
  constructor(options: SupervisorEventsOptions) {
    this.#ctx = {
      sandboxId: options.sandboxId,
      gateway: ocsf.endpointOf(options.endpoint),
      productVersion: VERSION,
      now: options.now,
    };
    this.#sink = options.sink ?? stderrEventSink;
  }

  /** The gateway accepted a session. */
  sessionOpened(info: { sessionId: string; heartbeatSecs: number }): void {
    this.#sink(ocsf.sessionOpened(this.#ctx, info));
  }

  /** The session ended because the supervisor is stopping. */
  sessionClosed(info: { sessionId: string; reason: string }): void {
    this.#sink(ocsf.sessionClosed(this.#ctx, info));
  }

  /** An attempt or a live session failed; a retry follows. */
  sessionFailed(
    info: { attempt: number; error: string; retryInMs: number; sessionId?: string },
  ): void {
    this.#sink(ocsf.sessionFailed(this.#ctx, info));
  }

  /** A relay to sshd was opened. */
  relayOpened(info: { channelId: string }): void {
    this.#sink(ocsf.relayOpened(this.#ctx, info));
  }

  /** A relay ended cleanly (or was closed on purpose: `reason`). */
  relayClosed(
    info: { channelId: string; bytesToGateway: number; bytesFromGateway: number; reason?: string },
  ): void {
    this.#sink(ocsf.relayClosed(this.#ctx, info));
  }

  /** A relay could not be opened or broke. */
  relayFailed(info: { channelId: string; error: string }): void {
    this.#sink(ocsf.relayFailed(this.#ctx, info));
  }
}
